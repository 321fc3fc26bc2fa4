"""One cost model per cluster: measured by a controller, shared with every worker through KV.

Measuring both channels takes a few hundred milliseconds of traffic; doing it in every
worker as a pool starts would measure the workers' own start-up contention instead of the
wire. A controller measures at start (and ``shoal calibrate`` on demand) and stores the fit
in the ``shoal_dataplane`` bucket; workers follow that key and use defaults until it exists.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import msgpack
from nats.aio.client import Client as NATS

from runtime.partition.costmodel import CostModel, Link
from runtime.partition.dataplane import DataPlane
from runtime.wire import protocol
from runtime.wire.connection import kv
from runtime.wire.kvwatch import Change, Follower

log = logging.getLogger("shoal.calibration")

KEY = "cost"


def to_wire(model: CostModel) -> bytes:
    links = {"inline": model.inline, "object": model.object}
    return msgpack.packb(  # type: ignore[no-any-return]
        {k: [v.latency_s, v.bytes_per_s] if v else None for k, v in links.items()}
    )


def from_wire(data: bytes) -> CostModel:
    d = msgpack.unpackb(data, raw=False)
    obj = d.get("object")
    return CostModel(inline=Link(*d["inline"]), object=Link(*obj) if obj else None, calibrated=True)


async def measure(nc: NATS, store: Any | None) -> CostModel:
    """Time both channels through this cluster's NATS and object store, and fit the model."""
    plane = DataPlane(nc, "calibration", uuid.uuid4().hex[:12], store)
    await plane.start()
    try:
        if store is not None:
            await store.ensure_bucket()
        return await plane.calibrate()
    finally:
        await plane.stop()


async def publish(nc: NATS, model: CostModel) -> None:
    bucket = await kv(nc.jetstream(), protocol.DATAPLANE_BUCKET)
    await bucket.put(KEY, to_wire(model))


async def follow(nc: NATS, plane: DataPlane) -> None:
    """Keep ``plane.cost`` at the cluster's latest calibration (runs until cancelled)."""
    bucket = await kv(nc.jetstream(), protocol.DATAPLANE_BUCKET)

    def on_change(change: Change) -> None:
        if change.deleted:
            return  # keep the last fit: a calibration is never withdrawn, only replaced
        try:
            model = from_wire(change.value)
        except Exception as e:
            log.warning("ignoring an unreadable cost model: %s", e)
            return
        if plane.store is None:  # this worker cannot use the object channel
            model = CostModel(inline=model.inline, object=None, calibrated=True)
        plane.set_cost(model)
        log.info("data plane cost model: %s", model.describe())

    await Follower(bucket, on_change, keys=KEY).run()
