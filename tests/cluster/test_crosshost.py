"""A partitioned model whose shards sit on two hosts, with the data plane's cost model
measured per pair of hosts; and a GPU executor placed only on the host that declares a GPU.
One cluster for both (starting one costs more than either check)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import msgpack
import pytest

from controller import deploy_file
from runtime import Client
from runtime.partition import calibration
from runtime.wire import protocol
from runtime.wire.connection import kv
from runtime.wire.kvwatch import Change, Follower
from tests.cluster.hosts import cluster_connection
from tests.conftest import FNS, wait_workers
from tests.test_placement import wait_hosts
from tests.test_radixnet import RADIXNET, local_model

if TYPE_CHECKING:
    from collections.abc import Callable

    from nats.aio.client import Client as NATS

    from tests.cluster.hosts import Hosts

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

GPU_HOST = "c"  # the only host whose controller declares a GPU
REQUEST = {"neurons": 1024, "layers": 30, "batch": 32, "seed": 0, "partitions": 2}


def ready(entries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: w for k, w in entries.items() if w.get("state") == "ready"}


async def wait_bucket(
    nc: NATS, name: str, predicate: Callable[[dict[str, bytes]], bool], timeout: float
) -> dict[str, bytes]:
    """A bucket's entries (key -> value) once ``predicate`` holds for them."""
    bucket = await kv(nc.jetstream(), name)
    current: dict[str, bytes] = {}
    done = anyio.Event()

    def on_change(change: Change) -> None:
        if change.deleted:
            current.pop(change.key, None)
        else:
            current[change.key] = change.value
        if not done.is_set() and predicate(current):
            done.set()

    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            tg.start_soon(Follower(bucket, on_change).run)
            await done.wait()
            tg.cancel_scope.cancel()
    return dict(current)


async def wait_keys(nc: NATS, keys: set[str], timeout: float) -> None:
    """Until every one of ``keys`` is in the ``shoal_dataplane`` bucket."""
    await wait_bucket(nc, protocol.DATAPLANE_BUCKET, lambda c: keys <= set(c), timeout)


async def wait_controllers(
    nc: NATS, predicate: Callable[[dict[str, dict[str, Any]]], bool], timeout: float
) -> dict[str, dict[str, Any]]:
    """The ``shoal_controllers`` entries (controller id -> heartbeat) once ``predicate``
    holds for them."""

    def decoded(entries: dict[str, bytes]) -> dict[str, dict[str, Any]]:
        return {k: msgpack.unpackb(v) for k, v in entries.items()}

    found = await wait_bucket(
        nc, protocol.CONTROLLERS_BUCKET, lambda c: predicate(decoded(c)), timeout
    )
    return decoded(found)


async def test_shards_on_two_hosts_and_a_gpu_executor_only_on_the_gpu_host(hosts: Hosts) -> None:
    for host in hosts.hosts.values():
        gpus = "1" if host.name == GPU_HOST else "0"  # declared: no GPU is needed to run it
        hosts.start_controller(host, SHOAL_CAPACITY=f"gpus={gpus}")
    nc = await cluster_connection(hosts, "a", "crosshost")
    try:
        # Every host in the plan first: a deploy placed before would go to the hosts up then.
        await wait_hosts(nc, {h.node for h in hosts.hosts.values()})
        # Two workers, no more: partitions=2 then runs one shard on each. Placement spreads
        # a function's workers, so they are on two hosts.
        pool = {"min_workers": 2, "max_workers": 2, "partitions": 2}
        await deploy_file(nc, RADIXNET, overrides={"radixnet": pool})
        workers = ready(await wait_workers(nc, "radixnet", lambda e: len(ready(e)) == 2, 180))
        where = {str(w["id"]): str(w["host"]) for w in workers.values()}
        print(f"\nradixnet workers by host: {where}")
        one, two = sorted(set(where.values()))  # two distinct hosts, or this fails
        # Each worker measures its host to the other's as it sees it: both directions.
        pairs = {calibration.pair_key(one, two), calibration.pair_key(two, one)}
        await wait_keys(nc, pairs, 120)
        for key, model in sorted((await calibration.models(nc)).items()):
            print(f"  cost model {key}: {model.describe()}")

        out = await Client(nc).call("radixnet", {**REQUEST, "stats": True}, timeout=180)
        stats = out.pop("stats")
        reference = local_model().reference(1024, 30, 32, 0)
        print(
            f"  partitions=2 over {one} and {two}: moved {stats.get('bytes_moved')} bytes, "
            f"{stats.get('objects', 0)} through the object store"
        )
        assert out == reference
        # The two workers that served the shards are still the pool, on the two hosts.
        after = ready(await wait_workers(nc, "radixnet", lambda e: len(ready(e)) == 2, 30))
        assert {str(w["id"]): str(w["host"]) for w in after.values()} == where

        # A gpu=1 executor (started by a call to the function that uses it): only on c.
        await deploy_file(nc, FNS / "placement.py", overrides={"work": {"min_workers": 0}})
        assert await Client(nc).call("probe", {}, timeout=120) == {"cuda": "0"}
        probes = ready(await wait_workers(nc, "gpuprobe", lambda e: bool(ready(e)), 60))
        gpu_host = hosts.hosts[GPU_HOST].node
        print(f"  gpuprobe workers by host: { {w['id']: w['host'] for w in probes.values()} }")
        assert {w["host"] for w in probes.values()} == {gpu_host}
        # Each controller counts its workers' GPUs in its next heartbeat: wait for the ones
        # that say where the GPU worker runs, then check that only its host holds a GPU.
        nodes = {host.node for host in hosts.hosts.values()}
        controllers = await wait_controllers(
            nc, lambda c: nodes <= set(c) and c[gpu_host]["usage"]["gpus"] == 1, 60
        )
        for node in nodes:
            usage = controllers[node]["usage"]
            assert usage["gpus"] == (1 if node == gpu_host else 0), (node, usage)
    finally:
        await nc.close()
