"""Serving partitions: what a worker does with the partitions coordinators hand it.

A coordinator hands partition i of a run to a worker with a :class:`RunPartition` on the
worker's task subject; the worker takes it (or refuses, while draining), runs the model's
``shard`` with a :class:`~runtime.partition.shard.Shard` for it, and sends the part (or the
error) to the coordinator's mailbox on the data plane. A partition whose coordinator has gone
stops: nobody is left to answer to.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import anyio

from runtime.errors import PartitionLost, ShoalError
from runtime.partition.dataplane import RESULT_STEP
from runtime.partition.messages import (
    MalformedMessage,
    Ping,
    Reply,
    RunPartition,
    read_task,
    task_subject,
)
from runtime.partition.role import Role
from runtime.partition.shard import Shard
from runtime.wire import logstream, tracing
from runtime.wire.failure import function_error

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus
    from nats.aio.msg import Msg


log = logging.getLogger("shoal.partitions")


class PartitionServer(Role):
    """Takes the partitions handed to one worker and serves each with ``instance.shard``."""

    def _start(self) -> None:
        self.draining = False  # refuse new partitions
        self._inflight = 0
        self._idle_since = time.monotonic()
        self._tg: TaskGroup | None = None

    @property
    def inflight(self) -> int:
        """Partitions this worker is serving now (for other coordinators or its own)."""
        return self._inflight

    @property
    def idle_for(self) -> float:
        return 0.0 if self._inflight else time.monotonic() - self._idle_since

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Take partitions on this worker's task subject until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            sub = await self.nc.subscribe(
                task_subject(self.spec.name, self.worker_id), cb=self._on_task
            )
            try:
                task_status.started()
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    await sub.unsubscribe()

    async def _on_task(self, msg: Msg) -> None:
        try:
            task = read_task(msg.data)
        except MalformedMessage as e:
            log.warning("malformed partition task refused: %s", e)
            await self._reply(msg, Reply(error=f"malformed task: {e}"))
            return
        if isinstance(task, Ping):
            await self._reply(msg, Reply())
            return
        if self.draining:
            await self._reply(msg, Reply(error="draining"))
            return
        self._inflight += 1
        await self._reply(msg, Reply())
        assert self._tg is not None
        self._tg.start_soon(self._serve, task)

    async def _reply(self, msg: Msg, reply: Reply) -> None:
        if msg.reply:
            await self.nc.publish(msg.reply, reply.to_bytes())

    async def _serve(self, task: RunPartition) -> None:
        # The partition's span, a child of its coordinator's: its intermediates carry it.
        with (
            logstream.invocation(task.request_id),
            tracing.span(
                f"{self.spec.name} partition {task.index}",
                parent=tracing.parse(task.traceparent),
                kind=tracing.SERVER,
                attributes={
                    "shoal.function": self.spec.name,
                    "shoal.request_id": task.request_id,
                    "shoal.partition": task.index,
                    "shoal.partitions": task.count,
                    "shoal.run": task.run,
                    "shoal.worker": self.worker_id,
                },
            ) as span,
        ):
            error = await self._serve_traced(task)
            if error is not None:
                span.record_error(error, error.message)

    async def _serve_traced(self, task: RunPartition) -> ShoalError | None:
        index, count = task.index, task.count
        box = self.plane.mailbox(task.run, index)
        shard = Shard(
            self.plane,
            box,
            run=task.run,
            index=index,
            count=count,
            roster=list(task.roster),
            channel=task.channel,
            request_id=task.request_id,
        )
        outcome: list[Any] = []

        async def compute(scope: anyio.CancelScope) -> None:
            try:
                outcome.append(await self.instance.shard(task.request, shard))
            except Exception as e:
                outcome.append(e)
            finally:
                scope.cancel()

        with anyio.move_on_after(task.deadline) as timer:
            async with anyio.create_task_group() as tg:
                # A partition whose coordinator is gone has nobody to answer to.
                tg.start_soon(self._watch_coordinator, task.run, task.coordinator)
                tg.start_soon(compute, tg.cancel_scope)
        error: ShoalError | None = None
        part: Any = outcome[0] if outcome else None
        if timer.cancelled_caught and not outcome:
            error = PartitionLost(f"partition {index} of {count} ran out of time")
        elif isinstance(part, ShoalError):
            error = part
        elif isinstance(part, Exception):
            error = function_error(part, prefix=f"partition {index} of {count}: ")
            log.warning("%s\n%s", error.message, error.traceback)
        elif box.error is not None:
            error = box.error
        try:
            if error is None:
                body = {"part": part, "stats": shard.stats()}
                try:
                    await self.plane.send(
                        task.coordinator, task.run, RESULT_STEP, index, count, body, task.channel
                    )
                except ShoalError as e:
                    error = e
            if error is not None:
                await self.plane.send_error(task.coordinator, task.run, index, count, error)
        except Exception as e:
            log.warning("partition %s could not report to its coordinator: %s", index, e)
        finally:
            self.plane.drop(task.run, index)
            self._inflight -= 1
            if not self._inflight:
                self._idle_since = time.monotonic()
            self._on_idle()
        return error

    async def _watch_coordinator(self, run: str, coordinator: str) -> None:
        """Fail ``run`` when its coordinator has gone; returns only by cancellation."""
        try:
            lost = await self.peers.first_lost([coordinator])
        except Exception as e:  # NATS itself is gone: the run cannot finish either
            log.warning("watching run %s failed: %s", run, e)
            return
        error = PartitionLost(
            f"worker {lost} of {self.spec.name} went away during the run (crashed, killed or "
            "cut off from NATS)"
        )
        self.plane.fail_run(run, error)
