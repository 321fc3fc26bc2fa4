"""A handler worker: serves one function from its durable consumer and its request/reply
subject. Built by :mod:`runtime.worker.assembly`, run by :mod:`runtime.worker.main`
(``python -m runtime.worker``); :class:`Worker` can also run inside another program.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from runtime.context import Context
from runtime.errors import Cancelled, FunctionTimeout, PayloadTooLarge, ShoalError
from runtime.wire import answer, codec, logstream, protocol, tracing
from runtime.wire.connection import drain_shielded, kv
from runtime.wire.deadletter import dead_letter
from runtime.wire.failure import without_traceback
from runtime.wire.kvwatch import Change, Follower
from runtime.wire.results import Result, ResultStore, make_result
from runtime.worker.pull import Puller, Slots
from runtime.worker.serving import Serving, WorkerSettings, idle_for
from runtime.worker.settle import DeadLetter, Nak, settle

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

    from runtime.partition.worker import Partitions
    from runtime.worker.invoker import Invoker

log = logging.getLogger("shoal.worker")

Job = tuple["Callable[[Msg], Awaitable[None]]", "Msg"]  # a message and what handles it

HEADROOM = 4096  # bytes kept for headers and the result envelope within NATS's max payload
RUNNING_LISTED = 64  # request ids running now, in each heartbeat (``shoal result`` reads them)


class Worker(Serving):
    """Runs a started :class:`Invoker` against NATS until asked to stop, then drains."""

    def __init__(self, nc: NATS, invoker: Invoker, settings: WorkerSettings) -> None:
        super().__init__(nc, invoker.spec, settings)
        self.invoker = invoker
        self.slots = Slots(self.spec.concurrency)
        self._inflight_events: dict[str, tuple[Msg, float]] = {}  # by ack subject
        # Calls and events wait here for one of `concurrency` long-lived tasks (no task is
        # started per message); `_jobs` counts those waiting or running. An asyncio queue,
        # not an anyio stream: a worker runs on asyncio, and the stream's receive costs a
        # pass of the event loop and an event per message.
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._accepting = True
        self._jobs = 0
        self._results: ResultStore | None = None
        self._cancelled: set[str] = set()  # result keys of cancelled request ids
        self._running: dict[str, anyio.CancelScope] = {}
        self.partitions: Partitions | None = None  # set for a partitioned model

    def load(self) -> dict[str, Any]:
        inflight = self.slots.busy
        idle = idle_for(self.slots.busy, self.slots.idle_since)
        if self.partitions is not None:
            # Serving partitions is work too: such a worker is neither idle nor spare.
            inflight += self.partitions.inflight
            idle = min(idle, self.partitions.idle_for)
        return {
            "inflight": inflight,
            "concurrency": self.slots.total,
            "idle_for": idle,
            # Result keys of the invocations running now: `shoal result` says "running"
            # from them, with no write per request.
            "running": list(self._running)[:RUNNING_LISTED],
        }

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self._results = ResultStore(self.nc, await kv(self.nc.jetstream(), protocol.RESULTS_BUCKET))
        name = self.spec.name
        async with anyio.create_task_group() as tg:
            for _ in range(self.slots.total):
                tg.start_soon(self._serve_jobs)
            puller = Puller(self.nc, self.spec.stream, protocol.CONSUMER, self.slots, self._deliver)
            call_sub = await self.nc.subscribe(
                protocol.call_subject(name), queue=protocol.queue_group(name), cb=self._on_call
            )
            stop_sub = await self.listen_for_stop()
            pulled_out = anyio.Event()

            async def pull() -> None:
                await puller.run()
                pulled_out.set()

            tg.start_soon(pull)
            tg.start_soon(self._follow_cancellations)
            tg.start_soon(self.heartbeats)
            tg.start_soon(self._extend_acks)
            await self.announce("ready")
            log.info("worker %s serving %s", self.settings.worker_id, name)
            task_status.started()

            await self._stop.wait()
            log.info("worker %s draining", self.settings.worker_id)
            await self.announce("draining")
            try:
                # Requests the server already routed here are still answered: an
                # unsubscribe would drop them and leave their callers waiting.
                await drain_shielded(call_sub)
            except Exception as e:
                log.warning("draining the call subject failed: %r", e)
            await stop_sub.unsubscribe()
            puller.stop()
            # Whatever is still running after the grace period is redelivered elsewhere.
            with anyio.move_on_after(self.spec.timeout + 5):
                await pulled_out.wait()  # its last pull requests may still bring events
                while self._jobs:
                    await self._wait_release()
            self._accepting = False
            tg.cancel_scope.cancel()
        await self.withdraw()

    async def _wait_release(self) -> None:
        released = anyio.Event()
        previous = self.slots.on_release

        def on_release() -> None:
            previous()
            released.set()

        self.slots.on_release = on_release
        try:
            await released.wait()
        finally:
            self.slots.on_release = previous

    def _submit(self, handle: Callable[[Msg], Awaitable[None]], msg: Msg) -> None:
        if not self._accepting:  # the worker has stopped: an event is redelivered
            log.warning("%s arrived after the worker stopped; not handled", msg.subject)
            return
        self._queue.put_nowait((handle, msg))
        self._jobs += 1

    async def _serve_jobs(self) -> None:
        """One of the worker's `concurrency` tasks: takes calls and events in turn, each
        in a slot."""
        while True:
            handle, msg = await self._queue.get()
            try:
                await self.slots.acquire()  # free at once: one slot per task
                try:
                    await handle(msg)
                finally:
                    self._jobs -= 1  # before the release, which wakes a draining worker
                    self.slots.release()
            except Exception:
                log.exception("handling a message on %s failed", msg.subject)

    async def _extend_acks(self) -> None:
        # Long invocations keep their events: tell JetStream they are in progress well
        # before ack_wait runs out, so no other worker gets a copy.
        period = self.spec.ack_wait / 3
        while True:
            await anyio.sleep(period)
            now = time.monotonic()
            for msg, started in list(self._inflight_events.values()):
                if now - started >= period:
                    try:
                        await msg.in_progress()
                    except Exception as e:
                        log.debug("in_progress failed: %s", e)

    async def _follow_cancellations(self) -> None:
        # A watch keeps the set in memory: checking it costs nothing on the hot path. The
        # follower watches anew after a reconnect; a cancellation seen twice is one.
        bucket = await kv(self.nc.jetstream(), protocol.CANCEL_BUCKET)
        await Follower(bucket, self._on_cancellation).run()

    def _on_cancellation(self, change: Change) -> None:
        if change.deleted:
            return  # a cancellation expires with the results; it is never withdrawn
        self._cancelled.add(change.key)
        scope = self._running.get(change.key)
        if scope is not None:
            scope.cancel()

    async def _on_call(self, msg: Msg) -> None:
        self._submit(self._handle_call, msg)

    def _deliver(self, msg: Msg) -> None:
        self._submit(self._handle_event, msg)

    async def _execute(
        self, msg: Msg, request_id: str, attempt: int, durable: bool
    ) -> tuple[Result, answer.Answer, ShoalError | None]:
        """Run the handler on a message: its result, its answer, and the error it ended in."""
        headers = msg.headers or {}
        # The caller's trace goes on here (a new one starts without it); log lines name both.
        with (
            logstream.invocation(request_id),
            tracing.span(
                f"{self.spec.name} {'process' if durable else 'call'}",
                parent=tracing.extract(headers),
                kind=tracing.CONSUMER if durable else tracing.SERVER,
                # Attributes are for recorded spans only: none built when none are.
                attributes={
                    "shoal.function": self.spec.name,
                    "shoal.request_id": request_id,
                    "shoal.attempt": attempt,
                    "shoal.worker": self.settings.worker_id,
                }
                if tracing.enabled()
                else None,
            ) as span,
        ):
            result, reply, error = await self._run(msg, headers, request_id, attempt, durable)
            if error is not None:
                span.record_error(error, error.message)
            return result, answer.of_result(result, span.traceparent) if error else reply, error

    async def _run(
        self, msg: Msg, headers: Any, request_id: str, attempt: int, durable: bool
    ) -> tuple[Result, answer.Answer, ShoalError | None]:
        content_type = headers.get(protocol.CONTENT_TYPE)
        enc = codec.encoding_of(content_type)
        key = protocol.result_key(request_id)
        started = time.perf_counter()
        try:
            event, enc = codec.decode(msg.data, content_type)
            ctx = Context(request_id, self.spec.name, msg.subject, headers, attempt, durable)
            if key in self._cancelled:
                raise Cancelled(f"{request_id} was cancelled", request_id=request_id)
            scope = self._running[key] = anyio.CancelScope()  # a cancellation cancels it
            try:
                value = await self.invoker.invoke(event, ctx, scope)
            except FunctionTimeout:
                if key in self._cancelled:  # cancelled as its time ran out: cancelled
                    raise Cancelled(f"{request_id} was cancelled", request_id=request_id) from None
                raise
            finally:
                self._running.pop(key, None)
            reply = answer.ok(value, enc, request_id, tracing.current_traceparent())
            if len(reply.body) + HEADROOM > self.nc.max_payload:
                raise PayloadTooLarge(
                    f"the answer is {len(reply.body)} bytes, more than NATS carries "
                    f"({self.nc.max_payload}): return less, or put large data in storage/ "
                    "and return its reference",
                    request_id=request_id,
                )
            self.figures.invoked(time.perf_counter() - started)
            return make_result(request_id, self.spec.name, True, value, enc), reply, None
        except ShoalError as e:
            e.request_id = request_id
            without_traceback(e, self.settings.error_tracebacks)
            self.figures.invoked(time.perf_counter() - started, e, request_id)
            result = make_result(request_id, self.spec.name, False, e.to_wire(), enc)
            return result, answer.of_result(result), e

    async def _reply(self, subject: str, reply: answer.Answer) -> None:
        """Send an answer; a failure here is logged, never allowed to block storing or acking."""
        try:
            await self.nc.publish(subject, reply.body, headers=reply.headers)
        except Exception as e:
            rid = reply.headers.get(protocol.REQUEST_ID)
            log.warning("answer to %r for %s not sent: %r", subject, rid, e)

    async def _dead_letter(self, **letter: Any) -> None:
        # Best effort: the answer and the stored result matter more than the copy kept here.
        self.figures.dead_letters += 1
        try:
            await dead_letter(self.nc.jetstream(), **letter)
        except Exception as e:
            log.warning("dead-lettering %s failed: %r", letter.get("original_subject"), e)

    async def _handle_call(self, msg: Msg) -> None:
        try:
            # Never redelivered: without an id of its own, a call gets a fresh one.
            request_id = answer.request_id(msg.headers)
            result, reply, _ = await self._execute(msg, request_id, 1, durable=False)
            if msg.reply:
                await self._reply(msg.reply, reply)
            assert self._results is not None
            await self._results.put_nowait(result)
            self.served += 1
        except Exception:
            log.exception("request on %s failed", msg.subject)

    async def _handle_event(self, msg: Msg) -> None:
        self._inflight_events[msg.reply] = (msg, time.monotonic())
        try:
            meta = msg.metadata
            headers = msg.headers or {}
            # The stream sequence as the fallback: every redelivery keeps the same id.
            request_id = answer.request_id(
                headers, answer.sequence_id(self.spec.name, meta.sequence.stream)
            )
            reply_to = headers.get(protocol.REPLY_TO)
            if reply_to and not protocol.reply_allowed(reply_to):
                log.warning("not answering %s on %r: a system subject", msg.subject, reply_to)
                reply_to = None  # the result is still stored under its request id
            assert self._results is not None
            attempt = meta.num_delivered
            if attempt > 1:
                self.figures.redeliveries += 1
                # A redelivery whose first run finished but was never acknowledged: answer
                # from the stored result instead of running the function twice.
                prior = await self._results.get(request_id)
                if prior is not None:
                    if reply_to:
                        trace = tracing.extract(headers)
                        traceparent = trace.traceparent if trace else None
                        await self._reply(reply_to, answer.of_result(prior, traceparent))
                    await msg.ack()
                    return
            result, reply, error = await self._execute(msg, request_id, attempt, durable=True)
            decision = settle(error, attempt, self.spec)
            if isinstance(decision, Nak):
                # JetStream redelivers it after the delay: no timer of ours to lose.
                log.info("retrying %s in %gs: %s", request_id, decision.delay, error)
                await msg.nak(delay=decision.delay)
                return
            if isinstance(decision, DeadLetter):
                await self._dead_letter(
                    function=self.spec.name,
                    original_subject=msg.subject,
                    data=msg.data,
                    headers=headers,
                    reason=decision.reason,
                    code=decision.code,
                    deliveries=attempt,
                )
            if reply_to:
                await self._reply(reply_to, reply)
                # nats-py writes what was published once this task yields: yield now, so the
                # answer leaves before the result is encoded and stored. (A call stores its
                # result without waiting: there, one write for both measured faster.)
                await anyio.lowlevel.checkpoint()
            await self._results.put(result)  # stored before the ack: at-least-once
            await msg.ack()
            self.served += 1
        except Exception as e:
            # Not acknowledged: JetStream redelivers it after ack_wait.
            log.warning("event on %s left for redelivery: %r", msg.subject, e)
        finally:
            self._inflight_events.pop(msg.reply, None)
