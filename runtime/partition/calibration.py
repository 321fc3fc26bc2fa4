"""One cost model per cluster: measured by a controller, shared with every worker through KV.

Measuring both channels takes a few hundred milliseconds of traffic; doing it in every
worker as a pool starts would measure the workers' own start-up contention instead of the
wire. A controller measures at start (and ``shoal calibrate`` on demand) and stores the fit
in the ``shoal_dataplane`` bucket; workers follow that key and use defaults until it exists.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import msgpack

from runtime.partition.channels import headers, publish_inline
from runtime.partition.costmodel import CostModel, Link, fit
from runtime.partition.dataplane import DataPlane
from runtime.wire import protocol
from runtime.wire.connection import kv
from runtime.wire.kvwatch import Change, Follower

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

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
        return await calibrate(plane)
    finally:
        await plane.stop()


async def calibrate(plane: DataPlane, *, repeats: int = 3) -> CostModel:
    """Measure both of ``plane``'s channels and fit its cost model to what was seen."""
    inline = await _measure_inline(plane, repeats)
    obj: Link | None = None
    if plane.store is not None:
        try:
            obj = await _measure_object(plane, repeats)
        except Exception as e:
            log.warning("object store unusable for intermediates (%s); inline only", e)
            plane.avoid_object_store()
            obj = plane.cost.object
    plane.set_cost(CostModel(inline=inline, object=obj, calibrated=True))
    log.info("data plane calibrated: %s", plane.cost.describe())
    return plane.cost


async def _measure_inline(plane: DataPlane, repeats: int) -> Link:
    """Time payloads from ``plane`` to its own inbox, chunked as intermediates are."""
    run = "cal-" + uuid.uuid4().hex[:12]
    box = plane.mailbox(run, 0)
    samples: list[tuple[int, float]] = []
    try:
        step = 0
        for size in (1024, 64 * 1024, 1 << 20, 4 << 20):
            body = _noise(size)
            for _ in range(repeats):
                start = time.perf_counter()
                await publish_inline(plane.nc, plane.inbox, body, headers("data", run, step, 0, 0))
                await box.take((step, 0))
                samples.append((size, time.perf_counter() - start))
                step += 1
    finally:
        plane.drop(run, 0)
    return fit(samples)


async def _measure_object(plane: DataPlane, repeats: int) -> Link:
    """Time a write and a read of payloads through ``plane``'s object store."""
    store = plane.store
    assert store is not None
    samples: list[tuple[int, float]] = []
    run = "cal-" + uuid.uuid4().hex[:12]
    prefix = plane.object_prefix(run)
    try:
        for size in (1024, 1 << 20, 4 << 20):
            body = _noise(size)
            for i in range(repeats):
                key = f"{prefix}{size}_{i}"
                start = time.perf_counter()
                ref = await store.put_bytes(key, body)
                await store.get_bytes(ref)
                samples.append((size, time.perf_counter() - start))
                await store.delete(key)
    finally:
        with anyio.CancelScope(shield=True):
            await plane.sweep(run)
    return fit(samples)


def _noise(size: int) -> bytes:
    # Incompressible, so calibration measures the wire and not zlib.
    return os.urandom(size)


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
