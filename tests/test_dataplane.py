"""The data plane and its cost model, against a real nats-server (and a real S3 server)."""

from __future__ import annotations

import re
import uuid
import zlib
from typing import TYPE_CHECKING, Any

import anyio
import msgpack
import numpy as np
import pytest

from runtime import PartitionLost
from runtime.partition import calibration
from runtime.partition.channels import ZLIB
from runtime.partition.costmodel import CostModel, Link, Prices, between, fit, maybe_compress
from runtime.partition.dataplane import DataPlane
from runtime.partition.peers import Peers
from runtime.partition.server import PartitionServer
from runtime.wire import protocol
from runtime.wire.connection import kv
from runtime.wire.spec import FunctionSpec
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


# -- one model per pair of hosts ---------------------------------------------------------------


def test_host_names_make_safe_reversible_pair_keys() -> None:
    hosts = ["host-a", "gpu-1.example.com", "a=2E", "a.2E", "ünï", "h_1", "x y"]
    keys = {calibration.pair_key(h, "b") for h in hosts}
    assert len(keys) == len(hosts)  # distinct hosts, distinct keys
    for h in hosts:
        token = calibration.host_token(h)
        assert re.fullmatch(r"[A-Za-z0-9_=-]+", token), token  # one token of a NATS KV key
        assert calibration.token_host(token) == h
        assert calibration.read_pair_key(calibration.pair_key(h, "host-b")) == (h, "host-b")
    assert calibration.pair_key("gpu-1.x", "b") == "pair.gpu-1=2Ex.b"
    assert calibration.read_pair_key(calibration.KEY) is None
    assert calibration.read_pair_key("pair.a") is None


def test_the_model_of_a_pair_of_hosts_wins_over_the_clusters() -> None:
    cluster = CostModel(inline=Link(0.0004, 400e6), object=Link(0.006, 250e6))
    wan = CostModel(inline=Link(0.002, 5e6), object=Link(0.01, 500e6))
    pairs = {("h1", "h2"): wan}
    assert between(cluster, pairs, "h1", "h2") is wan
    assert between(cluster, pairs, "h2", "h1") is cluster  # a pair is one direction
    assert between(cluster, pairs, "h1", "h1") is cluster  # same host, not measured
    assert between(cluster, pairs, None, "h2") is cluster  # a host not known (yet)
    assert between(cluster, pairs, "h1", None) is cluster
    assert wan.choose(4 << 20) == "object" and cluster.choose(4 << 20) == "inline"


async def test_each_message_takes_the_channel_its_pair_of_hosts_favours(
    nc: NATS, s3_server: S3Server
) -> None:
    store = AsyncObjectStore.from_settings(s3_server.settings(bucket=f"dp-{uuid.uuid4().hex[:8]}"))
    await store.ensure_bucket()
    a, b = await planes(nc, store)
    c = DataPlane(nc, "dp", "c", store)
    await c.start()
    where = {"a": "h1", "b": "h2", "c": "h1"}
    a.host_of = where.get
    # Cluster-wide (and so on h1 itself): a fast wire, object never pays. h1 -> h2: a slow
    # link, where the object store wins for large payloads.
    a.set_cost(CostModel(inline=Link(0.0004, 1e9), object=Link(0.05, 1e8), calibrated=True))
    slow = CostModel(inline=Link(0.002, 2e6), object=Link(0.01, 1e9), calibrated=True)
    a.set_cost(slow, ("h1", "h2"))
    assert a.cost_to("b") is slow and a.cost_to("c") is a.cost
    value = np.random.default_rng(2).standard_normal(250_000)  # 2 MB, incompressible
    to_b = await a.send("b", "r6", 0, 0, 1, value)
    to_c = await a.send("c", "r6", 0, 0, 2, value)
    assert to_b.objects == 1 and to_c.objects == 0
    small = await a.send("b", "r6", 1, 0, 1, {"x": 1})
    assert small.objects == 0  # latency dominates: inline even on the slow pair
    with anyio.fail_after(10):
        assert np.array_equal(await b.receive(b.mailbox("r6", 1), 0, 0), value)
        assert np.array_equal(await c.receive(c.mailbox("r6", 2), 0, 0), value)
        assert await b.receive(b.mailbox("r6", 1), 1, 0) == {"x": 1}


async def test_a_pair_is_measured_through_its_peer_and_shared(
    nc: NATS, s3_server: S3Server
) -> None:
    store = AsyncObjectStore.from_settings(s3_server.settings(bucket=f"dp-{uuid.uuid4().hex[:8]}"))
    await store.ensure_bucket()
    spec = FunctionSpec(name="dp")
    a, b = await planes(nc, store)
    workers = await kv(nc.jetstream(), protocol.WORKERS_BUCKET)
    for worker, host in (("a", "host-1"), ("b", "host.2")):
        info = {"id": worker, "state": "ready", "version": spec.version, "host": host}
        await workers.put(f"dp.{worker}", msgpack.packb(info))
    peers = Peers(nc, spec)
    a.host_of = peers.host_of
    server = PartitionServer(nc, spec, "b", None, b, Peers(nc, spec))  # b answers pings
    pings: list[int] = []

    async def spy(msg: Any) -> None:
        pings.append(len(msg.data))

    await nc.subscribe("shoal.part.dp.b", cb=spy)
    follower, _ = await planes(nc)  # another worker, following the bucket (no store)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(server.run)
            tg.start_soon(peers.run)
            tg.start_soon(calibration.follow, nc, follower)
            tg.start_soon(calibration.measure_pairs, a, peers)
            while ("host-1", "host.2") not in follower.pair_costs:
                await follower.cost_updated.wait()
            tg.cancel_scope.cancel()
    model = a.pair_costs[("host-1", "host.2")]
    assert model.calibrated and model.object is not None
    assert model.inline.latency_s > 0 and model.inline.bytes_per_s > 1e6
    assert max(pings) > 512 * 1024  # payloads went through the peer itself
    assert follower.pair_costs[("host-1", "host.2")].inline == model.inline
    assert follower.pair_costs[("host-1", "host.2")].object is None  # no store here
    assert ("host.2", "host-1") not in a.pair_costs  # b measures its own direction
    stored = await calibration.models(nc)
    assert stored["pair.host-1.host=2E2"].inline == model.inline
    assert not [o async for o in _objects(store)]  # measuring leaves nothing behind
