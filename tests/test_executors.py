"""Handlers split from executors: batching, fusion, bad items, and an executor killed mid-batch."""

from __future__ import annotations

import json
import os
import signal

import anyio
import pytest

from controller import deploy_file
from runtime import Client, FunctionError
from tests.conftest import FNS, Cluster, wait_workers

pytestmark = pytest.mark.anyio

EXECUTORS = FNS / "executors.py"


async def call_many(client: Client, function: str, events: list[dict]) -> list[object]:
    results: list[object] = [None] * len(events)

    async def one(i: int) -> None:
        try:
            results[i] = await client.call(function, events[i], timeout=30)
        except Exception as e:
            results[i] = e

    async with anyio.create_task_group() as tg:
        for i in range(len(events)):
            tg.start_soon(one, i)
    return results


async def test_executor_batches_items_from_concurrent_handlers(cluster: Cluster) -> None:
    await cluster.deploy(EXECUTORS)
    client = Client(cluster.nc)
    results = await call_many(client, "batchinfo", [{"n": i} for i in range(24)])
    assert [r["value"] for r in results] == [2 * i for i in range(24)]  # type: ignore[index]
    assert max(r["batch"] for r in results) > 1  # type: ignore[index]
    # Handler and executor are separate workers, scaled apart.
    executors = await wait_workers(cluster.nc, "doubler", lambda e: len(e) >= 1)
    assert all(w["kind"] == "executor" for w in executors.values())
    handlers = await wait_workers(cluster.nc, "batchinfo", lambda e: len(e) >= 1)
    assert {w["pid"] for w in handlers.values()}.isdisjoint({w["pid"] for w in executors.values()})


async def test_split_and_fused_give_identical_outputs(cluster: Cluster) -> None:
    client = Client(cluster.nc)
    events = [{"n": i} for i in range(10)]
    await deploy_file(cluster.nc, EXECUTORS, fuse=False)
    split = await call_many(client, "double", events)
    specs = await deploy_file(cluster.nc, EXECUTORS, fuse=True)
    fused_version = next(s.version for s in specs if s.name == "double")
    # The split workers drain; the fused ones start on demand.
    await wait_workers(
        cluster.nc, "double", lambda e: all(w["version"] == fused_version for w in e.values())
    )
    fused = await call_many(client, "double", events)
    assert split == fused == [2 * i for i in range(10)]
    served = await wait_workers(cluster.nc, "double", lambda e: len(e) >= 1)
    assert {w["version"] for w in served.values()} == {fused_version}


async def test_bad_item_gets_typed_error_and_its_batch_neighbours_succeed(
    cluster: Cluster,
) -> None:
    await cluster.deploy(EXECUTORS)
    client = Client(cluster.nc)
    events = [{"n": i, "poison": i == 3} for i in range(12)]
    results = await call_many(client, "batchinfo", events)
    assert isinstance(results[3], FunctionError) and "poisoned item" in str(results[3])
    assert [r["value"] for i, r in enumerate(results) if i != 3] == [  # type: ignore[index]
        2 * i for i in range(12) if i != 3
    ]
    assert await client.call("batchinfo", {"n": 50}, timeout=30) == {"value": 100, "batch": 1}


async def test_executor_killed_mid_batch_every_request_answered(cluster: Cluster) -> None:
    await cluster.deploy(EXECUTORS)
    nc = cluster.nc
    answers = await nc.subscribe("held.answers")
    n = 6
    for i in range(n):
        await nc.jetstream().publish(
            "fn.batchinfo",
            json.dumps({"n": i, "hold": True}).encode(),
            headers={"Shoal-Reply-To": "held.answers", "Nats-Msg-Id": f"held-{i}"},
        )
    busy = await wait_workers(nc, "doubler", lambda e: any(w["inflight"] >= 2 for w in e.values()))
    (victim,) = busy.values()
    os.kill(victim["pid"], signal.SIGKILL)

    got = {}
    for _ in range(n):
        reply = await answers.next_msg(timeout=60)
        got[reply.headers["Shoal-Request-Id"]] = json.loads(reply.data)
    assert {k: v["value"] for k, v in got.items()} == {f"held-{i}": 2 * i for i in range(n)}
    replacement = await wait_workers(nc, "doubler", lambda e: len(e) >= 1)
    assert victim["id"] not in {w["id"] for w in replacement.values()}


async def test_map_fans_out_through_the_pool_in_order_and_fails_with_a_typed_error(
    cluster: Cluster,
) -> None:
    await cluster.deploy(EXECUTORS)
    client = Client(cluster.nc)
    assert await client.call("doublemany", {"ns": list(range(12))}, timeout=30) == [
        2 * n for n in range(12)
    ]
    with pytest.raises(FunctionError, match="poisoned item"):  # the item's error, no group
        await client.call("doublemany", {"ns": [1, -1, 2]}, timeout=30)
