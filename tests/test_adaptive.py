"""The adaptive keep-alive in the controller (controller.adaptive): activity, idle times and
cold starts on a fake clock; the shared history under two controllers; and on a real cluster,
a function called on a beat is unloaded between events and pre-warmed before each."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

from controller import Controller, ProcessLauncher, deploy_file
from controller.adaptive import KeepAlive, describe, summaries
from controller.idle_history import IdleHistoryStore, open_bucket
from controller.keepalive import KeepAliveSettings
from controller.scaler import WorkerState
from runtime import Client
from runtime.wire.connection import connect
from runtime.wire.spec import FunctionSpec
from tests.conftest import FNS, controller_settings, wait_workers, workers_of

if TYPE_CHECKING:
    from pathlib import Path

    from nats.aio.client import Client as NATS

    from controller import EmbeddedNats

SPEC = FunctionSpec(name="f", code_sha="x")  # adaptive: 300 s fixed window at 60 s bins


def served(n: int, idle_for: float, at: float, wid: str = "a") -> list[WorkerState]:
    return [WorkerState(wid, SPEC.version, "ready", 0, idle_for, served=n, reported_at=at)]


def test_idle_times_run_from_the_end_of_one_activity_to_the_next() -> None:
    ka = KeepAlive(grace=1.0)
    t = ka._tracks
    # The first event finds no worker: a cold start, and no idle time yet.
    assert ka.observe(SPEC, 100.0, demand=1, workers=[], ready=False) == 1  # fixed window
    assert t["f"].cold and not t["f"].idle
    # Its worker reports it served it and has been idle 2 s: the activity ended at 101.
    ka.observe(SPEC, 103.0, demand=0, workers=served(1, 2.0, 103.0), ready=True)
    assert t["f"].last == 101.0 and not t["f"].idle  # within the grace: the same activity
    # Heartbeats of an idle worker change nothing...
    for now in (110.0, 150.0):
        ka.observe(SPEC, now, demand=0, workers=served(1, now - 101.0, now), ready=True)
    assert t["f"].last == 101.0 and not t["f"].idle
    # ...a second event served between two passes is a new activity: idle 60 s, warm.
    ka.observe(SPEC, 162.0, demand=0, workers=served(2, 1.0, 162.0), ready=True)
    assert t["f"].idle == [60.0] and len(t["f"].cold) == 1
    # Demand after a quiet spell with no ready worker: idle time, and a cold start.
    ka.observe(SPEC, 400.0, demand=3, workers=[], ready=False)
    assert t["f"].idle == [60.0, 239.0] and len(t["f"].cold) == 2


def test_work_reported_after_a_slow_pass_continues_the_activity_its_demand_began() -> None:
    """Passes far apart (a loaded controller): the last one that saw the event waiting was at
    100, the next at 103 finds it served, ending at 101.5, past 100 + grace. That is the same
    activity, not a new one after an idle time of 1.5 s (which would teach the policy that
    the function comes back at once, and keep its worker loaded for ever)."""
    ka = KeepAlive(grace=0.5)
    ka.observe(SPEC, 100.0, demand=1, workers=[], ready=False)
    ka.observe(SPEC, 103.0, demand=0, workers=served(1, 1.5, 103.0), ready=True)
    assert ka._tracks["f"].last == 101.5 and not ka._tracks["f"].idle
    # The next event, served between two passes, is a new activity.
    ka.observe(SPEC, 110.0, demand=0, workers=served(2, 0.5, 110.0), ready=True)
    assert ka._tracks["f"].idle == [8.0]


def test_demand_seen_by_passes_far_apart_is_one_activity() -> None:
    """A pass that launches a worker can take a while: demand seen before it and after it is
    the same event waiting, not a new activity after an idle time."""
    ka = KeepAlive(grace=0.5)
    ka.observe(SPEC, 100.0, demand=1, workers=[], ready=False)
    ka.observe(SPEC, 100.6, demand=1, workers=[], ready=False)  # the same event, still waiting
    assert ka._tracks["f"].last == 100.6 and not ka._tracks["f"].idle
    assert len(ka._tracks["f"].cold) == 1  # one cold start, not two
    ka.observe(SPEC, 101.0, demand=0, workers=served(1, 0.2, 101.0), ready=True)
    ka.observe(SPEC, 108.0, demand=1, workers=served(1, 7.2, 108.0), ready=True)
    # Then quiet, then a new event: a new activity.
    assert ka._tracks["f"].idle == pytest.approx([7.2])


def test_the_fixed_window_scales_with_the_bin_width() -> None:
    ka = KeepAlive(KeepAliveSettings(bin_s=1.0))
    assert ka.fixed_s(SPEC) == 5.0  # 300 s at 60 s bins
    assert ka.fixed_s(FunctionSpec(name="e", kind="executor")) == 10.0
    assert ka.fixed_s(FunctionSpec(name="n", idle_timeout=42)) == 42.0  # as given
    # Until it has a history: the fixed window from the last activity, then unloaded.
    ka.observe(SPEC, 0.0, demand=1, workers=[], ready=False)
    assert ka.observe(SPEC, 4.0, demand=0, workers=[], ready=False) == 1
    assert ka.observe(SPEC, 5.5, demand=0, workers=[], ready=False) == 0


def test_a_prewarmed_worker_with_nothing_served_is_no_activity() -> None:
    ka = KeepAlive(grace=1.0)
    ka.observe(SPEC, 100.0, demand=0, workers=served(1, 0.0, 100.0), ready=True)
    assert ka._tracks["f"].last == 100.0
    fresh = served(0, 0.1, 200.0, wid="b")  # another worker, started before an expected event
    ka.observe(SPEC, 200.0, demand=0, workers=fresh, ready=True)
    assert ka._tracks["f"].last == 100.0  # it does not restart the windows


def test_after_a_restart_a_live_worker_counts_as_active() -> None:
    """A controller with no last activity for a function (restarted, or taking it over) keeps
    its live worker for the window: that worker's heartbeat may predate the work it did."""
    ka = KeepAlive()
    lagging = served(0, 0.5, 10.0)  # the heartbeat in KV was written before it served
    assert ka.observe(SPEC, 10.0, demand=0, workers=lagging, ready=True) == 1
    assert ka._tracks["f"].last == 9.5


