"""A worker's two roles for a partitioned model, in one place: coordinating requests
(:mod:`runtime.partition.coordinator`) and serving partitions (:mod:`runtime.partition.server`).

Every worker of a partitioned model does both, on what they share: the data plane for
intermediates (:mod:`runtime.partition.dataplane`), the view of the other workers
(:mod:`runtime.partition.peers`) and the cluster's cost model
(:mod:`runtime.partition.calibration`). Coordinators and workers talk in
:mod:`runtime.partition.messages`; the controller is not on that path.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio

from runtime import config
from runtime.partition import calibration
from runtime.partition.coordinator import Coordinator
from runtime.partition.dataplane import DataPlane
from runtime.partition.peers import Peers
from runtime.partition.server import PartitionServer
from runtime.worker.invoker import run_hook

if TYPE_CHECKING:
    from anyio.abc import TaskStatus
    from nats.aio.client import Client as NATS

    from runtime.context import Context
    from runtime.wire.spec import FunctionSpec

log = logging.getLogger("shoal.partitions")


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
        self.plane = plane
        self.peers = Peers(nc, spec, heartbeat=heartbeat)
        plane.host_of = self.peers.host_of  # the data plane's cost model is per pair of hosts
        self.server = PartitionServer(
            nc, spec, worker_id, instance, plane, self.peers, on_idle=self._wake_drain
        )
        self.coordinator = Coordinator(
            nc, spec, worker_id, instance, plane, self.peers, on_idle=self._wake_drain
        )
        self._idle = anyio.Event()

    @property
    def inflight(self) -> int:
        """Partitions this worker is serving now (for other coordinators or its own)."""
        return self.server.inflight

    @property
    def idle_for(self) -> float:
        return self.server.idle_for

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self.plane.start()
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.server.run)
                await tg.start(self.coordinator.run)
                tg.start_soon(self.peers.run)
                tg.start_soon(self._calibrate)
                tg.start_soon(calibration.measure_pairs, self.plane, self.peers)
                tg.start_soon(self._collect_garbage)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                await self.plane.stop()

    async def coordinate(self, event: Any, ctx: Context) -> Any:
        """The handler of a partitioned function: plan, run the partitions, combine."""
        return await self.coordinator.coordinate(event, ctx)

    async def drain(self, timeout: float) -> None:
        """Refuse new partitions and wait (up to ``timeout``) for the running ones, and for
        the cleanup of failed runs."""
        self.server.draining = True
        with anyio.move_on_after(timeout):
            while self.server.inflight or self.coordinator.cleanups:
                await self._idle.wait()

    def _wake_drain(self) -> None:
        self._idle.set()
        self._idle = anyio.Event()

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
    if not config.S3_ENDPOINT.is_set():
        return None
    from storage import AsyncObjectStore, S3Settings

    return AsyncObjectStore.from_settings(S3Settings.from_env())
