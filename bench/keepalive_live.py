"""The live replay of ``bench_keepalive.py --live``: a window of the trace, time-compressed,
against a real nats-server, the real controller and real worker processes.

Scaled so that one machine copes: ``count`` functions (drawn with a fixed seed from those with
3 or more invocation minutes in the window and invocations in at most half its minutes: the
always-busy ones are warm under any policy), a window of ``minutes`` trace minutes from
``start``, each trace minute lasting ``scale`` seconds. The controller's bin width is
``scale`` (a bin stands for a minute), so its windows and fallback are the simulation's, in
compressed time. Each function's idle times before the window are recorded into the shared
history first, as the simulation learns them from the start of the day; no worker is loaded
when the window begins, in either. Each invocation minute is one durable event, published at
its compressed time.

Measured: a **cold start** is an event published while its function has no ready worker (the
workers' registry, as the bench sees it); the controller's own count (demand that found no
ready worker) is shown too. **Worker-minutes** are worker processes alive, integrated over the
window (start-up and draining included), in trace minutes. The simulation's prediction for
the same window: cold starts, and loaded minutes (wasted minutes plus invocation minutes).
"""

from __future__ import annotations

import itertools
import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from bench import bench_keepalive as sim
from controller import Controller, ControllerSettings, EmbeddedNats, ProcessLauncher, deploy_file
from controller.adaptive import summaries
from controller.idle_history import IdleHistoryStore, open_bucket
from controller.keepalive import KeepAliveSettings
from controller.views import InfoView
from runtime.wire import protocol
from runtime.wire.connection import connect, kv

if TYPE_CHECKING:
    from pathlib import Path

    from nats.aio.client import Client as NATS

    from runtime.wire.spec import FunctionSpec

SEED = 13


@dataclass
class Plan:
    rows: list[int]  # the trace's rows replayed
    before: list[list[float]]  # per function, idle times before the window (minutes)
    window: list[list[int]]  # per function, invocation minutes in the window (from 0)
    start: int
    minutes: int

    @property
    def names(self) -> list[str]:
        return [f"t{row:03d}" for row in self.rows]


def plan(functions: list[list[int]], *, start: int, minutes: int, count: int) -> Plan:
    end = start + minutes
    fits = [
        i
        for i, active in enumerate(functions)
        if 3 <= sum(1 for m in active if start <= m < end) <= minutes // 2
    ]
    rows = sorted(random.Random(SEED).sample(fits, min(count, len(fits))))
    before, window = [], []
    for i in rows:
        early = [m for m in functions[i] if m < start]
        before.append([float(b - a) for a, b in itertools.pairwise(early)])
        window.append([m - start for m in functions[i] if start <= m < end])
    return Plan(rows, before, window, start, minutes)


def simulate(p: Plan, settings: KeepAliveSettings) -> dict[str, Any]:
    """The simulation of the same window: the controller's policy, its history learnt
    from the minutes before the window, no worker loaded at its start."""
    out, fixed = sim.Result(), sim.Result()
    for seeds, active in zip(p.before, p.window, strict=True):
        policy = sim.Adaptive(settings, Counter())
        for idle in seeds:
            policy.observe(idle * sim.MINUTE_S)
        sim.replay(active, p.minutes, policy, out)
        sim.replay(active, p.minutes, sim.Fixed(5), fixed)  # Shoal's 300 s, for reference
    invoked = sum(map(len, p.window))
    return {
        "cold_starts": out.cold_starts,
        "loaded_minutes": out.wasted_minutes + invoked,
        "invocation_minutes": invoked,
        "fixed_5": {
            "cold_starts": fixed.cold_starts,
            "loaded_minutes": fixed.wasted_minutes + invoked,
        },
    }


def source(names: list[str]) -> str:
    lines = ["from runtime import function\n"]
    for name in names:
        lines.append(f"\n@function(name={name!r})\ndef {name}(event):\n    return event\n")
    return "".join(lines)


