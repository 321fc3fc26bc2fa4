"""Placement across hosts on a real nats-server, with controllers as real processes
(``shoal controller --host-name ... --capacity ...``): workers spread over hosts, a GPU
executor only where a GPU is declared (with CUDA_VISIBLE_DEVICES set), and a host killed
mid-load (its controller and its workers) moving its share to the other, losing nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio
import msgpack
import pytest

from controller import Controller, ProcessLauncher, deploy_file
from controller.lease import PlacementLease
from runtime import Client
from runtime.wire import protocol
from runtime.wire.connection import kv
from runtime.wire.kvwatch import Change, Follower, listing
from tests.conftest import FAST, FNS, controller_settings, wait_workers
from tests.test_faults import Run

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from nats.aio.client import Client as NATS

    from controller import EmbeddedNats

pytestmark = pytest.mark.anyio

PLACED = FNS / "placement.py"
STALE_AFTER = 1.5


class Hosts:
    """``shoal controller`` processes, one per named host, each in its own session."""

    def __init__(self, nats_server: EmbeddedNats, tmp_path: Path) -> None:
        self.env = {
            **os.environ,
            **FAST,
            "SHOAL_NATS_URL": nats_server.url,
            "SHOAL_TICK": "0.1",
            "SHOAL_STALE_AFTER": str(STALE_AFTER),
            "SHOAL_LOG_LEVEL": "WARNING",
            "SHOAL_METRICS_ADDR": "off",
        }
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, host: str, capacity: str) -> None:
        cmd = [sys.executable, "-m", "controller.cli", "controller"]
        cmd += ["--data", str(self.tmp_path / host), "--host-name", host, "--capacity", capacity]
        self.procs[host] = subprocess.Popen(
            cmd, env={**self.env, "SHOAL_CONTROLLER_ID": f"ctl-{host}"}, start_new_session=True
        )

    def kill(self, host: str, workers: Iterator[dict[str, Any]]) -> None:
        """The whole host goes: its controller (and template) and every worker it runs."""
        os.killpg(self.procs[host].pid, signal.SIGKILL)
        for w in workers:
            if w.get("controller") == f"ctl-{host}":
                try:
                    os.kill(int(w["pid"]), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.procs[host].wait(10)

    def status(self) -> dict[str, Any]:
        """``shoal status --json``."""
        cmd = [sys.executable, "-m", "controller.cli", "status", "--json"]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


async def entries(nc: NATS, bucket: str) -> dict[str, dict[str, Any]]:
    found = await listing(await kv(nc.jetstream(), bucket))
    return {k: msgpack.unpackb(c.value, raw=False) for k, c in found.items()}


async def wait_hosts(nc: NATS, hosts: set[str]) -> dict[str, dict[str, Any]]:
    """Follow the controllers' heartbeats and the plan until every host's controller has
    announced itself and the plan names them all; the heartbeats then."""
    seen: dict[str, dict[str, dict[str, Any]]] = {"controllers": {}, "plan": {}}
    done = anyio.Event()

    def on(kind: str) -> Any:
        def apply(change: Change) -> None:
            if change.deleted:
                seen[kind].pop(change.key, None)
            else:
                seen[kind][change.key] = msgpack.unpackb(change.value, raw=False)
            announced = {c.get("host") for c in seen["controllers"].values()}
            planned = set(seen["plan"].get("plan", {}).get("hosts", {}))
            if announced >= hosts and planned >= hosts:
                done.set()

        return apply

    js = nc.jetstream()
    controllers = Follower(await kv(js, protocol.CONTROLLERS_BUCKET), on("controllers"))
    plan = Follower(await kv(js, protocol.PLACEMENT_BUCKET), on("plan"))
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(controllers.run)
            tg.start_soon(plan.run)
            await done.wait()
            tg.cancel_scope.cancel()
    return seen["controllers"]


async def wait_controllers(nc: NATS, predicate: Any) -> dict[str, dict[str, Any]]:
    """Follow the controllers' heartbeats until ``predicate(heartbeats)`` holds; them then."""
    seen: dict[str, dict[str, Any]] = {}
    done = anyio.Event()

    def apply(change: Change) -> None:
        if change.deleted:
            seen.pop(change.key, None)
        else:
            seen[change.key] = msgpack.unpackb(change.value, raw=False)
        if predicate(seen):
            done.set()

    follower = Follower(await kv(nc.jetstream(), protocol.CONTROLLERS_BUCKET), apply)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower.run)
            await done.wait()
            tg.cancel_scope.cancel()
    return dict(seen)


