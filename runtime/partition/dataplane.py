"""The data plane of partitioned models: intermediates between partitions, worker to worker.

Every worker of a partitioned model listens on one inbox; the receiving worker files each
message in the :class:`~runtime.partition.mailbox.Mailbox` of its (run, partition) until the
partition asks for it, so a message that arrives before its partition started, or for a later
step, just waits. How a payload travels, inline or through the object store, is
:mod:`runtime.partition.channels`; which way pays, the cost model
(:mod:`runtime.partition.costmodel`), measured by :mod:`runtime.partition.calibration`: the
model of the pair of hosts a message goes between, once measured, else the cluster's.
"""

from __future__ import annotations

import logging
import time
import uuid
import zlib
from typing import TYPE_CHECKING, Any

import anyio

from runtime.errors import IntermediateStoreError, ShoalError
from runtime.partition.channels import (
    CHUNK,
    DST,
    KIND,
    RUN,
    SRC,
    STEP,
    ZLIB,
    Chunks,
    Sent,
    fetch_object,
    headers,
    inbox_subject,
    pack,
    publish_inline,
    unpack,
)
from runtime.partition.costmodel import DEFAULT_OBJECT, CostModel, Pair, between, maybe_compress
from runtime.partition.mailbox import Delivery, Mailbox
from runtime.wire import codec

if TYPE_CHECKING:
    from collections.abc import Callable

    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

log = logging.getLogger("shoal.dataplane")

RESULT_STEP = -1  # a shard's answer to its coordinator

PENDING_BYTES = 1 << 30  # an inbox may hold this much before NATS calls it slow
OBJECT_RETRY_AFTER = 30.0  # seconds "auto" avoids an object store that just failed
STALE_RUN = 600.0  # seconds after which an unclaimed mailbox is dropped


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
        self.pair_costs: dict[Pair, CostModel] = {}  # measured per (from host, to host)
        self.pair_updated: dict[Pair, float] = {}  # time.monotonic() each pair's came
        # The host a worker runs on (None: unknown); set to its Peers' view by the worker.
        self.host_of: Callable[[str], str | None] = lambda worker: None
        self.inbox = inbox_subject(function, worker_id)
        self._boxes: dict[tuple[str, int], Mailbox] = {}
        self._aborted: dict[str, tuple[ShoalError, float]] = {}
        self._chunks = Chunks()  # payloads arriving in chunks
        self._object_failed_at = -OBJECT_RETRY_AFTER
        self._sub: Any = None
        self.sent_bytes = {"inline": 0, "object": 0}  # payload bytes sent, for metrics
        self.cost_updated = anyio.Event()  # set (and renewed) each time the model changes

    def set_cost(self, model: CostModel, pair: Pair | None = None) -> None:
        """Use ``model``: the cluster-wide one, or the one for ``pair`` of hosts."""
        if pair is None:
            self.cost = model
        else:
            self.pair_costs[pair] = model
            self.pair_updated[pair] = time.monotonic()
        self.cost_updated.set()
        self.cost_updated = anyio.Event()

    def cost_to(self, worker: str) -> CostModel:
        """The model for messages from this worker to ``worker``: their hosts' pair's, when
        measured, else the cluster-wide one."""
        return between(
            self.cost, self.pair_costs, self.host_of(self.worker_id), self.host_of(worker)
        )

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
        self._chunks.drop_run(run)
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
        self._chunks.collect_garbage(STALE_RUN)

    async def _on_message(self, msg: Msg) -> None:
        h = msg.headers or {}
        try:
            kind, run = h[KIND], h[RUN]
            if kind == "abort":
                self.fail_run(run, ShoalError.from_wire(unpack(msg.data)))
                return
            step, src, dst = int(h[STEP]), int(h[SRC]), int(h[DST])
        except (KeyError, ValueError) as e:
            log.warning("malformed data-plane message on %s dropped: %r", msg.subject, e)
            return
        data = msg.data
        chunk = h.get(CHUNK)
        if chunk:
            whole = self._chunks.add((run, dst, step, src), chunk, data)
            if whole is None:
                return  # more to come (or a lost chunk, and the payload with it)
            data = whole
        self.mailbox(run, dst).put((step, src), Delivery(kind, data, h.get(ZLIB) == "1"))

    async def receive(self, box: Mailbox, step: int, source: int) -> Any:
        """The value ``source`` sent for ``step`` (None for "nothing for you"), once it is here."""
        return await self.open(await box.take((step, source)))

    async def open(self, d: Delivery) -> Any:
        """The value a delivery carries; raises the error it reports or a failed object read."""
        if d.kind == "none":
            return None
        if d.kind == "error":
            raise ShoalError.from_wire(unpack(d.data))
        data = d.data
        if d.kind == "ref":
            data = await fetch_object(self.store, unpack(d.data))
        if d.compressed:
            data = zlib.decompress(data)
        return codec.decode(data, codec.CONTENT_TYPES["msgpack"])[0]

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
        hdrs = headers("none" if value is None else "data", run, step, src, dst)
        subject = inbox_subject(self.function, worker)
        if value is None:
            await self.nc.publish(subject, b"", headers=hdrs)
            return Sent(0, 1, 0)
        body = codec.encode(value, "msgpack")
        cost = self.cost_to(worker)
        chosen = channel if channel != "auto" else self._choose(cost, len(body))
        if chosen == "object" and self.store is None:
            raise IntermediateStoreError(
                "channel='object' needs an object store: set SHOAL_S3_ENDPOINT (and "
                "credentials) for the workers, or deploy with channel='auto' or 'inline'"
            )
        if self.compress:
            link = cost.object if chosen == "object" and cost.object else cost.inline
            body, compressed = maybe_compress(body, link)
            if compressed:
                hdrs[ZLIB] = "1"
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
                self.avoid_object_store()
            else:
                hdrs[KIND] = "ref"
                await self.nc.publish(subject, pack(ref.to_wire()), headers=hdrs)
                self.sent_bytes["object"] += len(body)
                return Sent(len(body), 1, 1)
        sent = Sent(len(body), await publish_inline(self.nc, subject, body, hdrs), 0)
        self.sent_bytes["inline"] += len(body)
        return sent

    async def send_error(
        self, worker: str, run: str, src: int, dst: int, error: ShoalError
    ) -> None:
        await self.nc.publish(
            inbox_subject(self.function, worker),
            pack(error.to_wire()),
            headers=headers("error", run, RESULT_STEP, src, dst),
        )

    async def abort(self, workers: list[str], run: str, error: ShoalError) -> None:
        """Tell every worker in ``run`` to stop waiting: the run failed with ``error``."""
        body = pack(error.to_wire())
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

    def _choose(self, cost: CostModel, nbytes: int) -> str:
        if time.monotonic() - self._object_failed_at < OBJECT_RETRY_AFTER:
            return "inline"
        return cost.choose(nbytes)

    def avoid_object_store(self) -> None:
        """Send "auto" intermediates inline for a while: the object store just failed."""
        self._object_failed_at = time.monotonic()


def _step_name(step: int) -> str:
    return "result" if step == RESULT_STEP else str(step)


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


__all__ = ["RESULT_STEP", "DataPlane", "new_run_id"]
