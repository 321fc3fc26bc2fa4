"""functions/radixnet.py served partitioned, on a real cluster and in process (TestApp): the
same answer as the monolithic reference computes. Its pieces alone: test_radixnet_math.py."""

from __future__ import annotations

import importlib.util
import sys
import uuid

import pytest

from controller import deploy_file
from functions import radixnet as R
from runtime import Client, InvalidPayload, ModelTooLarge
from runtime.testing import TestApp
from tests.conftest import FUNCTIONS, Cluster, S3Server
from tests.test_partitioned import leftovers, use_store

pytestmark = pytest.mark.anyio

RADIXNET = FUNCTIONS / "radixnet.py"


def local_model():  # type: ignore[no-untyped-def]
    """The example module imported in the test process, for its monolithic reference."""
    spec = importlib.util.spec_from_file_location("radixnet_reference", RADIXNET)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_partitioned_radixnet_equals_the_monolithic_reference(cluster: Cluster) -> None:
    await cluster.deploy(RADIXNET)
    client = Client(cluster.nc)
    reference = local_model().reference(1024, 120, 64, 0)
    assert 0 < len(reference["categories"]) < 64
    for partitions, partitioner in ((1, "good"), (2, "good"), (4, "good"), (4, "random")):
        request = {
            "neurons": 1024,
            "layers": 120,
            "batch": 64,
            "seed": 0,
            "partitions": partitions,
            "partitioner": partitioner,
        }
        out = await client.call("radixnet", request, timeout=120)
        assert out == reference, (partitions, partitioner)


async def test_a_model_over_the_worker_budget_is_served_partitioned(cluster: Cluster) -> None:
    await cluster.deploy(RADIXNET)
    client = Client(cluster.nc)
    request = {"neurons": 4096, "layers": 120, "batch": 16, "seed": 1, "partitions": 1}
    with pytest.raises(ModelTooLarge, match=r"partitions=2 or more"):
        await client.call("radixnet", request, timeout=60)
    out = await client.call("radixnet", {**request, "partitions": 2, "stats": True}, timeout=120)
    stats = out.pop("stats")
    assert out == local_model().reference(4096, 120, 16, 1)
    assert stats["bytes_moved"] > 0


@pytest.mark.parametrize("channel", ["inline", "object"])
async def test_radixnet_over_either_channel(
    cluster: Cluster, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, channel: str
) -> None:
    bucket = f"rx-{uuid.uuid4().hex[:10]}"
    use_store(monkeypatch, s3_server, bucket)
    await deploy_file(cluster.nc, RADIXNET, overrides={"radixnet": {"channel": channel}})
    client = Client(cluster.nc)
    request = {"neurons": 1024, "layers": 12, "batch": 32, "seed": 3, "partitions": 3}
    out = await client.call("radixnet", {**request, "stats": True}, timeout=120)
    stats = out.pop("stats")
    assert out == local_model().reference(1024, 12, 32, 3)
    assert (stats.get("objects", 0) > 0) == (channel == "object"), stats
    assert leftovers(s3_server, bucket) == []


async def test_in_process_radixnet_equals_the_monolithic_reference() -> None:
    """plan, every partition's shard on a worker of its own, combine: in this process, every
    payload encoded as the data plane sends it."""
    base = {"neurons": 1024, "layers": 5, "batch": 20, "seed": 2}
    expected = R.reference(1024, 5, 20, 2)
    async with TestApp(R.RadixNet) as app:
        assert await app.call(base | {"partitions": 1}) == expected
        for parts, partitioner in [(3, "good"), (4, "random")]:
            request = base | {"partitions": parts, "partitioner": partitioner, "stats": True}
            got = await app.call(request)
            stats = got.pop("stats")
            assert got == expected, (parts, partitioner)
            assert stats["partitions"] == parts and stats["messages"] == 5 * parts * (parts - 1)
            assert stats["bytes_moved"] > 0 and stats["values_moved"] > 0
            assert stats["objects"] == 0
            assert stats["model_bytes"] == sum(s["model_bytes"] for s in stats["shards"])
        request = {"neurons": 1024, "layers": 12, "batch": 32, "seed": 3, "partitions": 3}
        assert await app.call(request) == R.reference(1024, 12, 32, 3)
        too_big = {"neurons": 4096, "layers": 120, "batch": 16, "seed": 1, "partitions": 1}
        with pytest.raises(ModelTooLarge, match=r"partitions=2 or more"):
            await app.call(too_big)
        with pytest.raises(InvalidPayload, match=r'"partitions" must be in 1\.\.8'):
            await app.call(base | {"partitions": 9})
