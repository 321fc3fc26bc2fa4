"""What a worker's two roles for a partitioned model share: the connection, the model, the
data plane and the peers (:class:`~runtime.partition.coordinator.Coordinator` coordinates
requests, :class:`~runtime.partition.server.PartitionServer` serves partitions)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from nats.aio.client import Client as NATS

    from runtime.partition.dataplane import DataPlane
    from runtime.partition.peers import Peers
    from runtime.wire.spec import FunctionSpec


def _nothing() -> None:
    pass


class Role:
    """One worker's part in serving ``instance``, a partitioned model deployed as ``spec``."""

    def __init__(
        self,
        nc: NATS,
        spec: FunctionSpec,
        worker_id: str,
        instance: Any,
        plane: DataPlane,
        peers: Peers,
        *,
        on_idle: Callable[[], None] = _nothing,
    ) -> None:
        self.nc = nc
        self.spec = spec
        self.worker_id = worker_id
        self.instance = instance
        self.plane = plane
        self.peers = peers
        self._on_idle = on_idle  # called as each piece of work ends
        self._start()

    def _start(self) -> None:
        """Set up the role's own state (called once, at the end of ``__init__``)."""
