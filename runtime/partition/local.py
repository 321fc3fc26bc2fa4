"""A partitioned model's pool of workers in one process, for :class:`runtime.testing.TestApp`.

Each worker of the pool is what a deployed worker runs for a partitioned model, unchanged:
its own instance of the model class (``setup()`` once), a
:class:`~runtime.partition.dataplane.DataPlane`, a
:class:`~runtime.partition.server.PartitionServer` and a
:class:`~runtime.partition.coordinator.Coordinator`. Only NATS is replaced, by a
:class:`Loopback`: the few calls they make of a connection (publish, subscribe, request), met
in memory. So every hand-out, intermediate, answer and abort is the message deployed: a
``RunPartition`` written and read, intermediates encoded (msgpack, zlib where it pays),
chunked at the server's max payload and filed in each partition's mailbox, a failed run
stopped and reported with the same typed errors.

What it has no stand-in for: the object store (``channel="object"`` fails as on workers
without one) and the heartbeats (every worker of the pool is always ready; liveness pings
are the real ones, over the loopback).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import anyio
from nats.errors import MaxPayloadError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from runtime.partition.coordinator import Coordinator
from runtime.partition.dataplane import DataPlane
from runtime.partition.peers import Peer, Peers
from runtime.partition.server import PartitionServer
from runtime.worker.invoker import run_hook

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.abc import TaskStatus
    from nats.aio.client import Client as NATS

    from runtime.context import Context
    from runtime.define.decorator import Definition
    from runtime.wire.spec import FunctionSpec

log = logging.getLogger("shoal.partitions")

MAX_PAYLOAD = 1 << 20  # nats-server's default max_payload, as deployed


@dataclass(frozen=True)
class LoopbackMsg:
    """A message as a subscriber reads it (the fields of ``nats.aio.msg.Msg`` in use)."""

    subject: str
    data: bytes
    reply: str = ""
    headers: dict[str, str] | None = None


class LoopbackSubscription:
    def __init__(self, loopback: Loopback, subject: str) -> None:
        self._loopback = loopback
        self.subject = subject

    async def unsubscribe(self) -> None:
        self._loopback.subs.pop(self.subject, None)


class Loopback:
    """What the partition modules ask of a NATS connection, in memory: exact subjects, one
    subscriber each, delivered in order before ``publish`` returns; a payload over
    ``max_payload`` is refused as the client refuses it, a subject nobody listens on drops
    the message, and a request to it gets no responders."""

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self.subs: dict[str, Callable[[Any], Awaitable[None]]] = {}
        self._replies: dict[str, list[LoopbackMsg]] = {}
        self._answered: dict[str, anyio.Event] = {}

    async def subscribe(
        self, subject: str, cb: Callable[[Any], Awaitable[None]], **_: Any
    ) -> LoopbackSubscription:
        if subject in self.subs:
            raise ValueError(f"{subject} already has a subscriber")
        self.subs[subject] = cb
        return LoopbackSubscription(self, subject)

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        reply: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        if len(payload) > self.max_payload:
            raise MaxPayloadError
        msg = LoopbackMsg(
            subject,
            bytes(payload),
            reply,
            {str(k): str(v) for k, v in headers.items()} if headers else None,
        )
        if subject in self._replies:
            self._replies[subject].append(msg)
            self._answered[subject].set()
            return
        cb = self.subs.get(subject)
        if cb is None:
            return  # nobody listens: NATS drops it
        try:
            await cb(msg)
        except Exception:  # as nats-py does: a subscriber's error is its own
            log.exception("loopback subscriber of %s failed", subject)

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float = 0.5,
        headers: dict[str, str] | None = None,
    ) -> LoopbackMsg:
        if subject not in self.subs:
            raise NoRespondersError
        inbox = f"_INBOX.{uuid.uuid4().hex}"
        self._replies[inbox], self._answered[inbox] = [], anyio.Event()
        try:
            with anyio.fail_after(timeout):
                await self.publish(subject, payload, inbox, headers)
                await self._answered[inbox].wait()
        except TimeoutError:
            raise NatsTimeout from None
        finally:
            replies = self._replies.pop(inbox)
            del self._answered[inbox]
        return replies[0]


class PoolPeers(Peers):
    """The pool as each of its workers sees it: every worker always ready (no heartbeats in
    one process); whether a run's workers are still there is asked by the real pings."""

    def __init__(self, nc: NATS, spec: FunctionSpec, workers: list[str]) -> None:
        super().__init__(nc, spec)
        self.known = {w: Peer("ready", 0.0) for w in workers}

    def ready(self, exclude: set[str]) -> list[str]:
        return [w for w in self.known if w not in exclude]


@dataclass
class PoolWorker:
    worker_id: str
    instance: Any
    plane: DataPlane
    server: PartitionServer
    coordinator: Coordinator


class LocalPool:
    """``size`` workers of a partitioned model (``max_partitions`` unless said), as a pool
    deployed that wide, over one :class:`Loopback`. Worker 0 coordinates every request."""

    def __init__(self, definition: Definition, size: int | None = None) -> None:
        if not definition.partitioned:
            raise ValueError(f"{definition.spec.name} is not a partitioned model")
        self.definition = definition
        self.size = size or definition.spec.partitions
        self.loopback = Loopback()
        self.workers: list[PoolWorker] = []

    async def set_up(self) -> None:
        """Instantiate the model once per worker and run its ``setup()``, as each worker
        does before it reports ready."""
        spec = self.definition.spec
        nc = cast("NATS", self.loopback)
        ids = [f"local{i}" for i in range(self.size)]
        for worker_id in ids:
            instance = self.definition.target()
            setup = getattr(instance, "setup", None)
            if setup is not None:
                await run_hook(setup)
            plane = DataPlane(nc, spec.name, worker_id)
            peers = PoolPeers(nc, spec, ids)
            self.workers.append(
                PoolWorker(
                    worker_id,
                    instance,
                    plane,
                    PartitionServer(nc, spec, worker_id, instance, plane, peers),
                    Coordinator(nc, spec, worker_id, instance, plane, peers),
                )
            )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve partitions and host the coordinators' cleanups until cancelled."""
        if not self.workers:
            await self.set_up()
        try:
            async with anyio.create_task_group() as tg:
                for w in self.workers:
                    await w.plane.start()
                    await tg.start(w.server.run)
                    await tg.start(w.coordinator.run)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                for w in self.workers:
                    await w.plane.stop()

    async def coordinate(self, event: Any, ctx: Context) -> Any:
        """The function's handler, as a deployed worker's: plan, run the partitions, combine."""
        return await self.workers[0].coordinator.coordinate(event, ctx)
