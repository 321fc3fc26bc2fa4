"""Partitioned models on a real cluster: a real nats-server, process workers and a real S3
server (SeaweedFS). Partitions exchange intermediates worker to worker. Beside the served
tests, the same models in process (runtime.testing.TestApp) give the same answers."""

from __future__ import annotations

import os
import signal
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import msgpack
import numpy as np
import pytest

from controller import deploy_file
from runtime import (
    Client,
    IntermediateStoreError,
    InvalidPayload,
    ModelTooLarge,
    PartitionLost,
    ShoalError,
)
from runtime.testing import TestApp
from tests.conftest import FNS, Cluster, S3Server, wait_workers
from tests.fns.partitioned import AllSum, Chain

if TYPE_CHECKING:
    from pathlib import Path

    from storage import S3Settings

pytestmark = pytest.mark.anyio

MODELS = FNS / "partitioned.py"
PREFIX = "intermediates/"


def expected_allsum(partitions: int, n: int, steps: int) -> list[np.ndarray]:
    """The all-reduce computed in one place, the plain way."""
    xs = [np.arange(n, dtype=np.float64) * (i + 1) for i in range(partitions)]
    for _ in range(steps):
        total = sum(xs, np.zeros(n))
        xs = [total.copy() for _ in xs]
    return xs


def expected_chain(x: list[float], stages: int) -> list[float]:
    """The pipeline computed in one place: each stage doubles and adds its index."""
    y = np.asarray(x, dtype=np.float64)
    for stage in range(stages):
        y = y * 2 + stage
    return y.tolist()  # type: ignore[no-any-return]


def use_store(monkeypatch: pytest.MonkeyPatch, server: S3Server, bucket: str) -> S3Settings:
    """Point the workers (spawned after this) at ``server``, in a bucket of their own."""
    monkeypatch.setenv("SHOAL_S3_ENDPOINT", server.endpoint)
    monkeypatch.setenv("SHOAL_S3_ACCESS_KEY", server.access_key)
    monkeypatch.setenv("SHOAL_S3_SECRET_KEY", server.secret_key)
    monkeypatch.setenv("SHOAL_S3_BUCKET", bucket)
    return server.settings(bucket=bucket)


def leftovers(server: S3Server, bucket: str) -> list[str]:
    client = server.raw_client()
    if not client.bucket_exists(bucket):
        return []
    return [o.object_name for o in client.list_objects(bucket, prefix=PREFIX, recursive=True)]


async def swept(server: S3Server, bucket: str, timeout: float = 15.0) -> list[str]:
    """What is left under the intermediates once a failed run's cleanup has had its chance.

    A coordinator answers first and sweeps a failed run beside the answer (after waiting up to
    DRAIN_GRACE for its partitions to stop), so the store is checked until it is empty, or
    until ``timeout`` and then what is left is returned."""
    with anyio.move_on_after(timeout):
        # The sweep runs in a worker process and tells nobody: the store itself is polled.
        while True:
            left = leftovers(server, bucket)
            if not left:
                return left
            await anyio.sleep(0.2)
    return leftovers(server, bucket)


async def first_intermediate(cluster: Cluster, kind: str = "data") -> Any:
    """Subscribe to the data plane; the returned event is set once a ``kind`` message passed."""
    seen = anyio.Event()

    async def on_message(msg: Any) -> None:
        if (msg.headers or {}).get("Shoal-Px") == kind:
            seen.set()

    sub = await cluster.nc.subscribe("shoal.px.allsum.>", cb=on_message)
    return seen, sub


async def deploy(cluster: Cluster, **options: Any) -> None:
    await deploy_file(
        cluster.nc, MODELS, overrides={"allsum": options, "chain": options} if options else None
    )


async def test_partitioned_equals_monolithic(cluster: Cluster) -> None:
    await deploy(cluster)
    client = Client(cluster.nc)
    for partitions in (1, 2, 3, 4):
        out = await client.call("allsum", {"partitions": partitions, "n": 64, "steps": 4})
        want = expected_allsum(partitions, 64, 4)
        assert out["sums"] == [float(x.sum()) for x in want]
        assert out["first"] == want[0][:4].tolist()
        assert (out["sent_bytes"] > 0) == (partitions > 1)
    # A pipeline of stages: each doubles and adds its index.
    out = await client.call("chain", {"partitions": 3, "x": [1, 2, 3]})
    assert out == {"x": expected_chain([1, 2, 3], 3)}


