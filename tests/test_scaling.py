"""Scale from zero, out under backlog, back to zero; replace killed workers; redeploy live."""

from __future__ import annotations

import json
import os
import signal
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from controller import Controller, ProcessLauncher, deploy_file
from controller.cold import ColdPath
from controller.deploy import ensure_stream
from runtime import Client
from runtime.wire import protocol
from runtime.wire.connection import connect
from runtime.wire.spec import FunctionSpec
from tests.conftest import FNS, Cluster, controller_settings, wait_workers, workers_of

if TYPE_CHECKING:
    from pathlib import Path

    from nats.aio.client import Client as NATS

pytestmark = pytest.mark.anyio


async def test_scale_from_zero_then_idle_down_to_zero(cluster: Cluster) -> None:
    await cluster.deploy(FNS / "basics.py")
    assert await workers_of(cluster.nc, "brief") == {}
    assert await Client(cluster.nc).call("brief", {"n": 1}, timeout=30) == {"n": 1}
    up = await wait_workers(cluster.nc, "brief", lambda e: len(e) == 1)
    assert len(up) == 1
    # idle_timeout=0.5s: the controller drains it, and the worker deregisters as it exits.
    await wait_workers(cluster.nc, "brief", lambda e: e == {})
    with anyio.fail_after(20):
        await cluster.launcher.wait_all_exited()
    assert cluster.launcher.running() == set()


async def test_sigkilled_worker_mid_event_still_completes(cluster: Cluster) -> None:
    await cluster.deploy(FNS / "basics.py")
    nc = cluster.nc
    answers = await nc.subscribe("stall.answers")
    await nc.jetstream().publish(
        "fn.stall", b'{"job": 7}', headers={"Shoal-Reply-To": "stall.answers"}
    )
    busy = await wait_workers(nc, "stall", lambda e: any(w["inflight"] for w in e.values()))
    (victim,) = [w for w in busy.values() if w["inflight"]]
    os.kill(victim["pid"], signal.SIGKILL)

    reply = await answers.next_msg(timeout=30)
    assert json.loads(reply.data) == {"attempt": 2, "event": {"job": 7}}
    # A replacement served it: the killed worker is gone from the registry.
    now = await workers_of(nc, "stall")
    assert all(w["id"] != victim["id"] for w in now.values())


async def test_scales_out_under_backlog_up_to_max(cluster: Cluster) -> None:
    await cluster.deploy(FNS / "scaling.py")
    nc = cluster.nc
    answers = await nc.subscribe("chunky.answers")
    n = 24
    for i in range(n):
        await nc.jetstream().publish(
            "fn.chunky", json.dumps({"i": i}).encode(), headers={"Shoal-Reply-To": "chunky.answers"}
        )
    most = 0

    def enough(entries: dict[str, dict[str, object]]) -> bool:
        nonlocal most
        most = max(most, len(entries))
        return len(entries) >= 2

    await wait_workers(nc, "chunky", enough)
    got = sorted([json.loads((await answers.next_msg(timeout=30)).data) for _ in range(n)])
    assert got == list(range(n))
    assert 2 <= most <= 3
    assert max(len(await workers_of(nc, "chunky")), 0) <= 3


