"""How one intermediate travels from worker to worker: the data plane's wire format.

Every message goes to the receiving worker's inbox, ``shoal.px.<function>.<worker>``
(:func:`inbox_subject`), and names its run, step, source and destination partition in
headers (:func:`headers`). The payload travels one of two ways:

- inline: msgpack (zlib when the cost model says it pays: header ``Shoal-Px-Zlib``), split
  into chunks at the server's max payload (:func:`publish_inline`; header ``Shoal-Px-Chunk``
  ``<i>/<n>``, put together again by :class:`Chunks`);
- object: the payload is written to the object store and its reference travels inline (kind
  ``ref``); the receiver reads it and deletes it (:func:`fetch_object`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from runtime.errors import IntermediateStoreError
from runtime.wire import tracing

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

log = logging.getLogger("shoal.dataplane")

# Headers.
KIND = "Shoal-Px"  # data | none | ref | error | abort
RUN = "Shoal-Px-Run"
STEP = "Shoal-Px-Step"
SRC = "Shoal-Px-Src"
DST = "Shoal-Px-Dst"
CHUNK = "Shoal-Px-Chunk"  # "<i>/<n>" on a payload split across messages
ZLIB = "Shoal-Px-Zlib"  # "1" when the payload is zlib-compressed

HEADROOM = 4096  # bytes left for headers within the server's max payload


def inbox_subject(function: str, worker_id: str) -> str:
    return f"shoal.px.{function}.{worker_id}"


def headers(kind: str, run: str, step: int, src: int, dst: int) -> dict[str, str]:
    """A message's headers; with the sending partition's ``traceparent`` when it has one."""
    return tracing.inject({KIND: kind, RUN: run, STEP: str(step), SRC: str(src), DST: str(dst)})


@dataclass
class Sent:
    """What one send put on the wire (for ``shard.sent_bytes`` and the money model)."""

    nbytes: int = 0
    messages: int = 0
    objects: int = 0


async def publish_inline(nc: NATS, subject: str, body: bytes, hdrs: dict[str, str]) -> int:
    """Publish ``body`` in as many messages as the server's max payload needs; returns how
    many."""
    limit = max(1024, nc.max_payload - HEADROOM)
    if len(body) <= limit:
        await nc.publish(subject, body, headers=hdrs)
        return 1
    view = memoryview(body)
    n = -(-len(body) // limit)
    for i in range(n):
        await nc.publish(
            subject,
            bytes(view[i * limit : (i + 1) * limit]),
            headers={**hdrs, CHUNK: f"{i}/{n}"},
        )
    return n


ChunkKey = tuple[str, int, int, int]  # (run, dst, step, src)


class Chunks:
    """Payloads arriving in chunks: the parts so far, and when the first came (a sender that
    died mid-payload leaves them to :meth:`collect_garbage`)."""

    def __init__(self) -> None:
        self._parts: dict[ChunkKey, tuple[list[bytes], float]] = {}

    def add(self, key: ChunkKey, chunk: str, data: bytes) -> bytes | None:
        """File chunk ``"<i>/<n>"`` of a payload; the whole payload once its last is in."""
        i, n = (int(x) for x in chunk.split("/"))
        parts = self._parts.setdefault(key, ([], time.monotonic()))[0]
        if i != len(parts):  # NATS keeps one publisher's order; a gap is a lost chunk
            run, _, step, _ = key
            log.warning("chunk %s of run %s step %s arrived out of order", chunk, run, step)
            self._parts.pop(key, None)
            return None
        parts.append(data)
        if len(parts) < n:
            return None
        return b"".join(self._parts.pop(key)[0])

    def drop_run(self, run: str) -> None:
        """Forget ``run``'s partial payloads: the rest of them is not coming."""
        for key in [k for k in self._parts if k[0] == run]:
            del self._parts[key]

    def collect_garbage(self, older_than: float) -> None:
        cutoff = time.monotonic() - older_than
        for key, (_, at) in list(self._parts.items()):
            if at < cutoff:
                del self._parts[key]


async def fetch_object(store: Any | None, wire: dict[str, Any]) -> bytes:
    """Read the intermediate a reference names from ``store``, then delete it there."""
    from storage import ObjectRef, StorageError

    if store is None:
        raise IntermediateStoreError(
            "an intermediate arrived as an object, but this worker has no object store: "
            "set SHOAL_S3_ENDPOINT (and credentials) on every worker"
        )
    ref = ObjectRef.from_wire(wire)
    try:
        data = await store.get_bytes(ref)
    except StorageError as e:
        raise IntermediateStoreError(f"reading intermediate {ref.key} failed: {e}") from e
    try:
        await store.delete(ref.key)  # consumed: nothing stays behind a good run
    except StorageError as e:
        log.warning("intermediate %s not deleted (%s); the run's sweep retries", ref.key, e)
    return bytes(data)


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)
