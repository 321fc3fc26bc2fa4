"""Results kept under their request id, for look-up after the fact."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from nats.js.errors import KeyNotFoundError

from runtime.errors import PayloadTooLarge, ShoalError
from runtime.wire import codec, protocol

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js.kv import KeyValue

    from runtime.wire.codec import Encoding


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
        """msgpack, numpy arrays included; a value msgpack cannot carry is stored as the
        typed error saying so, so that every request id still has its outcome."""
        try:
            return codec.pack(self._fields())
        except ShoalError as e:
            e.request_id = self.request_id
            failed = replace(self, ok=False, value=e.to_wire())
            return codec.pack(failed._fields())

    def _fields(self) -> dict[str, Any]:
        # What dataclasses.asdict gives, without its deep copy of the value: the value is
        # only read, and a copy costs as much as the encoding itself.
        return {
            "request_id": self.request_id,
            "function": self.function,
            "ok": self.ok,
            "value": self.value,
            "encoding": self.encoding,
            "finished_at": self.finished_at,
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> Result:
        d = codec.unpack(data)
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

    def _encode(self, result: Result) -> bytes:
        data = result.to_bytes()
        if len(data) + 1024 > self._nc.max_payload:
            err = PayloadTooLarge(
                f"the result is {len(data)} bytes, too large to store", request_id=result.request_id
            )
            data = replace(result, ok=False, value=err.to_wire()).to_bytes()
        return data

    async def put(self, result: Result) -> None:
        """Store and wait for JetStream's acknowledgement."""
        await self._kv.put(protocol.result_key(result.request_id), self._encode(result))

    async def put_nowait(self, result: Result) -> None:
        """Store without waiting for the acknowledgement (request/reply path, answer sent)."""
        subject = f"$KV.{protocol.RESULTS_BUCKET}.{protocol.result_key(result.request_id)}"
        await self._nc.publish(subject, self._encode(result))

    async def get(self, request_id: str) -> Result | None:
        try:
            entry = await self._kv.get(protocol.result_key(request_id))
        except KeyNotFoundError:
            return None
        return Result.from_bytes(entry.value) if entry.value else None
