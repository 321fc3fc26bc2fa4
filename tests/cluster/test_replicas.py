"""Replicas: one on a single server, three on a cluster of three, and a deployment made with
one raised to three when a controller starts with ``SHOAL_REPLICAS=3``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest

from controller import deploy_file
from runtime import Client
from runtime.config import ConfigError
from runtime.wire import protocol, replicas
from runtime.wire.connection import kv
from tests.cluster.hosts import cluster_connection
from tests.conftest import FNS

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js import JetStreamContext
    from nats.js.api import StreamInfo

    from tests.cluster.hosts import Hosts

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

BUCKETS = (
    protocol.FUNCTIONS_BUCKET,
    protocol.WORKERS_BUCKET,
    protocol.CONTROLLERS_BUCKET,
    protocol.RESULTS_BUCKET,
    protocol.CANCEL_BUCKET,
)


async def _shoal_streams(js: JetStreamContext) -> dict[str, int]:
    """Shoal's streams and their replicas."""
    return {
        str(s.config.name): s.config.num_replicas or 1
        for s in await js.streams_info()
        if str(s.config.name).startswith(replicas.PREFIXES)
    }


async def test_one_server_means_one_replica(nc: NATS, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_REPLICAS", raising=False)
    js = nc.jetstream()
    assert replicas.cluster_size(nc) == 1
    await deploy_file(nc, FNS / "load.py")
    for bucket in BUCKETS:
        await kv(js, bucket)
    streams = await _shoal_streams(js)
    assert {"SHOAL_FN_WORK", "KV_shoal_results", "KV_shoal_functions"} <= set(streams)
    assert set(streams.values()) == {1}
    monkeypatch.setenv("SHOAL_REPLICAS", "2")  # said outright, it wins over the count
    assert replicas.wanted(js) == 2
    monkeypatch.setenv("SHOAL_REPLICAS", "0")
    with pytest.raises(ConfigError, match="SHOAL_REPLICAS"):
        replicas.wanted(js)


async def test_a_deployment_made_with_one_replica_is_raised_to_three(
    hosts: Hosts, monkeypatch: pytest.MonkeyPatch
) -> None:
    nc = await cluster_connection(hosts, "a", "test")
    try:
        js = nc.jetstream()
        assert replicas.cluster_size(nc) == 3
        monkeypatch.setenv("SHOAL_REPLICAS", "1")  # as made on one server, or by hand
        await deploy_file(nc, FNS / "load.py")
        for bucket in BUCKETS:
            await kv(js, bucket)
        before = await _shoal_streams(js)
        assert len(before) >= 1 + len(BUCKETS) and set(before.values()) == {1}

        hosts.start_controller(hosts.hosts["b"], SHOAL_REPLICAS="3")
        with anyio.fail_after(120):
            # Every stream at three copies, each one current, and the function's consumer
            # with them (JetStream moves a work queue's consumers with their stream).
            while True:
                infos = [await js.stream_info(name) for name in before]
                consumer = await js.consumer_info("SHOAL_FN_WORK", protocol.CONSUMER)
                peers = (consumer.cluster.replicas if consumer.cluster else None) or []
                if all(_replicated(i, 3) for i in infos) and len(peers) == 2:
                    break
                await anyio.sleep(0.2)  # the controller raises them as it starts
        after = await _shoal_streams(js)
        print(f"\nreplicas before: {before}\nafter: {after}")
        assert set(after.values()) == {3}
        answer = await Client(nc).call("work", {"i": 1}, timeout=60)
        assert answer == {"i": 1}
    finally:
        await nc.close()


def _replicated(info: StreamInfo, count: int) -> bool:
    """``count`` copies configured, a leader, and every other copy current."""
    peers = (info.cluster.replicas if info.cluster else None) or []
    return (
        info.config.num_replicas == count
        and info.cluster is not None
        and info.cluster.leader is not None
        and len(peers) == count - 1
        and all(p.current for p in peers)
    )