async def test_redeploy_rolls_workers_without_restart(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "versioned.py"
    src.write_text(
        "from runtime import function\n\n@function\ndef versioned(event):\n    return 'v1'\n"
    )
    await cluster.deploy(src)
    client = Client(cluster.nc)
    assert await client.call("versioned", None, timeout=30) == "v1"
    old = await wait_workers(cluster.nc, "versioned", lambda e: len(e) == 1)

    src.write_text(src.read_text().replace("'v1'", "'v2'"))
    await cluster.deploy(src)
    await wait_workers(cluster.nc, "versioned", lambda e: not set(old) & set(e))
    assert await client.call("versioned", None, timeout=30) == "v2"


async def test_two_controllers_one_places_and_the_other_takes_over_losing_nothing(
    nats_server, nc, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("SHOAL_NATS_URL", nats_server.url)
    await deploy_file(nc, FNS / "basics.py", wait=0)
    answers = await nc.subscribe("shared.answers")
    async with (
        ProcessLauncher(code_dir=tmp_path / "a") as la,
        ProcessLauncher(code_dir=tmp_path / "b") as lb,
        anyio.create_task_group() as tg,
    ):
        ctl = {
            "ctl-a": Controller(nc, la, controller_settings(controller_id="ctl-a", host="a")),
            "ctl-b": Controller(nc, lb, controller_settings(controller_id="ctl-b", host="b")),
        }
        scopes = {c: anyio.CancelScope() for c in ctl}

        async def run(c: str, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
            with scopes[c]:
                await ctl[c].run(task_status=task_status)

        for c in ctl:
            await tg.start(run, c)
        with anyio.fail_after(10):  # each sees the other's heartbeat; one holds the lease
            while (
                any(len(x.controllers.items(1.5)) < 2 for x in ctl.values())
                or sum(x.places() for x in ctl.values()) != 1
                or set(ctl["ctl-a"].lease.hosts()) != {"a", "b"}
            ):
                await ctl["ctl-a"].controllers.changed.wait()
        placer = next(c for c, x in ctl.items() if x.places())
        other = ctl[next(c for c in ctl if c != placer)]
        assert other.lease.leader == placer

        # Work queued durably; then the placing controller goes away.
        for i in range(20):
            await nc.jetstream().publish(
                "fn.ping",
                json.dumps({"i": i}).encode(),
                headers={"Shoal-Reply-To": "shared.answers", "Nats-Msg-Id": f"shared-{i}"},
            )
        scopes[placer].cancel()
        seen = set()
        for _ in range(20):
            reply = await answers.next_msg(timeout=30)
            seen.add(reply.headers["Shoal-Request-Id"])
        assert seen == {f"shared-{i}" for i in range(20)}
        assert other.places() and set(other.lease.hosts()) == {other.settings.host}
        tg.cancel_scope.cancel()


async def test_rolling_redeploys_under_load_lose_nothing(cluster: Cluster) -> None:
    # Several workers of the old version drain while events keep arriving: events that
    # reach a draining worker must be served, not bounced until max_deliver runs out.
    nc = cluster.nc
    answers = await nc.subscribe("roll.answers")
    n = 90
    for round_ in range(3):
        await deploy_file(
            nc, FNS / "basics.py", overrides={"ping": {"min_workers": 3, "timeout": 10 + round_}}
        )
        await wait_workers(nc, "ping", lambda e: len(e) >= 3)
        for i in range(round_ * 30, round_ * 30 + 30):
            await nc.jetstream().publish(
                "fn.ping",
                json.dumps(i).encode(),
                headers={"Shoal-Reply-To": "roll.answers", "Nats-Msg-Id": f"roll-{i}"},
            )
    seen = set()
    with anyio.fail_after(60):
        while len(seen) < n:
            reply = await answers.next_msg(timeout=60)
            seen.add(reply.headers["Shoal-Request-Id"])
    assert seen == {f"roll-{i}" for i in range(n)}


async def test_closing_the_cold_path_loses_no_request(nats_server, nc: NATS) -> None:
    """Requests the server routed to the controller's cold path just before it closed (the
    first worker came up) are still queued for the workers, not dropped."""
    spec = FunctionSpec(name="coldclose")
    js = nc.jetstream()
    await ensure_stream(js, spec)
    forwarded = anyio.Event()
    path = ColdPath(nc, spec, forwarded.set)
    await path.open()
    caller = await connect(nats_server.url, name="caller")
    try:
        n = 50
        for i in range(n):
            await caller.publish("fn.coldclose.call", b"{}", reply=f"answers.{i}")
        await caller.flush()  # the server has routed all of them to the cold path
        with anyio.fail_after(10):
            await forwarded.wait()  # forwarding one at a time: most are still waiting
            await path.close()
        info = await js.stream_info(spec.stream)
        assert info.state.messages == n
    finally:
        await caller.close()


async def test_a_draining_worker_answers_the_requests_already_routed_to_it(
    cluster: Cluster,
) -> None:
    """A worker told to stop right behind a burst of requests answers every request the
    server had routed to it before it left the queue group, before it exits."""
    await cluster.deploy(FNS / "basics.py")
    client = Client(cluster.nc)
    assert await client.call("ping", {"n": -1}, timeout=30) is not None  # a warm worker
    (worker,) = (await wait_workers(cluster.nc, "ping", lambda e: len(e) == 1)).values()
    caller = await connect(cluster.url, name="caller")
    try:
        n = 2000
        replies = [f"drained.{i}" for i in range(n)]
        answered: set[str] = set()
        done = anyio.Event()

        async def on_answer(msg: Any) -> None:
            answered.add(msg.subject)
            if len(answered) == n:
                done.set()

        await caller.subscribe("drained.*", cb=on_answer)
        for reply in replies:
            await caller.publish("fn.ping.call", b'{"n": 1}', reply=reply)
        # Right behind the burst on the same connection: the stop reaches the worker while
        # most of the burst is still waiting in its subscription.
        await caller.publish(protocol.worker_stop_subject(str(worker["id"])), b"")
        await caller.flush()
        with anyio.fail_after(30):
            await done.wait()
        assert answered == set(replies)
    finally:
        await caller.close()
