"""A worker's two roles for a partitioned model: coordinating requests, serving partitions.

Every worker of a partitioned model does both. The worker that receives a request (from the
function's durable consumer or its ``.call`` subject, like any function) coordinates it:
``plan()``, then it picks one live worker per partition, hands each its partition over
``shoal.part.<function>.<worker>``, waits for every partition's part and ``combine()``s
them. Partitions exchange intermediates among themselves (:mod:`runtime.partition.dataplane`); the
coordinator and the controller are not on that path.

A lost partition never hangs a request: the coordinator pings the workers of its run, and
a worker that has gone (no responders: its connection closed) or stops answering fails the
run with :class:`PartitionLost`; every partition is told to stop, and the request is tried
once more on live workers. A failed run is cleaned up beside the request, not in its way:
once its partitions have stopped, its intermediates are swept from the object store.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import msgpack
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from runtime.context import Context
from runtime.define.partitioned import check_plan, memory_budget
from runtime.errors import FunctionError, PartitionLost, ShoalError, WorkerUnavailable
from runtime.partition import calibration
from runtime.partition.dataplane import RESULT_STEP, DataPlane, new_run_id
from runtime.partition.shard import Shard
from runtime.wire import protocol
from runtime.wire.connection import kv
from runtime.wire.spec import FunctionSpec
from runtime.worker.invoker import run_hook

log = logging.getLogger("shoal.partitions")

PING_EVERY = 0.5  # seconds between liveness pings to the workers of a run
PING_PATIENCE = 2.0  # seconds a worker may leave a ping unanswered before it counts as lost
TAKE_TIMEOUT = 5.0  # seconds a worker has to accept a partition
STALE_AFTER = 3.0  # heartbeats older than this (in heartbeat periods) mean a worker is gone
WAIT_FOR_WORKERS = 15.0  # seconds a request waits for enough ready workers
DRAIN_GRACE = 5.0  # seconds a failed run's cleanup waits for its live partitions to stop


def task_subject(function: str, worker_id: str) -> str:
    return f"shoal.part.{function}.{worker_id}"


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


@dataclass
class _Peer:
    state: str
    seen: float


class Partitions:
    """Serves partitions of ``instance`` and coordinates requests, in one worker."""

    def __init__(
        self,
        nc: NATS,
        spec: FunctionSpec,
        worker_id: str,
        instance: Any,
        plane: DataPlane,
        *,
        heartbeat: float = 1.0,
    ) -> None:
        self.nc = nc
        self.spec = spec
        self.worker_id = worker_id
        self.instance = instance
        self.plane = plane
        self.heartbeat = heartbeat
        self.peers: dict[str, _Peer] = {}
        self._peers_changed = anyio.Event()
        self.budget = memory_budget(spec)
        self._inflight = 0
        self._cleanups = 0  # failed runs still being cleaned up
        self._idle_since = time.monotonic()
        self._idle = anyio.Event()
        self._draining = False
        self._tg: Any = None

    @property
    def inflight(self) -> int:
        """Partitions this worker is serving now (for other coordinators or its own)."""
        return self._inflight

    @property
    def idle_for(self) -> float:
        return 0.0 if self._inflight else time.monotonic() - self._idle_since

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        await self.plane.start()
        sub = await self.nc.subscribe(
            task_subject(self.spec.name, self.worker_id), cb=self._on_task
        )
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._watch_peers)
                tg.start_soon(self._calibrate)
                tg.start_soon(self._collect_garbage)
                task_status.started()
                await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()
                await self.plane.stop()

    async def drain(self, timeout: float) -> None:
        """Refuse new partitions and wait (up to ``timeout``) for the running ones, and for
        the cleanup of failed runs."""
        self._draining = True
        with anyio.move_on_after(timeout):
            while self._inflight or self._cleanups:
                await self._idle.wait()

    async def _calibrate(self) -> None:
        if self.plane.store is not None:
            try:
                await self.plane.store.ensure_bucket()
            except Exception as e:
                log.warning("object store not usable for intermediates: %s", e)
        await calibration.follow(self.nc, self.plane)

    async def _collect_garbage(self) -> None:
        while True:
            await anyio.sleep(60)
            self.plane.collect_garbage()

    async def _watch_peers(self) -> None:
        """Keep ``peers`` current from the workers' heartbeats (``shoal_workers``)."""
        bucket = await kv(self.nc.jetstream(), protocol.WORKERS_BUCKET)
        while True:
            try:
                watcher = await bucket.watch(f"{self.spec.name}.*")
                async for entry in watcher:
                    if entry is None:  # caught up with the history
                        continue
                    worker = entry.key.split(".", 1)[1]
                    if entry.operation in ("DEL", "PURGE") or not entry.value:
                        self.peers.pop(worker, None)
                        continue
                    try:
                        info = msgpack.unpackb(entry.value, raw=False)
                        state = str(info.get("state", ""))
                        if info.get("version") != self.spec.version:
                            state = "other-version"  # a rolling redeploy: keep runs on one
                    except Exception:
                        continue
                    self.peers[worker] = _Peer(state, time.monotonic())
                    self._peers_changed.set()
                    self._peers_changed = anyio.Event()
            except Exception as e:
                log.warning("watching %s workers failed (%s); retrying", self.spec.name, e)
                await anyio.sleep(1)

    # -- serving partitions ---------------------------------------------------------------

    async def _on_task(self, msg: Msg) -> None:
        try:
            task = msgpack.unpackb(msg.data, raw=False)
            op = task.get("op")
        except Exception:
            log.warning("malformed partition task dropped")
            return
        if op == "ping":
            await self._reply(msg, {"ok": True})
            return
        if op != "run":
            await self._reply(msg, {"error": f"unknown op {op!r}"})
            return
        if self._draining:
            await self._reply(msg, {"error": "draining"})
            return
        self._inflight += 1
        await self._reply(msg, {"ok": True})
        assert self._tg is not None
        self._tg.start_soon(self._serve_partition, task)

    async def _reply(self, msg: Msg, body: dict[str, Any]) -> None:
        if msg.reply:
            await self.nc.publish(msg.reply, _pack(body))

    async def _serve_partition(self, task: dict[str, Any]) -> None:
        run, index, count = task["run"], int(task["index"]), int(task["count"])
        coordinator = task["coordinator"]
        box = self.plane.mailbox(run, index)
        shard = Shard(
            self.plane,
            box,
            run=run,
            index=index,
            count=count,
            roster=list(task["roster"]),
            channel=task["channel"],
            request_id=task["request_id"],
        )
        outcome: list[Any] = []

        async def compute(scope: anyio.CancelScope) -> None:
            try:
                outcome.append(await self.instance.shard(task["request"], shard))
            except Exception as e:
                outcome.append(e)
            finally:
                scope.cancel()

        with anyio.move_on_after(float(task["deadline"])) as timer:
            async with anyio.create_task_group() as tg:
                # A partition whose coordinator is gone has nobody to answer to.
                tg.start_soon(self._watch_workers, run, [coordinator])
                tg.start_soon(compute, tg.cancel_scope)
        error: ShoalError | None = None
        part: Any = outcome[0] if outcome else None
        if timer.cancelled_caught and not outcome:
            error = PartitionLost(f"partition {index} of {count} ran out of time")
        elif isinstance(part, ShoalError):
            error = part
        elif isinstance(part, Exception):
            log.warning(
                "partition %s of %s failed: %s: %s", index, count, type(part).__name__, part
            )
            error = FunctionError(f"partition {index} of {count}: {type(part).__name__}: {part}")
        elif box.error is not None:
            error = box.error
        try:
            if error is None:
                body = {"part": part, "stats": shard.stats()}
                try:
                    await self.plane.send(
                        coordinator, run, RESULT_STEP, index, count, body, task["channel"]
                    )
                except ShoalError as e:
                    error = e
            if error is not None:
                await self.plane.send_error(coordinator, run, index, count, error)
        except Exception as e:
            log.warning("partition %s could not report to its coordinator: %s", index, e)
        finally:
            self.plane.drop(run, index)
            self._inflight -= 1
            if not self._inflight:
                self._idle_since = time.monotonic()
            self._wake_drain()

    def _wake_drain(self) -> None:
        self._idle.set()
        self._idle = anyio.Event()

    async def _watch_workers(self, run: str, workers: list[str]) -> None:
        """Fail ``run`` when one of ``workers`` has gone; returns only by cancellation."""
        try:
            lost = await self._first_lost(workers)
        except Exception as e:  # NATS itself is gone: the run cannot finish either
            log.warning("watching run %s failed: %s", run, e)
            return
        error = PartitionLost(
            f"worker {lost} of {self.spec.name} went away during the run (crashed, killed or "
            "cut off from NATS)"
        )
        self.plane.fail_run(run, error)

    async def _first_lost(self, workers: list[str]) -> str:
        last_answer = {w: time.monotonic() for w in workers}
        while True:
            await anyio.sleep(PING_EVERY)
            for w in workers:
                try:
                    await self.nc.request(
                        task_subject(self.spec.name, w), _pack({"op": "ping"}), timeout=PING_EVERY
                    )
                    last_answer[w] = time.monotonic()
                except NoRespondersError:
                    return w  # its connection is gone: NATS knows at once
                except NatsTimeout:
                    if time.monotonic() - last_answer[w] > PING_PATIENCE:
                        return w

    # -- coordinating ---------------------------------------------------------------------

    async def coordinate(self, event: Any, ctx: Context) -> Any:
        """The handler of a partitioned function: plan, run the partitions, combine."""
        plan = check_plan(self.spec, await _call(self.instance.plan, event), self.budget)
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
        return await _call(self.instance.combine, event, parts)

    async def _pick(self, n: int, exclude: set[str]) -> list[str]:
        """``n`` distinct live workers; partition i goes to the same worker while it lives."""
        with anyio.move_on_after(WAIT_FOR_WORKERS):
            while True:
                now = time.monotonic()
                live = [
                    w
                    for w, p in self.peers.items()
                    if p.state == "ready"
                    and now - p.seen < STALE_AFTER * self.heartbeat
                    and w not in exclude
                ]
                if self.worker_id not in self.peers and self.worker_id not in exclude:
                    live.append(self.worker_id)  # before its first heartbeat is seen
                if len(live) >= n:
                    return _rendezvous(self.spec.name, live, n)
                await self._peers_changed.wait()  # a heartbeat: maybe a new worker
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
                    task = {
                        "op": "run",
                        "run": run,
                        "index": i,
                        "count": count,
                        "roster": roster,
                        "coordinator": self.worker_id,
                        "request": event,
                        "request_id": ctx.request_id,
                        "channel": self.spec.channel,
                        "deadline": max(0.1, deadline - time.monotonic()),
                    }
                    try:
                        reply = await self.nc.request(
                            task_subject(self.spec.name, worker), _pack(task), timeout=TAKE_TIMEOUT
                        )
                        answer = msgpack.unpackb(reply.data, raw=False)
                    except (NoRespondersError, NatsTimeout):
                        answer = {"error": "did not answer"}
                    if "error" in answer:
                        fail(
                            PartitionLost(
                                f"partition {i}: worker {worker}: {answer['error']}",
                                worker=worker,
                            )
                        )

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
                    others = [w for w in roster if w != self.worker_id]
                    if others:
                        try:
                            worker = await self._first_lost(others)
                        except Exception as e:
                            fail(PartitionLost(f"cannot watch the run's workers: {e}"))
                            return
                        fail(
                            PartitionLost(
                                f"worker {worker} went away during the run", worker=worker
                            )
                        )

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
                    self._cleanups += 1
                    self._tg.start_soon(self._clean_up, run, count, box, stopping)
                else:
                    with anyio.CancelScope(shield=True):
                        await self._clean_up(run, count, box, stopping, counted=False)
            else:
                self.plane.drop(run, count)
        if failure:
            raise failure[0]
        return parts

    async def _abandon(self, run: str, roster: list[str], error: ShoalError) -> None:
        """Tell every partition of a failed run to stop."""
        try:
            await self.plane.abort(roster, run, error)
        except Exception as e:
            log.warning("stopping the partitions of run %s failed: %s", run, e)

    async def _clean_up(
        self, run: str, count: int, box: Any, stopping: list[int], *, counted: bool = True
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
                self._cleanups -= 1
                self._wake_drain()


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


async def start_partitions(
    nc: NATS, definition: Any, worker_id: str, heartbeat: float
) -> Partitions:
    """Instantiate a partitioned model's class and its data plane, ready to ``run``."""
    instance = definition.target()
    setup = getattr(instance, "setup", None)
    if setup is not None:
        await run_hook(setup)
    store = object_store_from_env()
    plane = DataPlane(nc, definition.spec.name, worker_id, store)
    return Partitions(nc, definition.spec, worker_id, instance, plane, heartbeat=heartbeat)


def object_store_from_env() -> Any:
    """The object store for intermediates, when ``SHOAL_S3_ENDPOINT`` names one."""
    if not os.environ.get("SHOAL_S3_ENDPOINT"):
        return None
    from storage import AsyncObjectStore, S3Settings

    return AsyncObjectStore.from_settings(S3Settings.from_env())