async def test_in_process_equals_monolithic() -> None:
    async with TestApp(AllSum) as app:
        for partitions in (1, 2, 3, 4):
            out = await app.call({"partitions": partitions, "n": 64, "steps": 4})
            want = expected_allsum(partitions, 64, 4)
            assert out["sums"] == [float(x.sum()) for x in want]
            assert out["first"] == want[0][:4].tolist()
            assert (out["sent_bytes"] > 0) == (partitions > 1)
            assert out["sent_objects"] == 0  # no object store in process: all inline
        # 200,000 float64 = 1.6 MB per message, chunked at the 1 MB max payload as deployed.
        out = await app.call({"partitions": 3, "n": 200_000, "steps": 2})
        assert out["sums"] == [float(x.sum()) for x in expected_allsum(3, 200_000, 2)]
        with pytest.raises(ModelTooLarge, match=r"use partitions=3 or more"):
            await app.call({"partitions": 1, "model_bytes": 3 << 20})
    async with TestApp(Chain) as app:
        for stages in (1, 2, 3):
            out = await app.call({"partitions": stages, "x": [1, 2, 3]})
            assert out == {"x": expected_chain([1, 2, 3], stages)}


async def test_nothing_for_you_and_early_messages(cluster: Cluster) -> None:
    """Sparse exchanges send explicit "nothing" messages; results still match."""
    await deploy(cluster)
    client = Client(cluster.nc)
    out = await client.call("allsum", {"partitions": 4, "n": 16, "steps": 6, "sparse": True})
    xs = [np.arange(16, dtype=np.float64) * (i + 1) for i in range(4)]
    for _ in range(6):  # each partition adds its left neighbour's array only
        xs = [xs[i] + xs[(i - 1) % 4] for i in range(4)]
    assert out["sums"] == [float(x.sum()) for x in xs]


async def test_memory_budget_refuses_unpartitioned_and_serves_partitioned(
    cluster: Cluster,
) -> None:
    await deploy(cluster)
    client = Client(cluster.nc)
    with pytest.raises(ModelTooLarge, match=r"use partitions=3 or more"):
        await client.call("allsum", {"partitions": 1, "model_bytes": 3 << 20})
    with pytest.raises(ModelTooLarge, match=r"max_partitions >= 5"):
        await client.call("allsum", {"partitions": 4, "model_bytes": 5 << 20})
    out = await client.call("allsum", {"partitions": 3, "model_bytes": 3 << 20, "n": 4})
    assert len(out["sums"]) == 3
    with pytest.raises(InvalidPayload, match="1 to 4 partitions"):
        await client.call("allsum", {"partitions": 5})


@pytest.mark.parametrize("channel", ["inline", "object"])
async def test_forced_channels_give_the_same_answer_and_leave_nothing(
    cluster: Cluster, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, channel: str
) -> None:
    bucket = f"px-{uuid.uuid4().hex[:10]}"
    use_store(monkeypatch, s3_server, bucket)
    await deploy(cluster, channel=channel)
    client = Client(cluster.nc)
    # 200,000 float64 = 1.6 MB per message: above NATS's 1 MB payload, so inline chunks it.
    out = await client.call("allsum", {"partitions": 3, "n": 200_000, "steps": 2}, timeout=60)
    want = expected_allsum(3, 200_000, 2)
    assert out["sums"] == [float(x.sum()) for x in want]
    if channel == "object":
        assert out["sent_objects"] == 3 * 2 * 2  # 3 partitions, 2 peers, 2 steps
    else:
        assert out["sent_objects"] == 0
    assert leftovers(s3_server, bucket) == []


