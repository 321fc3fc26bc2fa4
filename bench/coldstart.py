"""Zero workers to first answer, in rounds: each switch setting in turn, interleaved, medians.

A round starts a controller with a fresh process launcher (the template process on or off, the
engine templates for executors on or off, other switches as environment variables its workers
inherit), deploys with a fixed keep-alive window (the learnt policy would rightly pre-warm a
function called every few seconds, and the round would time a warm call), waits until the
launcher's templates are ready (the plain one and those of the executors deployed: a long-
running controller's have long finished importing) and no worker of the functions is registered,
then times one call from zero workers to its answer, and reads the phases each new worker
reports in its heartbeat's ``startup`` (spawn, connect, load, setup). Leaving the round stops
its workers, so the next one starts from zero again."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from controller import Controller, ControllerSettings, ProcessLauncher
from controller.deploy import deploy_file
from runtime.launch import preload_for
from tests.conftest import wait_workers

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence
    from pathlib import Path

    from nats.aio.client import Client as NATS

PHASES = ("spawn", "connect", "load", "setup")
FIXED_WINDOW_S = 300.0


@dataclass(frozen=True)
class Setting:
    label: str
    template: bool
    env: Mapping[str, str]  # variables the workers inherit (SHOAL_MODEL_CACHE_ENABLED...)
    engines: bool = True  # executors forked from a template that imported their engine


@dataclass
class Round:
    setting: Setting
    cold: float  # seconds, zero workers to the first answer
    phases: dict[str, dict[str, float]]  # function -> phase -> seconds


async def one_round(
    nc: NATS,
    setting: Setting,
    *,
    path: Path,
    call: Callable[[], Awaitable[Any]],
    functions: Sequence[str],
    code_dir: Path,
) -> Round:
    saved = {k: os.environ.get(k) for k in setting.env}
    os.environ.update(setting.env)
    try:
        async with ProcessLauncher(
            code_dir=code_dir, template=setting.template, engines=setting.engines
        ) as launcher:
            async with anyio.create_task_group() as tg:
                settings = ControllerSettings.from_env(tick=0.1)
                await tg.start(Controller(nc, launcher, settings).run)
                fixed = {name: {"idle_timeout": FIXED_WINDOW_S} for name in functions}
                for spec in await deploy_file(nc, path, overrides=fixed):
                    await launcher.ready(preload_for(spec.kind, spec.engine))
                for name in functions:  # from zero: nothing pre-warmed, nothing left over
                    await wait_workers(nc, name, lambda entries: not entries, timeout=60)
                t = time.perf_counter()
                await call()
                cold = time.perf_counter() - t
                phases = {}
                for name in functions:
                    entries = await wait_workers(nc, name, bool, timeout=60)
                    phases[name] = next(iter(entries.values())).get("startup", {})
                tg.cancel_scope.cancel()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Round(setting, cold, phases)


async def rounds(
    nc: NATS,
    settings: Sequence[Setting],
    repeats: int,
    **kwargs: Any,
) -> list[Round]:
    """``repeats`` rounds of every setting, their order rotated each time."""
    done = []
    for r in range(repeats):
        for i in range(len(settings)):
            setting = settings[(i + r) % len(settings)]
            done.append(await one_round(nc, setting, **kwargs))
            load = os.getloadavg()[0]
            print(
                f"   round {r + 1}/{repeats} {setting.label}: {done[-1].cold * 1000:.0f} ms"
                f" (load average {load:.1f})"
            )
    return done


def report(done: Sequence[Round], functions: Sequence[str]) -> dict[str, float]:
    """Print the medians per setting (the phases too); returns label -> median seconds."""
    medians = {}
    labels = list(dict.fromkeys(r.setting.label for r in done))
    print(f"   {'setting':<34}{'median':>8}{'min':>7}{'max':>7}   phases (median ms)")
    for label in labels:
        mine = [r for r in done if r.setting.label == label]
        colds = [r.cold * 1000 for r in mine]
        medians[label] = statistics.median(colds) / 1000
        parts = []
        for name in functions:
            shown = ", ".join(
                f"{p} {statistics.median(r.phases[name].get(p, 0) for r in mine) * 1000:.0f}"
                for p in PHASES
            )
            parts.append(f"{name}: {shown}")
        print(
            f"   {label:<34}{statistics.median(colds):>7.0f}m{min(colds):>6.0f}m{max(colds):>6.0f}m"
            f"   {'; '.join(parts)}"
        )
    return medians
