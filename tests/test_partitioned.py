"""Partitioned models on a real cluster: a real nats-server, process workers and a real S3
server (SeaweedFS). Partitions exchange intermediates worker to worker."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import anyio
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
from storage import S3Settings
from tests.conftest import FNS, Cluster, S3Server, wait_workers

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
    x = np.array([1.0, 2.0, 3.0])
    for stage in range(3):
        x = x * 2 + stage
    assert out == {"x": x.tolist()}


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


async def test_a_worker_killed_mid_run_completes_or_fails_clearly(
    cluster: Cluster, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = f"px-{uuid.uuid4().hex[:10]}"
    use_store(monkeypatch, s3_server, bucket)
    await deploy(cluster, channel="object")
    workers = await wait_workers(cluster.nc, "allsum", lambda e: len(e) >= 4)
    client = Client(cluster.nc)
    request = {"partitions": 4, "n": 1000, "steps": 30, "delay": 0.1}
    outcome: list[Any] = []

    async def call() -> None:
        try:
            outcome.append(await client.call("allsum", request, timeout=30))
        except ShoalError as e:
            outcome.append(e)

    with anyio.fail_after(25):  # within the function's timeout (20 s) and some slack
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            # Every worker serves a partition of this 4-way run: kill one once it has begun.
            await anyio.sleep(0.8)
            victim = next(iter(workers.values()))
            os.kill(victim["pid"], signal.SIGKILL)
    result = outcome[0]
    if isinstance(result, ShoalError):
        assert isinstance(result, PartitionLost), result
        assert "went away" in str(result) or "did not answer" in str(result)
    else:  # retried on the remaining workers plus the replacement
        assert result["sums"] == [float(x.sum()) for x in expected_allsum(4, 1000, 30)]
    assert leftovers(s3_server, bucket) == []


async def test_object_store_down_is_a_clear_error(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.storage.conftest import _seaweedfs

    gen = _seaweedfs(tmp_path)
    server = next(gen)
    use_store(monkeypatch, server, f"px-{uuid.uuid4().hex[:10]}")
    await deploy(cluster, channel="object")
    client = Client(cluster.nc)
    out = await client.call("allsum", {"partitions": 2, "n": 8, "steps": 1})
    assert out["sent_objects"] == 2
    gen.close()  # kills the S3 server
    with anyio.fail_after(20), pytest.raises(IntermediateStoreError, match="object store"):
        await client.call("allsum", {"partitions": 2, "n": 8, "steps": 1}, timeout=15)
