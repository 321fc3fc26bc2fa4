"""The data plane and its cost model, against a real nats-server (and a real S3 server)."""

from __future__ import annotations

import uuid
import zlib
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np
import pytest

from runtime import PartitionLost
from runtime.partition import calibration
from runtime.partition.channels import ZLIB
from runtime.partition.costmodel import CostModel, Link, Prices, fit, maybe_compress
from runtime.partition.dataplane import DataPlane
from storage import AsyncObjectStore

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from tests.conftest import S3Server

pytestmark = pytest.mark.anyio


# -- the cost model ---------------------------------------------------------------------------


def test_fit_recovers_latency_and_bandwidth() -> None:
    link = Link(latency_s=0.002, bytes_per_s=100e6)
    samples = [(n, link.seconds(n)) for n in (1_000, 100_000, 1_000_000, 8_000_000) for _ in "ab"]
    got = fit(samples)
    assert got.latency_s == pytest.approx(0.002, rel=1e-6)
    assert got.bytes_per_s == pytest.approx(100e6, rel=1e-6)
    # A slow outlier at one size does not tilt the line: medians per size come first.
    noisy = [*samples, (1_000_000, 5.0)]
    assert fit(noisy).bytes_per_s == pytest.approx(100e6, rel=1e-6)
    with pytest.raises(ValueError):
        fit([(10, 0.1), (10, 0.2)])


def test_choose_takes_the_cheaper_predicted_path() -> None:
    model = CostModel(inline=Link(0.0005, 50e6), object=Link(0.010, 500e6))
    assert model.choose(1_000) == "inline"  # latency dominates
    assert model.choose(64 << 20) == "object"  # bandwidth dominates
    crossover = next(n for n in (2**k for k in range(10, 30)) if model.choose(n) == "object")
    assert model.seconds("object", crossover) <= model.seconds("inline", crossover)
    assert CostModel(object=None).choose(1 << 30) == "inline"  # no store: always inline


def test_compression_only_when_it_pays() -> None:
    zeros = np.zeros(1 << 20, dtype=np.float32).tobytes()
    noise = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    slow, instant = Link(0.001, 10e6), Link(0.001, 1e15)
    packed, compressed = maybe_compress(zeros, slow)
    assert compressed and len(packed) < len(zeros) // 50
    assert zlib.decompress(packed) == zeros
    assert maybe_compress(noise, slow) == (noise, False)  # incompressible
    assert maybe_compress(zeros, instant) == (zeros, False)  # the wire is faster than zlib
    assert maybe_compress(b"\0" * 100, slow) == (b"\0" * 100, False)  # too small to bother


def test_money_model_counts_chunks_and_requests() -> None:
    prices = Prices()
    one = prices.queue_cost(messages=1, nbytes=0)
    assert one == pytest.approx((0.50 + 3 * 0.40) / 1e6)
    # 1 MB is 16 more 64 KB chunks, each a publish and three queue requests, plus bytes.
    assert prices.queue_cost(1, 1 << 20) > 16 * one
    assert prices.object_cost(1000) == pytest.approx(0.005 + 0.0004)


# -- the data plane on a real NATS server ----------------------------------------------------


async def planes(nc: NATS, store: Any = None) -> tuple[DataPlane, DataPlane]:
    a = DataPlane(nc, "dp", "a", store)
    b = DataPlane(nc, "dp", "b", store)
    await a.start()
    await b.start()
    return a, b


async def test_early_messages_wait_for_their_partition(nc: NATS) -> None:
    a, b = await planes(nc)
    # Steps arrive out of order, and before partition 1 of the run exists on b.
    for step in (2, 0, 1):
        await a.send("b", "r1", step, 0, 1, {"step": step, "x": np.arange(3) * step})
    await a.send("b", "r1", 3, 0, 1, None)  # nothing for you
    await nc.flush()
    box = b.mailbox("r1", 1)
    with anyio.fail_after(5):
        for step in (0, 1, 2):
            got = await b.receive(box, step, 0)
            assert got["step"] == step and got["x"].tolist() == [0, step, 2 * step]
        assert await b.receive(box, 3, 0) is None