async def replay(p: Plan, *, scale: float, tmp: Path) -> dict[str, Any]:
    """Run the window live; measured cold starts and worker-minutes."""
    server = EmbeddedNats(tmp / "nats", port=0).start()
    os.environ["SHOAL_NATS_URL"] = server.url
    (tmp / "replayed.py").write_text(source(p.names))
    nc = await connect(server.url, name="bench-keepalive-live")
    try:
        async with ProcessLauncher(code_dir=tmp / "code") as launcher:
            return await _run(nc, launcher, p, scale, tmp)
    finally:
        await nc.close()
        server.stop()


async def _run(
    nc: NATS, launcher: ProcessLauncher, p: Plan, scale: float, tmp: Path
) -> dict[str, Any]:
    js = nc.jetstream()
    settings = KeepAliveSettings(bin_s=scale)
    store = IdleHistoryStore(await open_bucket(js), settings)
    for name, seeds in zip(p.names, p.before, strict=True):
        if seeds:
            await store.record(name, *(s * scale for s in seeds))
    controller = Controller(
        nc,
        launcher,
        ControllerSettings(
            tick=0.1,
            heartbeat=0.2,
            stale_after=1.5,
            worker_env={"SHOAL_HEARTBEAT": "0.2"},
            calibrate=False,
            keepalive_bin_s=scale,
        ),
    )
    async with anyio.create_task_group() as tg:
        await tg.start(controller.run)
        specs = {s.name: s for s in await deploy_file(nc, tmp / "replayed.py")}
        registry = InfoView(await kv(js, protocol.WORKERS_BUCKET))
        await tg.start(registry.run)
        expected, answered, all_in = sum(map(len, p.window)), Counter[str](), anyio.Event()

        async def on_answer(msg: Any) -> None:
            answered["n"] += 1
            if answered["n"] >= expected:
                all_in.set()

        await nc.subscribe("bench.live.answers", cb=on_answer)
        t0 = time.monotonic() + 1.0
        alive = _Sampler(launcher, t0)
        tg.start_soon(alive.run)
        cold, late = await _publish(nc, registry, specs, p, scale, t0)
        await anyio.sleep(max(0.0, t0 + p.minutes * scale - time.monotonic()))  # the window
        worker_s = alive.stop()
        with anyio.move_on_after(60):
            await all_in.wait()
        with anyio.move_on_after(20):
            while controller.keepalive.busy():
                await controller.keepalive.synced.wait()
        counted = await summaries(js, dict(specs), settings)
        tg.cancel_scope.cancel()
    return {
        "cold_starts": cold,
        "controller_cold_starts": sum(int(str(c["cold_starts_1h"])) for c in counted.values()),
        "worker_minutes": round(worker_s / scale, 1),
        "answered": answered["n"],
        "max_late_s": round(late, 3),
    }


async def _publish(
    nc: NATS,
    registry: InfoView,
    specs: dict[str, FunctionSpec],
    p: Plan,
    scale: float,
    t0: float,
) -> tuple[int, float]:
    """Publish each invocation minute at its time; the cold starts, and the latest a
    publish came after its time."""
    events = sorted((m, name) for name, ms in zip(p.names, p.window, strict=True) for m in ms)
    js = nc.jetstream()
    cold, late = 0, 0.0
    for minute, name in events:
        due = t0 + minute * scale
        await anyio.sleep(max(0.0, due - time.monotonic()))
        late = max(late, time.monotonic() - due)
        version = specs[name].version
        ready = any(
            w.get("function") == name and w.get("state") == "ready" and w.get("version") == version
            for w in registry.items(1.5).values()
        )
        cold += not ready
        await js.publish(
            protocol.event_subject(name), b"{}", headers={protocol.REPLY_TO: "bench.live.answers"}
        )
    return cold, late


class _Sampler:
    """Worker processes alive, integrated over time (seconds)."""

    def __init__(self, launcher: ProcessLauncher, t0: float) -> None:
        self.launcher = launcher
        self.t0 = t0  # from when
        self.total = 0.0
        self._done = anyio.Event()

    async def run(self) -> None:
        await anyio.sleep(max(0.0, self.t0 - time.monotonic()))
        last = time.monotonic()
        while not self._done.is_set():
            with anyio.move_on_after(0.05):
                await self._done.wait()
            now = time.monotonic()
            self.total += len(self.launcher.running()) * (now - last)
            last = now

    def stop(self) -> float:
        self._done.set()
        return self.total