def by_controller(workers: dict[str, dict[str, Any]], version: str | None = None) -> Counter[str]:
    return Counter(
        str(w["controller"])
        for w in workers.values()
        if w.get("state") == "ready" and (version is None or w.get("version") == version)
    )


async def test_workers_spread_and_a_gpu_executor_goes_only_to_the_gpu_host(
    nats_server: EmbeddedNats, nc: NATS, tmp_path: Path
) -> None:
    hosts = Hosts(nats_server, tmp_path)
    try:
        hosts.start("a", "cpu=2,memory=4g,gpus=0")
        hosts.start("b", "cpu=2,memory=4g,gpus=1")
        hosts.start("c", "cpu=2,memory=4g,gpus=0")
        controllers = await wait_hosts(nc, {"a", "b", "c"})
        assert controllers["ctl-b"]["capacity"] == {"cpu": 2.0, "memory_mb": 4096, "gpus": 1}
        await deploy_file(nc, PLACED)

        # min_workers=4 over three hosts: 2, 1, 1.
        spread = await wait_workers(nc, "work", lambda e: sum(by_controller(e).values()) == 4)
        counts = by_controller(spread)
        print(f"\n[spread] workers of work per host: {dict(sorted(counts.items()))}")
        assert set(counts) == {"ctl-a", "ctl-b", "ctl-c"}
        assert max(counts.values()) - min(counts.values()) <= 1

        # The gpu=1 executor, started by a call: on b, the only host declaring a GPU.
        result = await Client(nc).call("probe", {}, timeout=60)
        assert result == {"cuda": "0"}
        probes = await wait_workers(nc, "gpuprobe", lambda e: bool(by_controller(e)))
        assert set(by_controller(probes)) == {"ctl-b"}
        # Its controller's next heartbeat counts the GPU it holds (none elsewhere).
        controllers = await wait_controllers(
            nc, lambda c: c.get("ctl-b", {}).get("usage", {}).get("gpus") == 1
        )
        assert all(controllers[c]["usage"]["gpus"] == 0 for c in ("ctl-a", "ctl-c"))
        # A second worker of it would need a second GPU: the plan says it fits nowhere.
        placement = (await entries(nc, protocol.PLACEMENT_BUCKET))["plan"]
        assert placement["plan"]["gpuprobe"] == {"b": 1}

        # shoal status shows the hosts: capacity, usage, what the plan gives each.
        status = await anyio.to_thread.run_sync(hosts.status)
        shown = {h["host"]: h for h in status["hosts"]}
        assert set(shown) == {"a", "b", "c"} and status["placer"] == placement["leader"]
        assert shown["b"]["capacity"]["gpus"] == 1 and shown["b"]["planned"]["gpuprobe"] == 1
        assert sum(h["planned"]["work"] for h in shown.values()) == 4
    finally:
        hosts.stop()


async def test_killing_a_host_mid_load_moves_its_share_and_loses_nothing(
    nats_server: EmbeddedNats, nc: NATS, tmp_path: Path
) -> None:
    hosts = Hosts(nats_server, tmp_path)
    try:
        hosts.start("a", "cpu=2,memory=4g")
        hosts.start("b", "cpu=2,memory=4g")
        await wait_hosts(nc, {"a", "b"})
        await deploy_file(nc, PLACED)
        spread = await wait_workers(
            nc, "work", lambda e: by_controller(e) == {"ctl-a": 2, "ctl-b": 2}
        )
        run = Run(nc, "host", 1000)
        await run.start()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run.publish)
            await run.wait_answered(250)
            # Kill the host that places (the harder case: the lease moves too).
            leader = (await entries(nc, protocol.PLACEMENT_BUCKET))["plan"]["leader"]
            victim = leader.removeprefix("ctl-")
            survivor = f"ctl-{'a' if victim == 'b' else 'b'}"
            spread = await wait_workers(nc, "work", lambda e: True)
            killed_at = time.monotonic()
            hosts.kill(victim, iter(spread.values()))
            await wait_workers(nc, "work", lambda e: by_controller(e).get(survivor, 0) == 4, 60)
            moved_s = time.monotonic() - killed_at
            await run.finish()
        lost, _, answered = run.report(f"kill host {victim} (controller and workers)")
        print(f"[kill host] its 2 workers were replaced on the other host {moved_s:.1f} s after")
        assert lost == 0 and answered == 1000
        placement = (await entries(nc, protocol.PLACEMENT_BUCKET))["plan"]
        assert placement["leader"] == survivor and placement["plan"]["work"] == {
            survivor.removeprefix("ctl-"): 4
        }
    finally:
        hosts.stop()