async def test_auto_channel_picks_per_message(
    cluster: Cluster, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small intermediates go inline; whatever auto picks, the answer is right and the
    bucket is left empty."""
    bucket = f"px-{uuid.uuid4().hex[:10]}"
    use_store(monkeypatch, s3_server, bucket)
    await deploy(cluster)
    client = Client(cluster.nc)
    small = await client.call("allsum", {"partitions": 2, "n": 8, "steps": 2})
    assert small["sent_objects"] == 0
    big = await client.call("allsum", {"partitions": 2, "n": 1_000_000, "steps": 1}, timeout=60)
    assert big["sums"] == [float(x.sum()) for x in expected_allsum(2, 1_000_000, 1)]
    assert leftovers(s3_server, bucket) == []


async def first_task(cluster: Cluster) -> Any:
    """Sniff the coordinator's hand-outs: the first one names the run's workers."""
    tasks: list[dict[str, Any]] = []
    seen = anyio.Event()

    async def on_task(msg: Any) -> None:
        task = msgpack.unpackb(msg.data)
        if task.get("op") == "run" and not tasks:
            tasks.append(task)
            seen.set()

    sub = await cluster.nc.subscribe("shoal.part.allsum.>", cb=on_task)
    return tasks, seen, sub


@pytest.mark.parametrize("victim", ["partition", "coordinator"])
async def test_a_worker_killed_mid_run_completes_or_fails_clearly(
    cluster: Cluster, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, victim: str
) -> None:
    """A partition's worker dies: the coordinator notices at once (its connection closed),
    stops the run, sweeps its objects and runs it again on live workers. The coordinator's
    worker dies: the durable event is redelivered and served by another worker."""
    bucket = f"px-{uuid.uuid4().hex[:10]}"
    use_store(monkeypatch, s3_server, bucket)
    await deploy(cluster, channel="object", ack_wait=3.0)
    workers = await wait_workers(cluster.nc, "allsum", lambda e: len(e) >= 4)
    pids = {w["id"]: w["pid"] for w in workers.values()}
    client = Client(cluster.nc)
    request = {"partitions": 3, "n": 1000, "steps": 30, "delay": 0.05}
    tasks, handed_out, sub = await first_task(cluster)
    seen, data_sub = await first_intermediate(cluster, "ref")
    outcome: list[Any] = []

    async def call() -> None:
        try:
            if victim == "partition":
                outcome.append(await client.call("allsum", request, timeout=20))
            else:
                rid = await client.publish("allsum", request)
                outcome.append(await client.wait_result(rid, timeout=40))
        except ShoalError as e:
            outcome.append(e)

    with anyio.fail_after(45):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await handed_out.wait()
            await seen.wait()  # the run is exchanging intermediates
            task = tasks[0]
            coordinator = task["coordinator"]
            others = [w for w in task["roster"] if w != coordinator]
            os.kill(pids[coordinator if victim == "coordinator" else others[0]], signal.SIGKILL)
    await sub.unsubscribe()
    await data_sub.unsubscribe()
    result = outcome[0]
    if victim == "coordinator" and not isinstance(result, ShoalError):
        result = result.value if result.ok else ShoalError.from_wire(result.value)
    if isinstance(result, ShoalError):  # allowed, as long as it says what happened
        assert isinstance(result, PartitionLost), result
        assert "went away" in str(result) or "did not answer" in str(result)
    else:
        assert result["sums"] == [float(x.sum()) for x in expected_allsum(3, 1000, 30)]
    # The dead worker's orphans are swept by the run that noticed, or by the lifecycle rule
    # when nobody did (a coordinator killed mid-run): only the partition case is certain.
    if victim == "partition":
        assert await swept(s3_server, bucket) == []


async def test_object_store_down_is_a_clear_error(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The S3 server stops during a run whose intermediates go through it."""
    from tests.storage.conftest import _seaweedfs

    gen = _seaweedfs(tmp_path)
    server = next(gen)
    use_store(monkeypatch, server, f"px-{uuid.uuid4().hex[:10]}")
    await deploy(cluster, channel="object")
    client = Client(cluster.nc)
    out = await client.call("allsum", {"partitions": 2, "n": 8, "steps": 1})
    assert out["sent_objects"] == 2
    seen, sub = await first_intermediate(cluster, "ref")
    outcome: list[Any] = []

    async def call() -> None:
        request = {"partitions": 2, "n": 8, "steps": 200, "delay": 0.02}
        try:
            outcome.append(await client.call("allsum", request, timeout=15))
        except ShoalError as e:
            outcome.append(e)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await seen.wait()  # the run is moving objects through the store
            gen.close()  # kills the S3 server
    await sub.unsubscribe()
    assert isinstance(outcome[0], IntermediateStoreError), outcome[0]
    assert "object store" in str(outcome[0]) or "intermediate" in str(outcome[0])
    # And a run that starts with the store down fails the same way, at once.
    with anyio.fail_after(20), pytest.raises(IntermediateStoreError, match="object store"):
        await client.call("allsum", {"partitions": 2, "n": 8, "steps": 1}, timeout=15)


async def test_workers_serving_partitions_report_the_work(cluster: Cluster) -> None:
    """Heartbeats count partitions served for other coordinators, so the controller never
    takes a worker in the middle of a run for an idle one."""
    await deploy(cluster)
    await wait_workers(cluster.nc, "allsum", lambda e: len(e) >= 4)
    client = Client(cluster.nc)
    request = {"partitions": 4, "n": 8, "steps": 60, "delay": 0.05}
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(client.call, "allsum", request, timeout=25))
            busy = await wait_workers(
                cluster.nc,
                "allsum",
                lambda e: len(e) >= 4 and all(w["inflight"] >= 1 for w in e.values()),
            )
    assert all(w["idle_for"] == 0 for w in busy.values())
