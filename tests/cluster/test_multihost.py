"""Shoal over three hosts (network namespaces): load spread over hosts, a NATS node killed
mid-load, a whole host killed mid-load. Each run prints its counts; lost must be 0."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import nats.errors
import pytest

from controller import deploy_file
from runtime.wire import replicas
from tests.cluster.hosts import CONTROLLER_ENV, cluster_connection
from tests.cluster.load import FUNCTIONS, Load
from tests.conftest import FNS, wait_workers

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from tests.cluster.hosts import Hosts

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]

N = 1000


async def _start(hosts: Hosts) -> tuple[NATS, NATS, NATS]:
    """Controllers on every host, the functions deployed; connections to hosts a and b
    (publishers) and c (answers)."""
    for host in hosts.hosts.values():
        hosts.start_controller(host)
    a = await cluster_connection(hosts, "a", "publisher-a")
    b = await cluster_connection(hosts, "b", "publisher-b")
    c = await cluster_connection(hosts, "c", "answers")
    for path in (FNS / "load.py", FNS / "basics.py"):
        await deploy_file(a, path)
    info = await a.jetstream().stream_info("SHOAL_FN_WORK")
    # Unset SHOAL_REPLICAS on three servers: three copies (the kill tests rely on them).
    assert info.config.num_replicas == 3 == replicas.MAX_DEFAULT
    return a, b, c


async def _close(*conns: NATS) -> None:
    for nc in conns:
        await nc.close()


async def _owners(nc: NATS) -> dict[str, set[str]]:
    """Function -> the controllers whose workers serve it, once every function has one."""
    owners: dict[str, set[str]] = {}
    for function in FUNCTIONS:
        entries = await wait_workers(nc, function, bool, timeout=60)
        owners[function] = {str(w["controller"]) for w in entries.values()}
    return owners


async def test_load_spread_over_hosts_is_all_answered(hosts: Hosts) -> None:
    a, b, c = await _start(hosts)
    try:
        load = Load(c, "spread", N)
        await load.start()
        async with anyio.create_task_group() as tg:
            tg.start_soon(load.publish, a, range(0, N, 2))
            tg.start_soon(load.publish, b, range(1, N, 2))
        await load.finish()
        owners = await _owners(c)
        print(f"served by: { {f: sorted(o) for f, o in owners.items()} }")
        lost, _duplicated, done = load.report("1,000 events over three hosts")
        assert lost == 0 and done == N and len(load.acked) == N
    finally:
        await _close(a, b, c)


async def test_a_nats_node_killed_mid_load_loses_nothing(hosts: Hosts) -> None:
    a, b, c = await _start(hosts)
    try:
        load = Load(c, "natskill", N)
        await load.start()
        async with anyio.create_task_group() as tg:
            tg.start_soon(load.publish, a, range(0, N, 2))
            tg.start_soon(load.publish, b, range(1, N, 2))
            await load.wait_answered(150)
            # The node that leads the busiest function's stream: the hardest one to lose.
            info = await c.jetstream().stream_info("SHOAL_FN_WORK")
            leader = info.cluster.leader if info.cluster else None
            victim = next(h for h in hosts.hosts.values() if h.node == leader)
            hosts.kill_nats(victim)
            print(f"\nkilled NATS node {victim.node} (leader of SHOAL_FN_WORK: {leader})")
        await load.finish()
        lost, _duplicated, done = load.report(f"NATS node {victim.node} killed mid-load")
        assert lost == 0 and done == N and len(load.acked) == N
    finally:
        await _close(a, b, c)


async def test_a_host_killed_mid_load_loses_nothing_and_its_work_moves(hosts: Hosts) -> None:
    a, b, c = await _start(hosts)
    try:
        load = Load(c, "hostkill", N)
        await load.start()
        async with anyio.create_task_group() as tg:
            tg.start_soon(load.publish, a, range(0, N, 2))
            tg.start_soon(load.publish, b, range(1, N, 2))
            await load.wait_answered(150)
            owners = await _owners(c)
            # A host that serves "work" (if it is where the answers arrive, the answers sent
            # meanwhile are lost in transit: their results are looked up instead).
            victim = next(h for h in hosts.hosts.values() if h.node in owners["work"])
            moved = [f for f, o in owners.items() if victim.node in o]
            killed_at = time.monotonic()
            hosts.kill_host(victim)  # its NATS node, its controller, every worker
            print(f"\nkilled {victim.node} (served {moved}); served by: {owners}")
            replaced: dict[str, float] = {}

            async def replacement(function: str) -> None:
                with anyio.fail_after(120):
                    while True:
                        try:
                            await wait_workers(
                                c,
                                function,
                                lambda e: any(w["controller"] != victim.node for w in e.values()),
                                timeout=120,
                            )
                            break
                        except nats.errors.TimeoutError:
                            # The workers bucket's stream led from the lost host: JetStream
                            # answers again once its other copies have elected a leader.
                            await anyio.sleep(0.2)
                replaced[function] = time.monotonic() - killed_at

            async with anyio.create_task_group() as waits:
                for function in moved:
                    waits.start_soon(replacement, function)
        await load.finish()
        lost, _duplicated, done = load.report(f"{victim.node} killed mid-load")
        for function in moved:
            print(
                f"  {function}: a worker on another host in {replaced[function]:.1f}s, "
                f"longest time without its answers {load.longest_silence(function, killed_at):.1f}s"
            )
        print(f"  (controller settings: {CONTROLLER_ENV})")
        assert lost == 0 and done == N and len(load.acked) == N
    finally:
        await _close(a, b, c)