async def test_the_lease_passes_only_when_it_lapses_and_the_old_holder_cannot_write(
    nc: NATS,
) -> None:
    """Two controllers' views of the lease on one bucket: one holds it; the other takes it
    only once it is unrenewed for lease_s (or its holder is not live); the old holder's
    writes then fail and it steps down, the new plan intact."""
    bucket = await kv(nc.jetstream(), protocol.PLACEMENT_BUCKET)
    heard = {"ctl-a": anyio.Event(), "ctl-b": anyio.Event()}

    def lease(me: str) -> PlacementLease:
        def on_change() -> None:
            heard[me].set()
            heard[me] = anyio.Event()

        return PlacementLease(bucket, me, lease_s=1.5, renew_s=0.1, on_change=on_change)

    async def until(view: PlacementLease, cond: Any) -> None:
        with anyio.fail_after(5):  # the view follows the bucket's watch
            while not cond():
                await heard[view.me].wait()

    a, b = lease("ctl-a"), lease("ctl-b")
    both = {"ctl-a", "ctl-b"}
    async with anyio.create_task_group() as tg:
        await tg.start(a.run)
        await tg.start(b.run)
        assert await a.claim(both)
        assert await a.publish({"f": {"h1": 2}}, {}, {"h1": "ctl-a"})
        await until(b, lambda: b.plan() == {"f": {"h1": 2}})
        assert not await b.claim(both) and b.leader == "ctl-a"  # held and renewed
        assert await b.claim({"ctl-b"})  # a is not live: b takes over at once
        assert b.plan() == {"f": {"h1": 2}}  # the plan as it stood
        assert await b.publish({"f": {"h2": 2}}, {}, {"h2": "ctl-b"})
        # a's write is refused, whether or not it has heard yet (the revision check).
        assert not await a.publish({"f": {"h1": 3}}, {}, {"h1": "ctl-a"})
        await until(a, lambda: a.plan() == {"f": {"h2": 2}})
        assert not a.leads() and a.leader == "ctl-b"
        assert not await a.claim(both)  # b is live and has just written
        # b stops renewing: once lease_s has passed on a's clock, a takes the lease back.
        await anyio.sleep(1.6)  # the lease's life itself, what is tested here
        assert await a.claim(both) and a.plan() == {"f": {"h2": 2}}
        await a.release()
        await until(b, lambda: not b.leader)
        assert await b.claim(both)  # released: free at once
        tg.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--capacity", "gpus=x"], {}, "--capacity='gpus=x'"),
        ([], {"SHOAL_CAPACITY": "cpu=-2"}, "SHOAL_CAPACITY='cpu=-2'"),
    ],
)
def test_a_bad_capacity_stops_the_controller_naming_it(
    args: list[str], env: dict[str, str], named: str
) -> None:
    cmd = [sys.executable, "-m", "controller.cli", "controller", *args]
    done = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and named in done.stderr, done.stderr


async def test_two_controllers_naming_one_host_start_its_workers_once(
    nats_server: EmbeddedNats, nc: NATS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_NATS_URL", nats_server.url)
    async with (
        ProcessLauncher(code_dir=tmp_path / "x") as lx,
        ProcessLauncher(code_dir=tmp_path / "y") as ly,
        anyio.create_task_group() as tg,
    ):
        x = Controller(nc, lx, controller_settings(controller_id="ctl-x", host="same"))
        y = Controller(nc, ly, controller_settings(controller_id="ctl-y", host="same"))
        await tg.start(x.run)
        await tg.start(y.run)
        await deploy_file(nc, PLACED, wait=0)
        ready = await wait_workers(nc, "work", lambda e: sum(by_controller(e).values()) >= 4)
        [(runs, n)] = by_controller(ready).items()  # one controller ran them all
        assert n == 4 and x.lease.hosts() == {"same": runs}
        # and the other, told the host is not its own, starts nothing meanwhile
        assert not (lx if runs == "ctl-y" else ly).running()
        tg.cancel_scope.cancel()
