"""The data plane of partitioned models: intermediates between partitions, worker to worker.

Every worker of a partitioned model listens on one inbox, ``shoal.px.<function>.<worker>``.
A message names its run, step, source and destination partition in headers; the receiving
worker files it in a :class:`Mailbox` per (run, partition) until the partition asks for it,
so a message that arrives before its partition started, or for a later step, just waits.

A payload travels inline (msgpack, zlib when ``maybe_compress`` says
it pays, split into chunks at the server's max payload) or as an object in the object store
whose reference travels inline; the receiver deletes the object once it has read it.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgpack
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from runtime.errors import IntermediateStoreError, ShoalError
from runtime.partition.costmodel import DEFAULT_OBJECT, CostModel, Link, fit, maybe_compress
from runtime.wire import codec

log = logging.getLogger("shoal.dataplane")

RESULT_STEP = -1  # a shard's answer to its coordinator

# Headers.
KIND = "Shoal-Px"  # data | none | ref | error | abort
RUN = "Shoal-Px-Run"
STEP = "Shoal-Px-Step"
SRC = "Shoal-Px-Src"
DST = "Shoal-Px-Dst"
CHUNK = "Shoal-Px-Chunk"  # "<i>/<n>" on a payload split across messages
ZLIB = "Shoal-Px-Zlib"  # "1" when the payload is zlib-compressed

HEADROOM = 4096  # bytes left for headers within the server's max payload
PENDING_BYTES = 1 << 30  # an inbox may hold this much before NATS calls it slow
OBJECT_RETRY_AFTER = 30.0  # seconds "auto" avoids an object store that just failed
STALE_RUN = 600.0  # seconds after which an unclaimed mailbox is dropped


def inbox_subject(function: str, worker_id: str) -> str:
    return f"shoal.px.{function}.{worker_id}"


Key = tuple[int, int]  # (step, source partition)


@dataclass
class Delivery:
    kind: str  # data | none | ref | error
    data: bytes
    compressed: bool


@dataclass
class Mailbox:
    """What has arrived for one partition of one run, by (step, source)."""

    ready: dict[Key, Delivery] = field(default_factory=dict)
    waiting: dict[Key, anyio.Event] = field(default_factory=dict)
    error: ShoalError | None = None
    touched: float = field(default_factory=time.monotonic)

    def put(self, key: Key, delivery: Delivery) -> None:
        if key in self.ready:
            log.warning("duplicate intermediate for step %s from %s ignored", *key)
            return
        self.ready[key] = delivery
        event = self.waiting.pop(key, None)
        if event is not None:
            event.set()

    def fail(self, error: ShoalError) -> None:
        if self.error is None:
            self.error = error
        for event in self.waiting.values():
            event.set()
        self.waiting.clear()

    async def take(self, key: Key) -> Delivery:
        while True:
            delivery = self.ready.pop(key, None)
            if delivery is not None:
                return delivery
            if self.error is not None:
                raise self.error
            event = self.waiting.setdefault(key, anyio.Event())
            await event.wait()

    async def settle(self, key: Key) -> None:
        """Wait until ``key`` has arrived, even in a failed box: a stopping run's partitions
        still answer (with an error) once they have stopped."""
        while key not in self.ready:
            await self.waiting.setdefault(key, anyio.Event()).wait()


@dataclass
class Sent:
    """What one send put on the wire (for ``shard.sent_bytes`` and the money model)."""

    nbytes: int = 0
    messages: int = 0
    objects: int = 0


class DataPlane:
    """One worker's inbox and outbox for intermediates."""

    def __init__(
        self,
        nc: NATS,
        function: str,
        worker_id: str,
        store: Any | None = None,  # storage.AsyncObjectStore, when an object store is set up
        *,
        compress: bool = True,
    ) -> None:
        self.nc = nc
        self.function = function
        self.worker_id = worker_id
        self.store = store
        self.compress = compress
        self.cost = CostModel(object=DEFAULT_OBJECT if store is not None else None)
        self.inbox = inbox_subject(function, worker_id)
        self._boxes: dict[tuple[str, int], Mailbox] = {}
        self._aborted: dict[str, tuple[ShoalError, float]] = {}
        # Payloads arriving in chunks, by (run, dst, step, src): the parts so far, and when
        # the first came (a sender that died mid-payload leaves them to garbage collection).
        self._chunks: dict[tuple[str, int, int, int], tuple[list[bytes], float]] = {}
        self._object_failed_at = -OBJECT_RETRY_AFTER
        self._sub: Any = None
        self.cost_updated = anyio.Event()  # set (and renewed) each time the model changes

    def set_cost(self, model: CostModel) -> None:
        self.cost = model
        self.cost_updated.set()
        self.cost_updated = anyio.Event()

    # -- receiving ------------------------------------------------------------------------

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(
            self.inbox, cb=self._on_message, pending_bytes_limit=PENDING_BYTES
        )

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    def mailbox(self, run: str, index: int) -> Mailbox:
        box = self._boxes.get((run, index))
        if box is None:
            box = self._boxes[(run, index)] = Mailbox()
            aborted = self._aborted.get(run)
            if aborted is not None:
                box.fail(aborted[0])
        box.touched = time.monotonic()
        return box

    def drop(self, run: str, index: int) -> None:
        self._boxes.pop((run, index), None)

    def fail_run(self, run: str, error: ShoalError) -> None:
        """Wake everything waiting in ``run`` with ``error``; later arrivals fail at once."""
        self._aborted[run] = (error, time.monotonic())
        for key in [k for k in self._chunks if k[0] == run]:
            del self._chunks[key]  # the rest of those payloads is not coming
        for (r, _), box in list(self._boxes.items()):
            if r == run:
                box.fail(error)

    def collect_garbage(self) -> None:
        """Forget mailboxes nobody claimed and aborted runs, after ``STALE_RUN`` seconds."""
        now = time.monotonic()
        for key, box in list(self._boxes.items()):
            if now - box.touched > STALE_RUN:
                del self._boxes[key]
        for run, (_, at) in list(self._aborted.items()):
            if now - at > STALE_RUN:
                del self._aborted[run]
        for part_key, (_, at) in list(self._chunks.items()):
            if now - at > STALE_RUN:
                del self._chunks[part_key]

    async def _on_message(self, msg: Msg) -> None:
        h = msg.headers or {}
        try:
            kind, run = h[KIND], h[RUN]
            if kind == "abort":
                self.fail_run(run, ShoalError.from_wire(_unpack(msg.data)))
                return
            step, src, dst = int(h[STEP]), int(h[SRC]), int(h[DST])
        except (KeyError, ValueError) as e:
            log.warning("malformed data-plane message on %s dropped: %r", msg.subject, e)
            return
        data = msg.data
        chunk = h.get(CHUNK)
        if chunk:
            i, n = (int(x) for x in chunk.split("/"))
            key = (run, dst, step, src)
            parts = self._chunks.setdefault(key, ([], time.monotonic()))[0]
            if i != len(parts):  # NATS keeps one publisher's order; a gap is a lost chunk
                log.warning("chunk %s of run %s step %s arrived out of order", chunk, run, step)
                self._chunks.pop(key, None)
                return
            parts.append(data)
            if len(parts) < n:
                return
            data = b"".join(self._chunks.pop(key)[0])
        self.mailbox(run, dst).put((step, src), Delivery(kind, data, h.get(ZLIB) == "1"))

    async def receive(self, box: Mailbox, step: int, source: int) -> Any:
        """The value ``source`` sent for ``step`` (None for "nothing for you"), once it is here."""
        return await self.open(await box.take((step, source)))

    async def open(self, d: Delivery) -> Any:
        """The value a delivery carries; raises the error it reports or a failed object read."""
        if d.kind == "none":
            return None
        if d.kind == "error":
            raise ShoalError.from_wire(_unpack(d.data))
        data = d.data
        if d.kind == "ref":
            data = await self._fetch(_unpack(d.data))
        if d.compressed:
            data = zlib.decompress(data)
        return codec.decode(data, codec.CONTENT_TYPES["msgpack"])[0]

    async def _fetch(self, wire: dict[str, Any]) -> bytes:
        from storage import ObjectRef, StorageError

        if self.store is None:
            raise IntermediateStoreError(
                "an intermediate arrived as an object, but this worker has no object store: "
                "set SHOAL_S3_ENDPOINT (and credentials) on every worker"
            )
        ref = ObjectRef.from_wire(wire)
        try:
            data = await self.store.get_bytes(ref)
        except StorageError as e:
            raise IntermediateStoreError(f"reading intermediate {ref.key} failed: {e}") from e
        try:
            await self.store.delete(ref.key)  # consumed: nothing stays behind a good run
        except StorageError as e:
            log.warning("intermediate %s not deleted (%s); the run's sweep retries", ref.key, e)
        return bytes(data)

    # -- sending --------------------------------------------------------------------------

    async def send(
        self,
        worker: str,
        run: str,
        step: int,
        src: int,
        dst: int,
        value: Any,
        channel: str = "auto",
    ) -> Sent:
        """Send ``value`` (None: "nothing for you") to partition ``dst`` on ``worker``."""
        headers = _headers("none" if value is None else "data", run, step, src, dst)
        subject = inbox_subject(self.function, worker)
        if value is None:
            await self.nc.publish(subject, b"", headers=headers)
            return Sent(0, 1, 0)
        body = codec.encode(value, "msgpack")
        chosen = channel if channel != "auto" else self._choose(len(body))
        if chosen == "object" and self.store is None:
            raise IntermediateStoreError(
                "channel='object' needs an object store: set SHOAL_S3_ENDPOINT (and "
                "credentials) for the workers, or deploy with channel='auto' or 'inline'"
            )
        if self.compress:
            link = self.cost.object if chosen == "object" and self.cost.object else self.cost.inline
            body, compressed = maybe_compress(body, link)
            if compressed:
                headers[ZLIB] = "1"
        if chosen == "object":
            try:
                key = self.object_prefix(run) + f"{_step_name(step)}/{dst}_{src}"
                ref = await self.store.put_bytes(key, body)  # type: ignore[union-attr]
            except ShoalError:
                raise
            except Exception as e:
                if channel == "object":
                    raise IntermediateStoreError(
                        f"writing an intermediate to the object store failed: {e}"
                    ) from e
                # "auto" keeps the run going inline, and avoids the store for a while.
                log.warning("object store failed (%s); sending inline instead", e)
                self._object_failed_at = time.monotonic()
            else:
                headers[KIND] = "ref"
                await self.nc.publish(subject, _pack(ref.to_wire()), headers=headers)
                return Sent(len(body), 1, 1)
        return Sent(len(body), await self._publish_chunks(subject, body, headers), 0)

    async def send_error(
        self, worker: str, run: str, src: int, dst: int, error: ShoalError
    ) -> None:
        headers = _headers("error", run, RESULT_STEP, src, dst)
        await self.nc.publish(
            inbox_subject(self.function, worker), _pack(error.to_wire()), headers=headers
        )

    async def abort(self, workers: list[str], run: str, error: ShoalError) -> None:
        """Tell every worker in ``run`` to stop waiting: the run failed with ``error``."""
        body = _pack(error.to_wire())
        for w in set(workers):
            await self.nc.publish(
                inbox_subject(self.function, w), body, headers={KIND: "abort", RUN: run}
            )

    def object_prefix(self, run: str) -> str:
        assert self.store is not None
        return str(self.store.store.intermediate_key(self.function, run)) + "/"

    async def sweep(self, run: str) -> int:
        """Delete whatever ``run`` left in the object store (a failed run's intermediates)."""
        if self.store is None:
            return 0
        try:
            swept = int(await self.store.delete_prefix(self.object_prefix(run)))
            if swept:
                log.info("deleted %d intermediates left by run %s", swept, run)
            return swept
        except Exception as e:
            log.warning("sweeping intermediates of run %s failed: %s", run, e)
            return 0

    def _choose(self, nbytes: int) -> str:
        if time.monotonic() - self._object_failed_at < OBJECT_RETRY_AFTER:
            return "inline"
        return self.cost.choose(nbytes)

    async def _publish_chunks(self, subject: str, body: bytes, headers: dict[str, str]) -> int:
        limit = max(1024, self.nc.max_payload - HEADROOM)
        if len(body) <= limit:
            await self.nc.publish(subject, body, headers=headers)
            return 1
        view = memoryview(body)
        n = -(-len(body) // limit)
        for i in range(n):
            await self.nc.publish(
                subject,
                bytes(view[i * limit : (i + 1) * limit]),
                headers={**headers, CHUNK: f"{i}/{n}"},
            )
        return n

    # -- calibration ----------------------------------------------------------------------

    async def calibrate(self, *, repeats: int = 3) -> CostModel:
        """Measure both channels on this cluster and fit the cost model to what was seen."""
        inline = await self._measure_inline(repeats)
        obj: Link | None = None
        if self.store is not None:
            try:
                obj = await self._measure_object(repeats)
            except Exception as e:
                log.warning("object store unusable for intermediates (%s); inline only", e)
                self._object_failed_at = time.monotonic()
                obj = self.cost.object
        self.set_cost(CostModel(inline=inline, object=obj, calibrated=True))
        log.info("data plane calibrated: %s", self.cost.describe())
        return self.cost

    async def _measure_inline(self, repeats: int) -> Link:
        run = "cal-" + uuid.uuid4().hex[:12]
        box = self.mailbox(run, 0)
        samples: list[tuple[int, float]] = []
        try:
            step = 0
            for size in (1024, 64 * 1024, 1 << 20, 4 << 20):
                body = _noise(size)
                for _ in range(repeats):
                    start = time.perf_counter()
                    await self._publish_chunks(self.inbox, body, _headers("data", run, step, 0, 0))
                    await box.take((step, 0))
                    samples.append((size, time.perf_counter() - start))
                    step += 1
        finally:
            self.drop(run, 0)
        return fit(samples)

    async def _measure_object(self, repeats: int) -> Link:
        assert self.store is not None
        samples: list[tuple[int, float]] = []
        run = "cal-" + uuid.uuid4().hex[:12]
        prefix = self.object_prefix(run)
        try:
            for size in (1024, 1 << 20, 4 << 20):
                body = _noise(size)
                for i in range(repeats):
                    key = f"{prefix}{size}_{i}"
                    start = time.perf_counter()
                    ref = await self.store.put_bytes(key, body)
                    await self.store.get_bytes(ref)
                    samples.append((size, time.perf_counter() - start))
                    await self.store.delete(key)
        finally:
            with anyio.CancelScope(shield=True):
                await self.sweep(run)
        return fit(samples)


def _headers(kind: str, run: str, step: int, src: int, dst: int) -> dict[str, str]:
    return {KIND: kind, RUN: run, STEP: str(step), SRC: str(src), DST: str(dst)}


def _step_name(step: int) -> str:
    return "result" if step == RESULT_STEP else str(step)


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


def _noise(size: int) -> bytes:
    # Incompressible, so calibration measures the wire and not zlib.
    return os.urandom(size)


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


__all__ = [
    "RESULT_STEP",
    "DataPlane",
    "Delivery",
    "Mailbox",
    "Sent",
    "inbox_subject",
    "new_run_id",
]
