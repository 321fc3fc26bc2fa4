"""Results kept under their request id, for look-up after the fact."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import msgpack
from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from . import protocol
from .codec import Encoding
from .errors import ShoalError


@dataclass(frozen=True)
class Result:
    """One invocation's outcome: ``value`` is the function's result, or the error's wire form."""

    request_id: str
    function: str
    ok: bool
    value: Any
    encoding: Encoding
    finished_at: float

    def to_bytes(self) -> bytes:
        return msgpack.packb(asdict(self), use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def from_bytes(cls, data: bytes) -> Result:
        d = msgpack.unpackb(data, raw=False, strict_map_key=False)
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})

    @property
    def error(self) -> ShoalError | None:
        return None if self.ok else ShoalError.from_wire(self.value)

    def unwrap(self) -> Any:
        """The function's result; raises the typed error if the invocation failed."""
        if not self.ok:
            raise ShoalError.from_wire(self.value)
        return self.value


def make_result(request_id: str, function: str, ok: bool, value: Any, enc: Encoding) -> Result:
    return Result(request_id, function, ok, value, enc, time.time())


class ResultStore:
    """The results bucket, addressed by request id."""

    def __init__(self, nc: NATS, bucket: KeyValue) -> None:
        self._nc = nc
        self._kv = bucket

    async def put(self, result: Result) -> None:
        """Store and wait for JetStream's acknowledgement."""
        await self._kv.put(protocol.result_key(result.request_id), result.to_bytes())

    async def put_nowait(self, result: Result) -> None:
        """Store without waiting for the acknowledgement (request/reply path, answer sent)."""
        subject = f"$KV.{protocol.RESULTS_BUCKET}.{protocol.result_key(result.request_id)}"
        await self._nc.publish(subject, result.to_bytes())

    async def get(self, request_id: str) -> Result | None:
        try:
            entry = await self._kv.get(protocol.result_key(request_id))
        except KeyNotFoundError:
            return None
        return Result.from_bytes(entry.value) if entry.value else None
