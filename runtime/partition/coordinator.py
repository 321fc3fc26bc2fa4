"""Coordinating a request to a partitioned model: the handler a worker runs for it.

The worker that receives a request (from the function's durable consumer or its ``.call``
subject, like any function) coordinates it: ``plan()``, then it picks one ready worker per
partition, hands each its partition (:class:`~runtime.partition.messages.RunPartition`),
waits for every partition's part in its own mailbox and ``combine()``s them.

A lost partition never hangs a request: the coordinator pings the workers of its run, and a
worker that has gone (no responders: its connection closed) or stops answering fails the run
with :class:`PartitionLost`; every partition is told to stop, and the request is tried once
more on other workers. A failed run is cleaned up beside the request, not in its way: once
its partitions have stopped, its intermediates are swept from the object store.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from runtime.define.partitioned import check_plan, memory_budget
from runtime.errors import PartitionLost, ShoalError, WorkerUnavailable
from runtime.partition.dataplane import RESULT_STEP, new_run_id
from runtime.partition.messages import MalformedMessage, Reply, RunPartition, task_subject
from runtime.partition.role import Role
from runtime.wire import tracing

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus

    from runtime.context import Context
    from runtime.partition.mailbox import Mailbox

log = logging.getLogger("shoal.partitions")

TAKE_TIMEOUT = 5.0  # seconds a worker has to accept a partition
WAIT_FOR_WORKERS = 15.0  # seconds a request waits for enough ready workers
DRAIN_GRACE = 5.0  # seconds a failed run's cleanup waits for its live partitions to stop


class Coordinator(Role):
    """Runs requests to ``instance`` (a partitioned model) over the workers ``peers`` knows."""

    def _start(self) -> None:
        self.budget = memory_budget(self.spec)
        self.cleanups = 0  # failed runs still being cleaned up
        self._tg: TaskGroup | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Host the cleanup of failed runs until cancelled (without it, a failed request
        waits for its own cleanup)."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                task_status.started()
                await anyio.sleep_forever()
            finally:
                self._tg = None

    async def coordinate(self, event: Any, ctx: Context) -> Any:
        """The handler of a partitioned function: plan, run the partitions, combine."""
        with tracing.span(f"{self.spec.name} plan"):
            planned = await _call(self.instance.plan, event)
        plan = check_plan(self.spec, planned, self.budget)
        deadline = time.monotonic() + self.spec.timeout
        lost: set[str] = set()
        for attempt in (1, 2):
            roster = await self._pick(plan.partitions, exclude=lost)
            try:
                parts = await self._run_once(event, ctx, roster, deadline)
                break
            except PartitionLost as e:
                if attempt == 2 or e.worker is None or time.monotonic() > deadline - 1:
                    raise
                log.warning("%s: %s; retrying on other workers", ctx.request_id, e.message)
                lost.add(e.worker)
        with tracing.span(f"{self.spec.name} combine"):
            return await _call(self.instance.combine, event, parts)

    async def _pick(self, n: int, exclude: set[str]) -> list[str]:
        """``n`` distinct live workers; partition i goes to the same worker while it lives."""
        with anyio.move_on_after(WAIT_FOR_WORKERS):
            while True:
                live = self.peers.ready(exclude)
                if self.worker_id not in self.peers.known and self.worker_id not in exclude:
                    live.append(self.worker_id)  # before its first heartbeat is seen
                if len(live) >= n:
                    return _rendezvous(self.spec.name, live, n)
                await self.peers.changed.wait()  # a heartbeat: maybe a new worker
        raise WorkerUnavailable(
            f"{self.spec.name} needs {n} workers for partitions={n} but {len(live)} are "
            f"ready (max_workers={self.spec.max_workers}); retry once the pool is up"
        )

    async def _run_once(
        self, event: Any, ctx: Context, roster: list[str], deadline: float
    ) -> list[Any]:
        run, count = new_run_id(), len(roster)
        box = self.plane.mailbox(run, count)  # the coordinator's own mailbox, index = count
        parts: list[Any] = [None] * count
        done: set[int] = set()
        reported: set[int] = set()  # partitions that answered, with their part or an error
        failure: list[ShoalError] = []
        try:
            async with anyio.create_task_group() as tg:

                def fail(error: ShoalError) -> None:
                    if not failure:
                        failure.append(error)
                    tg.cancel_scope.cancel()

                async def hand_out(i: int, worker: str) -> None:
                    task = RunPartition(
                        run=run,
                        index=i,
                        count=count,
                        roster=tuple(roster),
                        coordinator=self.worker_id,
                        request=event,
                        request_id=ctx.request_id,
                        channel=self.spec.channel,
                        deadline=max(0.1, deadline - time.monotonic()),
                        traceparent=tracing.current_traceparent(),
                    )
                    error = await self._hand_out(task, worker)
                    if error is not None:
                        fail(error)

                async def collect(i: int) -> None:
                    try:
                        delivery = await box.take((RESULT_STEP, i))
                        reported.add(i)  # it has stopped, whatever it answered
                        got = await self.plane.open(delivery)
                    except ShoalError as e:
                        fail(e)
                        return
                    parts[i] = got["part"]
                    done.add(i)
                    if len(done) == count:
                        tg.cancel_scope.cancel()

                async def watch() -> None:
                    error = await self._first_lost(roster)
                    if error is not None:
                        fail(error)

                for i, worker in enumerate(roster):
                    tg.start_soon(hand_out, i, worker)
                    tg.start_soon(collect, i)
                tg.start_soon(watch)
                await anyio.sleep_forever()
        finally:
            if len(done) < count:
                error = failure[0] if failure else PartitionLost("the run was cancelled")
                with anyio.CancelScope(shield=True):
                    await self._abandon(run, roster, error)
                # The caller is answered now; waiting for the partitions to stop and
                # sweeping the store happen beside it (within DRAIN_GRACE and the sweep).
                gone = error.worker if isinstance(error, PartitionLost) else None
                stopping = [i for i, w in enumerate(roster) if i not in reported and w != gone]
                if self._tg is not None:
                    self.cleanups += 1
                    self._tg.start_soon(self._clean_up, run, count, box, stopping)
                else:
                    with anyio.CancelScope(shield=True):
                        await self._clean_up(run, count, box, stopping, counted=False)
            else:
                self.plane.drop(run, count)
        if failure:
            raise failure[0]
        return parts

    async def _hand_out(self, task: RunPartition, worker: str) -> PartitionLost | None:
        """Give one partition to its worker: None once it took it, else why it did not."""
        try:
            reply = await self.nc.request(
                task_subject(self.spec.name, worker), task.to_bytes(), timeout=TAKE_TIMEOUT
            )
            answer = Reply.from_bytes(reply.data)
        except (NoRespondersError, NatsTimeout):
            answer = Reply(error="did not answer")
        except MalformedMessage as e:
            answer = Reply(error=f"unreadable answer: {e}")
        if answer.ok:
            return None
        return PartitionLost(
            f"partition {task.index}: worker {worker}: {answer.error}", worker=worker
        )

    async def _first_lost(self, roster: list[str]) -> PartitionLost | None:
        """Waits until one of the run's other workers goes away (None: there are none)."""
        others = [w for w in roster if w != self.worker_id]
        if not others:
            return None
        try:
            worker = await self.peers.first_lost(others)
        except Exception as e:
            return PartitionLost(f"cannot watch the run's workers: {e}")
        return PartitionLost(f"worker {worker} went away during the run", worker=worker)

    async def _abandon(self, run: str, roster: list[str], error: ShoalError) -> None:
        """Tell every partition of a failed run to stop."""
        try:
            await self.plane.abort(roster, run, error)
        except Exception as e:
            log.warning("stopping the partitions of run %s failed: %s", run, e)

    async def _clean_up(
        self, run: str, count: int, box: Mailbox, stopping: list[int], *, counted: bool = True
    ) -> None:
        """Once the stopping partitions of a failed run have answered (each answers, part or
        error, as it stops; after that none writes), delete what the run left in the store."""
        try:
            with anyio.move_on_after(DRAIN_GRACE):
                for i in stopping:
                    await box.settle((RESULT_STEP, i))
            await self.plane.sweep(run)
        except Exception as e:
            log.warning("cleaning up run %s failed: %s", run, e)
        finally:
            self.plane.drop(run, count)
            if counted:
                self.cleanups -= 1
                self._on_idle()


def _rendezvous(name: str, workers: list[str], n: int) -> list[str]:
    """Highest-random-weight choice per partition: stable while the pool is."""
    chosen: list[str] = []
    for i in range(n):
        best = max(
            (w for w in workers if w not in chosen),
            key=lambda w: hashlib.blake2b(f"{name}/{i}/{w}".encode(), digest_size=8).digest(),
        )
        chosen.append(best)
    return chosen


async def _call(fn: Any, *args: Any) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    return await anyio.to_thread.run_sync(partial(fn, *args))