async def test_large_payloads_are_chunked_and_compressible_ones_compressed(nc: NATS) -> None:
    a, b = await planes(nc)
    a.cost = CostModel(inline=Link(0.001, 10e6), object=None)  # a slow wire: zlib pays
    big = np.random.default_rng(1).standard_normal(600_000)  # 4.8 MB > 1 MB max payload
    sent = await a.send("b", "r2", 0, 0, 1, big)
    assert sent.messages >= 5 and sent.objects == 0
    sparse = np.zeros(500_000, dtype=np.float32)
    headers: list[dict[str, str]] = []

    async def spy(msg: Any) -> None:
        headers.append(dict(msg.headers or {}))

    await nc.subscribe("shoal.px.dp.b", cb=spy)
    await a.send("b", "r2", 1, 0, 1, sparse)
    box = b.mailbox("r2", 1)
    with anyio.fail_after(10):
        assert np.array_equal(await b.receive(box, 0, 0), big)
        assert np.array_equal(await b.receive(box, 1, 0), sparse)
    assert any(h.get(ZLIB) == "1" for h in headers)


async def test_abort_wakes_every_waiter_with_the_error(nc: NATS) -> None:
    a, b = await planes(nc)
    box = b.mailbox("r3", 0)
    outcome: list[BaseException] = []

    async def wait() -> None:
        try:
            await b.receive(box, 0, 1)
        except PartitionLost as e:
            outcome.append(e)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await a.abort(["b"], "r3", PartitionLost("partition 1 went away"))
    assert "went away" in str(outcome[0])
    # A partition of that run that starts only now fails at once too.
    with pytest.raises(PartitionLost):
        await b.receive(b.mailbox("r3", 2), 0, 0)


async def test_an_aborted_run_still_hears_its_partitions_stop(nc: NATS) -> None:
    """After an abort, taking from the run's mailbox fails at once, but the coordinator's
    cleanup can still wait for each partition's last word (its error, as it stops)."""
    a, b = await planes(nc)
    box = b.mailbox("r5", 2)  # the coordinator's box of a run with partitions 0 and 1
    await a.abort(["b"], "r5", PartitionLost("partition 0 went away"))
    with anyio.fail_after(5):
        while box.error is None:  # the abort crosses NATS
            await box.waiting.setdefault((0, 0), anyio.Event()).wait()
    with pytest.raises(PartitionLost):
        await box.take((-1, 1))
    arrived: list[bool] = []

    async def settle(i: int) -> None:
        await box.settle((-1, i))
        arrived.append((-1, i) in box.ready)  # it returned for the answer, not the abort

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(settle, 1)
            await a.send_error("b", "r5", 1, 2, PartitionLost("stopped"))
    assert arrived == [True]
    with pytest.raises(PartitionLost, match="stopped"):
        await b.open(box.ready.pop((-1, 1)))


async def test_object_channel_deletes_what_it_read(nc: NATS, s3_server: S3Server) -> None:
    store = AsyncObjectStore.from_settings(s3_server.settings(bucket=f"dp-{uuid.uuid4().hex[:8]}"))
    await store.ensure_bucket()
    a, b = await planes(nc, store)
    value = np.arange(100_000, dtype=np.int64)
    sent = await a.send("b", "r4", 0, 0, 1, value, channel="object")
    assert sent.objects == 1
    key = a.object_prefix("r4") + "0/1_0"
    assert await store.exists(key)
    with anyio.fail_after(10):
        assert np.array_equal(await b.receive(b.mailbox("r4", 1), 0, 0), value)
    assert not await store.exists(key)


async def test_calibration_is_measured_and_followed(nc: NATS, s3_server: S3Server) -> None:
    store = AsyncObjectStore.from_settings(s3_server.settings(bucket=f"dp-{uuid.uuid4().hex[:8]}"))
    model = await calibration.measure(nc, store)
    assert model.calibrated and model.object is not None
    assert model.inline.latency_s > 0 and model.inline.bytes_per_s > 1e6
    assert not [o async for o in _objects(store)]  # calibration leaves nothing behind
    worker, _ = await planes(nc)
    assert not worker.cost.calibrated
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            updated = worker.cost_updated
            tg.start_soon(calibration.follow, nc, worker)
            await calibration.publish(nc, model)
            await updated.wait()
            tg.cancel_scope.cancel()
    assert worker.cost.inline == model.inline
    assert worker.cost.object is None  # this worker has no store: inline only


async def _objects(store: AsyncObjectStore) -> Any:
    client = store.store.client
    for o in await anyio.to_thread.run_sync(
        lambda: list(client.list_objects(store.bucket, recursive=True))
    ):
        yield o.object_name
