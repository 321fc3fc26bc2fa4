"""An executor worker: one model in memory, fed batches of items from many handler workers."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import anyio

from runtime.errors import ShoalError
from runtime.wire import answer, codec, logstream, protocol, tracing
from runtime.wire import items as batch_wire
from runtime.wire.failure import without_traceback
from runtime.worker.serving import Serving, WorkerSettings, idle_for

if TYPE_CHECKING:
    from anyio.abc import TaskGroup
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

    from runtime.wire.spec import FunctionSpec
    from runtime.worker.batching import Batcher

log = logging.getLogger("shoal.executor")


class ExecutorWorker(Serving):
    """Answers ``shoal.ex.<name>`` requests (one item, or many: :mod:`runtime.wire.items`)
    through a shared batcher."""

    def __init__(
        self, nc: NATS, spec: FunctionSpec, settings: WorkerSettings, batcher: Batcher
    ) -> None:
        super().__init__(nc, spec, settings)
        self.batcher = batcher
        self.figures.batch = batcher.stats.sizes  # the same object: always current
        self._inflight = 0
        self._idle_since = time.monotonic()
        self._drained = anyio.Event()
        self._tg: TaskGroup | None = None

    def load(self) -> dict[str, Any]:
        s = self.batcher.stats
        return {
            "inflight": self._inflight,
            "concurrency": self.spec.capacity,
            "idle_for": idle_for(self._inflight, self._idle_since),
            "queued": s.queued,
            "batches": s.batches,
            "mean_batch": round(s.mean, 2),
            "largest_batch": s.largest,
            "batch_cap": s.cap,
            "first_batch": s.first_batch,
            "busy": round(s.busy, 3),
            "idle_waiting": round(s.idle_waiting, 3),
        }

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        subject = protocol.executor_subject(self.spec.name)
        async with anyio.create_task_group() as tg:
            self._tg = tg
            sub = await self.nc.subscribe(subject, queue=subject, cb=self._on_item)
            stop_sub = await self.listen_for_stop()
            tg.start_soon(self.heartbeats)
            await self.announce("ready")
            log.info("executor %s serving %s", self.settings.worker_id, self.spec.name)
            task_status.started()
            await self._stop.wait()
            await self.announce("draining")
            await sub.unsubscribe()
            await stop_sub.unsubscribe()
            with anyio.move_on_after(self.spec.timeout + 5):
                if self._inflight:
                    await self._drained.wait()
            tg.cancel_scope.cancel()
        await self.withdraw()

    async def _on_item(self, msg: Msg) -> None:
        if (msg.headers or {}).get(protocol.PREWARM):
            return  # already warm
        assert self._tg is not None
        self._inflight += 1
        self._tg.start_soon(self._handle, msg)

    async def _handle(self, msg: Msg) -> None:
        started = time.perf_counter()
        count = 1  # items this message brought (inflight counts items)
        try:
            headers = msg.headers or {}
            request_id = headers.get(protocol.REQUEST_ID) or ""
            with (
                logstream.invocation(request_id),
                tracing.span(
                    f"{self.spec.name} execute",
                    parent=tracing.extract(headers),
                    kind=tracing.SERVER,
                    attributes={"shoal.executor": self.spec.name},
                ) as span,
            ):
                try:
                    if batch_wire.is_batch(headers):
                        items = batch_wire.decode_request(msg.data, headers)
                        count = len(items)
                        self._inflight += count - 1
                        span.set_attribute("shoal.items", count)
                        reply = await self._run_items(items, started, span.traceparent)
                    else:
                        item, _ = codec.decode(msg.data, headers.get(protocol.CONTENT_TYPE))
                        value = await self.batcher.submit(item)
                        reply = answer.ok(value, "msgpack", traceparent=span.traceparent)
                        self.figures.invoked(time.perf_counter() - started)
                except ShoalError as e:
                    span.record_error(e, e.message)
                    keep = self.settings.error_tracebacks
                    err = without_traceback(e, keep)
                    reply = answer.error(err, "msgpack", traceparent=span.traceparent)
                    if batch_wire.is_batch(headers):  # read by an executor that reads batches
                        reply.headers[protocol.ITEMS] = batch_wire.VERSION
                    self.figures.invoked(time.perf_counter() - started, e)
            if msg.reply:  # an item's answer goes to one handler: no request id of its own
                await self.nc.publish(msg.reply, reply.body, headers=reply.headers)
            self.served += count
        except Exception:
            log.exception("executor item failed")
        finally:
            self._inflight -= count
            if not self._inflight:
                self._idle_since = time.monotonic()
                self._drained.set()
                self._drained = anyio.Event()

    async def _run_items(
        self, items: list[Any], started: float, traceparent: str | None
    ) -> answer.Answer:
        """A batch message's items through the batcher, one answer with all their outcomes."""
        outcomes = await self.batcher.submit_many(items)
        elapsed = time.perf_counter() - started
        keep = self.settings.error_tracebacks
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, ShoalError):
                outcomes[i] = without_traceback(outcome, keep)
                self.figures.invoked(elapsed, outcome)
            else:
                self.figures.invoked(elapsed)
        return batch_wire.answer_items(outcomes, self.nc.max_payload, traceparent)
