"""The keep-alive policy (controller.keepalive), its use by the scaler, and its KV store; on a
real cluster, an executor behind a handler on a beat is pre-warmed with it."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bench.bench_keepalive as bench
from controller import Controller, ProcessLauncher, deploy_file
from controller.idle_history import (
    HistoryConflict,
    IdleHistoryStore,
    decode,
    encode,
    key_of,
    open_bucket,
)
from controller.keepalive import (
    IdleHistory,
    KeepAliveSettings,
    Windows,
    bin_of,
    new_history,
    observe,
    windows,
    workers_wanted,
)
from controller.scaler import Observation, WorkerState, decide
from runtime import Client
from runtime.wire.connection import connect
from runtime.wire.spec import FunctionSpec
from tests.conftest import controller_settings, workers_of
from tests.test_adaptive import _served_by as served_by

if TYPE_CHECKING:
    from pathlib import Path

    from nats.aio.client import Client as NATS

    from controller import EmbeddedNats

S = KeepAliveSettings()


def history_of(idle_s: list[float], settings: KeepAliveSettings = S) -> IdleHistory:
    h = new_history(settings)
    for x in idle_s:
        observe(h, x)
    return h


# --- the policy ---------------------------------------------------------------------------


@pytest.mark.parametrize("bin_s", [60.0, 0.05])  # real minutes, and a compressed clock
def test_a_regular_beat_prewarms_just_before_it_and_keeps_briefly(bin_s: float) -> None:
    settings = KeepAliveSettings(bin_s=bin_s)
    beat = 10 * bin_s
    w = windows(history_of([beat] * 20, settings), settings)
    assert (w.kind, w.basis) == ("adaptive", "histogram")
    assert beat * (1 - S.margin) - 1e-3 <= w.prewarm_s < beat  # just before the beat
    assert beat < w.end_s <= (beat + bin_s) * (1 + S.margin) + 1e-3  # just after its bin
    assert w.keepalive_s < beat / 2 and w.keepalive_s < S.fixed_s
    assert workers_wanted(w, 0.0) == 0  # unloaded right after the event
    assert workers_wanted(w, beat / 2) == 0
    assert workers_wanted(w, w.prewarm_s) == workers_wanted(w, beat) == 1
    assert workers_wanted(w, w.end_s + bin_s) == 0


def test_a_jittered_beat_prewarms_before_its_earliest_idle_times() -> None:
    idle = [540.0, 570.0, 600.0, 630.0, 660.0] * 8  # 9 to 11 minutes
    w = windows(history_of(idle))
    assert w.basis == "histogram"
    assert w.prewarm_s <= min(idle) and w.end_s >= max(idle)
    assert all(workers_wanted(w, x) for x in idle)


def test_busy_functions_are_kept_not_unloaded() -> None:
    w = windows(history_of([5.0] * 50 + [90.0] * 2))  # mostly back to back
    assert w.prewarm_s == 0 and w.kind == "adaptive"
    assert workers_wanted(w, 0.0) == workers_wanted(w, 90.0) == 1
    # Called every minute and a half: unloading for 54 s (0.9 of a bin) is not worth it.
    assert windows(history_of([90.0] * 20)).prewarm_s == 0
    assert windows(history_of([150.0] * 20)).prewarm_s == 108.0  # two bins less 10%


def test_too_few_samples_fall_back_to_the_fixed_window() -> None:
    h = history_of([600.0] * (S.min_samples - 1))
    assert windows(h) == Windows(0.0, S.fixed_s, "fixed", "few-samples")
    assert windows(h, fixed_s=42.0).keepalive_s == 42.0  # the function's idle_timeout
    assert workers_wanted(windows(h), S.fixed_s) == 1
    assert workers_wanted(windows(h), S.fixed_s + 1) == 0
    observe(h, 600.0)
    assert windows(h).kind == "adaptive"


@pytest.mark.parametrize(("spread_bins", "kind"), [(240, "fixed"), (60, "fixed"), (40, "adaptive")])
def test_a_flat_histogram_falls_back_to_the_fixed_window(spread_bins: int, kind: str) -> None:
    # Evenly over k of B bins the CV (sample standard deviation) is sqrt((B/k - 1) B/(B-1)):
    # 0, 1.74 (flat) and 2.24 (not flat) here.
    idle = [(i * S.bins // spread_bins + 0.5) * S.bin_s for i in range(spread_bins)] * 3
    h = history_of(idle)
    b = S.bins
    assert math.isclose(h.cv(), math.sqrt((b / spread_bins - 1) * b / (b - 1)), abs_tol=1e-9)
    w = windows(h)
    assert w.kind == kind
    if kind == "fixed":
        assert (w.basis, w.prewarm_s, w.keepalive_s) == ("flat", 0.0, S.fixed_s)


def test_mostly_out_of_bounds_idle_times_prewarm_around_a_forecast() -> None:
    six_hours = 6 * 3600.0
    assert six_hours > S.bins * S.bin_s
    w = windows(history_of([six_hours] * 5))
    assert (w.kind, w.basis) == ("adaptive", "forecast")
    assert math.isclose(w.prewarm_s, six_hours * (1 - S.oob_margin), abs_tol=1e-3)
    assert math.isclose(w.end_s, six_hours * (1 + S.oob_margin), abs_tol=1e-3)
    assert workers_wanted(w, 3600.0) == 0 and workers_wanted(w, six_hours) == 1
    # The median of the latest few: one outlier does not move it.
    w = windows(history_of([6 * 3600.0, 6 * 3600.0, 6 * 3600.0, 20 * 3600.0, 6 * 3600.0]))
    assert w.prewarm_s <= 6 * 3600.0 <= w.end_s


def test_a_few_out_of_bounds_idle_times_leave_the_histogram_in_charge() -> None:
    h = history_of([300.0] * 20 + [9 * 3600.0, 30 * 3600.0])
    assert h.oob_count == 2 and h.in_range == 20
    w = windows(h)
    assert w.basis == "histogram" and w.end_s <= h.range_s


def test_odd_idle_times() -> None:
    h = new_history()
    observe(h, -3.0)  # clocks of two controllers disagree: counts as back to back
    assert h.counts[0] == 1
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError):
            observe(h, bad)
    assert (h.samples, bin_of(h, 0.5 * 60), bin_of(h, 60.0), bin_of(h, 20 * 3600.0)) == (
        1,
        0,
        1,
        1200,
    )
    assert bin_of(history_of([], KeepAliveSettings(bin_s=0.05)), 0.5) == 10  # 0.5 // 0.05 is 9.0
    with pytest.raises(ValueError):
        KeepAliveSettings(head=0.9, tail=0.5)
    with pytest.raises(ValueError):
        KeepAliveSettings(bin_s=0)


def test_lead_starts_a_prewarm_early_and_never_moves_the_end() -> None:
    w = Windows(600.0, 120.0, "adaptive", "histogram")
    assert workers_wanted(w, 590.0) == 0 and workers_wanted(w, 590.0, lead_s=15.0) == 1
    assert workers_wanted(w, 721.0, lead_s=15.0) == 0
    assert workers_wanted(w, None) == 0  # never had an event


idle_times = st.lists(st.floats(0, 20_000, allow_nan=False), max_size=300)


@given(idle_times)
def test_incremental_statistics_match_a_direct_computation(idle: list[float]) -> None:
    h = history_of(idle)
    inside = sorted(x for x in idle if x < h.range_s)
    assert h.in_range == len(inside) and h.oob_count == len(idle) - len(inside)
    if inside:
        mean = statistics.fmean(h.counts)
        assert math.isclose(h.cv(), statistics.stdev(h.counts) / mean, rel_tol=1e-9)
        for p in (S.head, 0.5, S.tail, 1.0):
            nth = inside[max(0, math.ceil(p * len(inside)) - 1)]
            assert h.percentile_bin(p) == bin_of(h, nth)


# --- the policy drives the scaler ---------------------------------------------------------


def test_the_scaler_unloads_prewarms_and_releases_as_the_windows_say() -> None:
    spec = FunctionSpec(name="f", idle_timeout=300.0, code_sha="x")
    w = windows(history_of([600.0] * 20))
    workers: list[WorkerState] = [WorkerState("a", spec.version, "ready", 0, 0.0)]
    loaded = []
    for t in range(0, 901, 10):  # seconds since the function's last event, no event waiting
        workers = [WorkerState(x.id, x.version, x.state, 0, float(t)) for x in workers]
        obs = Observation(0, 0, workers, keep_warm=workers_wanted(w, float(t)))
        d = decide(spec, obs)
        workers = [x for x in workers if x.id not in d.drain]
        workers += [WorkerState(f"n{t}", spec.version, "ready", 0, 0.0)] * d.spawn
        loaded.append(bool(workers))
    on = [t for t, up in zip(range(0, 901, 10), loaded, strict=True) if up]
    assert not loaded[0]  # unloaded at once, though idle_timeout is 300 s
    assert on == list(range(on[0], on[-1] + 1, 10))  # one loaded stretch
    assert w.prewarm_s <= on[0] < 600 < on[-1] <= w.end_s


# --- the trace replay (bench/bench_keepalive.py) -----------------------------------------


def test_the_replay_counts_cold_starts_and_wasted_minutes_as_defined(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    minutes = ",".join(f"minute_{m}" for m in range(1, 11))
    calls = ["3,0,1,0,0,0,0,2,0,0", "0,0,0,0,0,0,0,0,0,0"]  # minutes 0, 2 and 7; never
    rows = [f"f{i},app,owner,{c}" for i, c in enumerate(calls)]
    (tmp_path / "invocations.csv").write_text(f"HashFunction,HashApp,HashOwner,{minutes}\n")
    with (tmp_path / "invocations.csv").open("a") as f:
        f.write("\n".join(rows) + "\n")
    functions, length = bench.load_trace(tmp_path)
    assert (functions, length) == ([[0, 2, 7], []], 10)
    # Keep-alive 2: minute 0 cold, 1 wasted, 2 warm, 3-4 wasted, 7 cold, 8-9 wasted.
    fixed = bench.Result()
    for active in functions:
        bench.replay(active, length, bench.Fixed(2), fixed)
    assert (fixed.cold_starts, fixed.wasted_minutes, fixed.cold_pct) == (2, 5, [200 / 3])
    # Before min_samples the adaptive policy is its fixed window: the same replay.
    settings = KeepAliveSettings(min_samples=10, fixed_s=120.0)
    adaptive = bench.Result()
    bench.replay(functions[0], length, bench.Adaptive(settings, Counter()), adaptive)
    assert adaptive == fixed
    points = [(10, 100), (20, 50), (40, 10)]
    assert [bench.fixed_cold_at(points, w) for w in (5, 15, 30, 99)] == [100, 75, 30, 10]
    bench.main(["--trace", str(tmp_path)])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last["fixed"]) == {str(k) for k in bench.FIXED_MINUTES}
    assert last["fixed"]["1"]["cold_starts"] == 3 and "cold_pct_p75" in last["adaptive"]


# --- the shared history in NATS KV --------------------------------------------------------


@given(idle_times)
def test_a_history_survives_encoding(idle: list[float]) -> None:
    h = history_of(idle)
    back = decode(encode(h))
    assert back == h and windows(back) == windows(h)


def test_garbage_does_not_decode() -> None:
    for data in (b"\xc1", msgpack.packb([1]), msgpack.packb({"v": 99}), b""):
        with pytest.raises(ValueError):
            decode(data)
    bad = msgpack.unpackb(encode(history_of([60.0])))
    bad["counts"] = [[500, 1]]  # beyond the bins
    with pytest.raises(ValueError):
        decode(msgpack.packb(bad))


def test_keys_are_valid_for_kv() -> None:
    assert key_of("embed") == "embed"
    odd = key_of("résumé:v2")
    assert odd.startswith("sha256-") and odd != key_of("résumé:v3")


@pytest.mark.anyio
async def test_two_controllers_recording_at_once_lose_no_samples(
    nats_server: EmbeddedNats, nc: NATS
) -> None:
    n = 60
    other = await connect(nats_server.url, name="test-2")
    try:
        a = IdleHistoryStore(await open_bucket(nc.jetstream()))
        b = IdleHistoryStore(await open_bucket(other.jetstream()))

        async def writer(store: IdleHistoryStore, idle_s: float) -> None:
            for _ in range(n):
                await store.record("fn", idle_s)

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer, a, 60.0)  # bin 1
            tg.start_soon(writer, b, 120.0)  # bin 2
        stored, _ = await IdleHistoryStore(await open_bucket(nc.jetstream())).read("fn")
        assert stored.samples == 2 * n
        assert stored.counts[1] == stored.counts[2] == n
    finally:
        await other.close()


class Interleaved(IdleHistoryStore):
    """A store whose reads are each followed by a rival controller's write, as if it lost
    the race every time: the rival is another store, on the same real server."""

    rival: IdleHistoryStore
    rival_writes: int = 0

    async def read(self, function: str) -> tuple[IdleHistory, int]:
        got = await super().read(function)
        if self.rival_writes:
            self.rival_writes -= 1
            await self.rival.record(function, 180.0)
        return got


@pytest.mark.anyio
async def test_a_write_that_lost_a_race_is_redone_on_what_is_stored(nc: NATS) -> None:
    bucket = await open_bucket(nc.jetstream())
    store = Interleaved(bucket, attempts=5)
    store.rival = IdleHistoryStore(bucket)
    store.rival_writes = 2
    h = await store.record("fn", 60.0)
    assert store.conflicts == 2
    assert (h.counts[1], h.counts[3]) == (1, 2)
    assert (await store.read("fn"))[0] == h

    stale, revision = await store.read("fn")
    await store.rival.record("fn", 60.0)
    observe(stale, 60.0)
    assert await store.write("fn", stale, revision) is None  # refused, nothing written
    assert (await store.read("fn"))[0].samples == h.samples + 1

    store.rival_writes = 5  # loses every attempt: gives up, the rival's samples all kept
    with pytest.raises(HistoryConflict):
        await store.record("fn", 60.0)
    assert (await store.read("fn"))[0].counts[3] == 2 + 5


@pytest.mark.anyio
async def test_the_history_outlives_its_controller(nats_server: EmbeddedNats, nc: NATS) -> None:
    first = await connect(nats_server.url, name="first")
    await IdleHistoryStore(await open_bucket(first.jetstream())).record("fn", *[600.0] * 20)
    await first.close()
    later = IdleHistoryStore(await open_bucket(nc.jetstream()))
    assert await later.windows("fn") == windows(history_of([600.0] * 20))
    assert (await later.windows("never-called", fixed_s=7.0)).keepalive_s == 7.0


@pytest.mark.anyio
async def test_deleted_and_undecodable_histories_are_started_anew(nc: NATS) -> None:
    bucket = await open_bucket(nc.jetstream())
    store = IdleHistoryStore(bucket)
    await store.record("fn", 60.0)
    await bucket.delete(key_of("fn"))
    assert (await store.record("fn", 60.0)).samples == 1
    await bucket.put(key_of("odd"), b"not msgpack \xc1")
    assert (await store.record("odd", 60.0)).samples == 1
    assert decode((await bucket.get(key_of("odd"))).value or b"").samples == 1


# --- an executor behind a handler on a real cluster ---------------------------------------

BEAT_WITH_MODEL = '''
"""A handler called on a regular beat, and the executor it uses; keep-alive is adaptive."""

import os

from runtime import Executor, executor, function, uses


@executor(name="beat_model", max_batch=1, max_wait_ms=1)
class BeatModel:
    def __call__(self, batch):
        return [os.getpid() for _ in batch]  # which worker served it


@function(name="beat_handler")
async def beat_handler(event, model: Executor[int, int] = uses(BeatModel)):
    return {**event, "pid": os.getpid(), "model_pid": await model(0)}
'''
BIN_S = 1.0  # the compressed clock: a bin of 1 s stands for a minute
# The handler is called every 12 s (12 "minutes"): longer than the fixed windows (5 s for
# the handler, 10 s for the executor at this bin width), so that only pre-warming keeps
# either from starting cold.
BEAT_S = 12.0


@pytest.mark.anyio
async def test_an_executor_is_ready_with_its_handler_before_each_beat(
    nats_server: EmbeddedNats, nc: NATS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the handler's keep-alive is adaptive, it is ready before each event (pre-warmed
    or kept, as its history says), and so is the executor it uses, loaded while its handler
    has a worker up (even while the executor's own window is still the fixed one): neither
    starts cold, where the fixed windows alone start both cold at every beat."""
    monkeypatch.setenv("SHOAL_NATS_URL", nats_server.url)
    path = tmp_path / "beat_with_model.py"
    path.write_text(BEAT_WITH_MODEL)
    async with (
        ProcessLauncher(code_dir=tmp_path / "code", stop_grace=15) as launcher,
        anyio.create_task_group() as tg,
    ):
        controller = Controller(nc, launcher, controller_settings(keepalive_bin_s=BIN_S))
        await tg.start(controller.run)
        specs = {s.name: s for s in await deploy_file(nc, path)}
        handler, model = specs["beat_handler"], specs["beat_model"]
        client = Client(nc)
        start = time.monotonic()
        learning: list[tuple[str, str]] = []  # (handler, executor): how each beat was served
        outcomes: list[tuple[str, str]] = []  # the same, once the policy is in charge
        for i in range(20):
            # The beat itself is the workload's schedule, not a wait for the system.
            await anyio.sleep(max(0.0, start + i * BEAT_S - time.monotonic()))
            adaptive = controller.keepalive.windows_of(handler).kind == "adaptive"
            ready = {s.name: ready_of(await workers_of(nc, s.name), s) for s in specs.values()}
            answer = await client.call("beat_handler", {"i": i}, timeout=30)
            assert answer["i"] == i
            served = (
                served_by(ready[handler.name], answer["pid"]),
                served_by(ready[model.name], answer["model_pid"]),
            )
            (outcomes if adaptive else learning).append(served)
            if len(outcomes) >= 3 and all("cold" not in o for o in outcomes[-3:]):
                break
        # Three events in a row, each served by a handler and an executor ready before it.
        assert len(outcomes) >= 3 and all("cold" not in o for o in outcomes[-3:]), outcomes
        # While the fixed windows decided, the handler started cold at every beat.
        assert learning and all(h == "cold" for h, _ in learning), learning
        tg.cancel_scope.cancel()


def ready_of(entries: dict[str, dict[str, Any]], spec: FunctionSpec) -> list[dict[str, Any]]:
    return [w for w in entries.values() if w["state"] == "ready" and w["version"] == spec.version]