async def wait_recorded(*kas: KeepAlive) -> None:
    with anyio.fail_after(20):
        for ka in kas:
            while ka.busy():
                await ka.synced.wait()


@pytest.mark.anyio
async def test_two_controllers_share_a_history_and_lose_no_samples(
    nats_server: EmbeddedNats, nc: NATS
) -> None:
    other = await connect(nats_server.url, name="other")
    try:
        async with anyio.create_task_group() as tg:
            a, b = KeepAlive(grace=0.0), KeepAlive(grace=0.0)
            await a.start(nc.jetstream(), tg)
            await b.start(other.jetstream(), tg)
            # Both see a function active every 600 s (as when it moves between them), and
            # record at the same time.
            for i in range(1, 31):
                for ka in (a, b):
                    ka.observe(SPEC, 600.0 * i, demand=1, workers=[], ready=i % 10 != 0)
                    ka.observe(SPEC, 600.0 * i + 1, demand=0, workers=[], ready=True)
                await anyio.lowlevel.checkpoint()
            await wait_recorded(a, b)
            stored, _ = await IdleHistoryStore(await open_bucket(nc.jetstream())).read("f")
            assert stored.samples == 2 * 29  # every idle time of both
            assert stored.counts[10] == 2 * 29 and len(stored.cold_starts) == 2 * 3
            # A third controller taking the function over reads the windows learnt.
            c = KeepAlive()
            await c.start(nc.jetstream(), tg)
            c.observe(SPEC, 0.0, demand=0, workers=[], ready=False)
            await wait_recorded(c)
            assert c.windows_of(SPEC).kind == "adaptive" and c.windows_of(SPEC).prewarm_s > 0
            summary = (await summaries(nc.jetstream(), {"f": SPEC}, KeepAliveSettings()))["f"]
            assert summary["cold_starts_1h"] == 6 and summary["basis"] == "histogram"
            assert describe(summary) == "pre-warm 540 s, keep 186 s"
            tg.cancel_scope.cancel()
    finally:
        await other.close()


@pytest.mark.anyio
async def test_a_controller_taking_a_function_over_prewarms_from_the_stored_last_activity(
    nats_server: EmbeddedNats, nc: NATS
) -> None:
    unix = 1_000_000.0  # the Unix clock both controllers read, moved by the test
    async with anyio.create_task_group() as tg:
        a = KeepAlive(grace=0.0, unix_clock=lambda: unix)
        await a.start(nc.jetstream(), tg)
        for i in range(1, 31):  # a function called every 600 s, last at 18,000 s
            for now, demand in ((600.0 * i, 1), (600.0 * i + 1, 0)):
                unix = 1_000_000.0 + now
                a.observe(SPEC, now, demand=demand, workers=[], ready=True)
            await anyio.lowlevel.checkpoint()
        await wait_recorded(a)
        stored, _ = await IdleHistoryStore(await open_bucket(nc.jetstream())).read("f")
        assert stored.last_active == 1_018_000.0
        # Another controller, its own monotonic clock at 5 s, takes the function over 100 s
        # later with no worker running: nothing due yet...
        b = KeepAlive(grace=0.0, unix_clock=lambda: unix)
        await b.start(nc.jetstream(), tg)
        unix = 1_018_100.0
        assert b.observe(SPEC, 5.0, demand=0, workers=[], ready=False) == 0
        await wait_recorded(b)
        assert b._tracks["f"].last == -95.0  # 100 s before its now
        # ...and at 539 s after that activity (the 540 s pre-warm, less a 1 s lead) it
        # starts a worker, with no event waiting.
        unix = 1_018_538.0
        assert b.observe(SPEC, 443.0, demand=0, workers=[], ready=False) == 0
        unix = 1_018_539.0
        assert b.observe(SPEC, 444.0, demand=0, workers=[], ready=False) == 1
        tg.cancel_scope.cancel()


BIN_S = 1.0  # the compressed clock: a bin of 1 s stands for a minute
BEAT_S = 8.0  # the function is called every 8 s (8 "minutes")


@pytest.mark.anyio
async def test_a_function_on_a_beat_is_prewarmed_before_each_event_and_unloaded_between(
    nats_server: EmbeddedNats, nc: NATS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_NATS_URL", nats_server.url)
    settings = controller_settings(keepalive_bin_s=BIN_S)
    async with (
        ProcessLauncher(code_dir=tmp_path / "code", stop_grace=15) as launcher,
        anyio.create_task_group() as tg,
    ):
        controller = Controller(nc, launcher, settings)
        await tg.start(controller.run)
        (spec,) = await deploy_file(nc, FNS / "beat.py")
        client = Client(nc)
        start = time.monotonic()
        outcomes: list[str] = []  # how each beat since the policy took over was served
        for i in range(18):
            # The beat itself is the workload's schedule, not a wait for the system.
            await anyio.sleep(max(0.0, start + i * BEAT_S - time.monotonic()))
            ready = _ready(await workers_of(nc, "beat"), spec.version)
            answer = await client.call("beat", {"i": i}, timeout=30)
            assert answer["i"] == i
            if outcomes or controller.keepalive.windows_of(spec).kind == "adaptive":
                outcomes.append(_served_by(ready, answer["pid"]) if outcomes else "-")
                if outcomes[-3:] == ["prewarmed"] * 3:
                    break
                # Unloaded right after the event (then loaded again ahead of the next one).
                await wait_workers(nc, "beat", lambda e: not _ready(e, spec.version), BEAT_S)
        # Three events in a row were each served by a worker started before it with no
        # event waiting (a pre-warm: it had served nothing yet), unloaded after each.
        assert outcomes[-3:] == ["prewarmed"] * 3, outcomes
        w = controller.keepalive.windows_of(spec)
        assert (w.kind, w.basis) == ("adaptive", "histogram") and 0 < w.prewarm_s < BEAT_S, w
        assert w.end_s > BEAT_S, w
        # The controller counted a cold start for the learning beats, none for those.
        counted = await summaries(nc.jetstream(), {"beat": spec}, KeepAliveSettings(BIN_S))
        learning = i + 1 - len(outcomes) + 1
        cold = counted["beat"]["cold_starts_1h"]
        assert isinstance(cold, int) and 1 <= cold <= learning + outcomes.count("cold"), cold
        tg.cancel_scope.cancel()


def _ready(entries: dict[str, dict[str, Any]], version: str) -> list[dict[str, Any]]:
    return [w for w in entries.values() if w["state"] == "ready" and w["version"] == version]


def _served_by(before: list[dict[str, Any]], pid: int) -> str:
    """How an event was served: by the one worker ready when it was published, fresh from a
    pre-warm ("prewarmed": it had served nothing), or one kept since the last ("kept"); by
    a worker started for it ("cold")."""
    by = [w for w in before if w["pid"] == pid]
    if not by:
        return "cold"
    return "prewarmed" if by[0]["served"] == 0 and len(before) == 1 else "kept"


def test_the_live_replay_plans_a_window_and_simulates_it_with_the_history_before() -> None:
    from bench import keepalive_live

    beat = list(range(0, 200, 10))  # every 10 minutes
    busy = list(range(200))  # every minute: left out
    rare = [5, 150]  # twice: left out
    p = keepalive_live.plan([beat, busy, rare], start=100, minutes=60, count=20)
    assert p.rows == [0] and p.names == ["t000"]
    assert p.before == [[10.0] * 9] and p.window == [[0, 10, 20, 30, 40, 50]]
    predicted = keepalive_live.simulate(p, KeepAliveSettings())
    # Learnt before the window: only its first event (no worker at the start) is cold.
    assert predicted["cold_starts"] == 1 and predicted["invocation_minutes"] == 6
    assert predicted["fixed_5"]["cold_starts"] == 6  # a 5-minute window misses every beat
    assert "@function(name='t000')" in keepalive_live.source(p.names)
