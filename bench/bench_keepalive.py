"""Keep-alive policies replayed on an Azure Functions trace: cold starts against wasted minutes.

    python bench/bench_keepalive.py --trace DIR [--plot PATH] [policy settings]

DIR holds ``invocations.csv`` from Azure's 2019 Functions dataset: a row per function, its
invocations per minute in columns ``minute_1..minute_N`` (or ``1..N``). Each function is replayed
at minute granularity with one worker:

- a cold start is a minute with invocations in which the function has no loaded worker (a
  function's first invocation is cold);
- a wasted minute is one in which a worker is loaded and the function has no invocation.

Fixed keep-alive of k minutes keeps the worker through minute t+k after a minute t with
invocations. The adaptive policy is controller.keepalive, the code the controller runs: it
learns each function's idle times online, minute by minute (never from the future), and after
each invocation minute its windows say in which later minutes a worker is loaded. Printed: a
table, the ratio of adaptive cold starts to fixed keep-alive's at the adaptive policy's wasted
minutes (interpolated between the two nearest fixed windows), then one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller.keepalive import (  # noqa: E402
    KeepAliveSettings,
    Windows,
    new_history,
    observe,
    windows,
    workers_wanted,
)

FIXED_MINUTES = (1, 5, 10, 20, 30, 60, 120, 240)
MINUTE_S = 60.0  # one trace minute on the policy's clock


def load_trace(folder: Path) -> tuple[list[list[int]], int]:
    """Each function's invocation minutes (0-based, ascending) and the trace's length."""
    path = folder / "invocations.csv"
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        columns = sorted(
            (int(name.removeprefix("minute_")) - 1, i)
            for i, name in enumerate(header)
            if name.removeprefix("minute_").isdigit()
        )
        if not columns or columns[0][0] < 0:
            raise ValueError(f"{path}: no per-minute columns (minute_1.. or 1..)")
        functions = [
            [m for m, i in columns if i < len(row) and _count(row[i]) > 0] for row in reader
        ]
    return functions, columns[-1][0] + 1


def _count(cell: str) -> float:
    return float(cell) if cell.strip() else 0.0


class Policy(Protocol):
    def windows(self) -> Windows: ...
    def observe(self, idle_s: float) -> None: ...


class Fixed:
    def __init__(self, minutes: int) -> None:
        self._windows = Windows(0.0, minutes * MINUTE_S, "fixed", "configured")

    def windows(self) -> Windows:
        return self._windows

    def observe(self, idle_s: float) -> None:
        pass


class Adaptive:
    """controller.keepalive on one function's history, learnt as the replay goes."""

    def __init__(self, settings: KeepAliveSettings, used: Counter[str]) -> None:
        self.settings = settings
        self.history = new_history(settings)
        self.used = used  # how often each basis gave the windows, over all functions

    def windows(self) -> Windows:
        w = windows(self.history, self.settings)
        self.used[w.basis] += 1
        return w

    def observe(self, idle_s: float) -> None:
        observe(self.history, idle_s)


@dataclass
class Result:
    cold_starts: int = 0
    wasted_minutes: int = 0
    cold_pct: list[float] = field(default_factory=list)  # per function with invocations

    def summary(self) -> dict[str, Any]:
        return {
            "cold_starts": self.cold_starts,
            "wasted_minutes": self.wasted_minutes,
            "cold_pct_median": round(percentile(self.cold_pct, 50), 2),
            "cold_pct_p75": round(percentile(self.cold_pct, 75), 2),
        }


def replay(active: list[int], minutes: int, policy: Policy, result: Result) -> None:
    """One function through the trace; adds its cold starts and wasted minutes."""
    if not active:
        return
    cold = 1  # the first invocation finds no worker
    for i, t in enumerate(active):
        w = policy.windows()
        until = active[i + 1] if i + 1 < len(active) else minutes  # next invocation, or end
        for j in range(1, until - t):
            if workers_wanted(w, j * MINUTE_S):
                result.wasted_minutes += 1
        if i + 1 < len(active):
            idle_s = (until - t) * MINUTE_S
            if not workers_wanted(w, idle_s):
                cold += 1
            policy.observe(idle_s)
    result.cold_starts += cold
    result.cold_pct.append(100.0 * cold / len(active))


def percentile(xs: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not xs:
        return 0.0
    s = sorted(xs)
    pos = (len(s) - 1) * p / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def fixed_cold_at(points: list[tuple[int, int]], wasted: float) -> float:
    """Fixed keep-alive's cold starts at ``wasted`` minutes: linear between the two nearest
    (wasted, cold) points, clamped to the end points outside them."""
    pts = sorted(points)
    if wasted <= pts[0][0]:
        return float(pts[0][1])
    for (w0, c0), (w1, c1) in itertools.pairwise(pts):
        if wasted <= w1:
            return c0 + (c1 - c0) * (wasted - w0) / (w1 - w0) if w1 > w0 else float(c1)
    return float(pts[-1][1])


def settings_from(args: argparse.Namespace) -> KeepAliveSettings:
    return KeepAliveSettings(
        head=args.head,
        tail=args.tail,
        margin=args.margin,
        min_samples=args.min_samples,
        cv_threshold=args.cv_threshold,
        oob_threshold=args.oob_threshold,
        fixed_s=args.fixed_min * MINUTE_S,
    )


def main(argv: list[str] | None = None) -> None:
    d = KeepAliveSettings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--trace", type=Path, required=True, help="folder with invocations.csv")
    p.add_argument("--plot", type=Path, help="write a PNG of the trade-off (needs matplotlib)")
    p.add_argument(
        "--live",
        action="store_true",
        help="also replay a window of the trace live: a real controller and worker processes",
    )
    p.add_argument("--live-start", type=int, default=720, help="the window's first minute")
    p.add_argument("--live-minutes", type=int, default=120, help="the window's length, minutes")
    p.add_argument("--live-functions", type=int, default=20, help="functions replayed live")
    p.add_argument("--live-scale", type=float, default=2.0, help="seconds per trace minute")
    p.add_argument("--head", type=float, default=d.head, help="pre-warm percentile (0..1)")
    p.add_argument("--tail", type=float, default=d.tail, help="keep-alive percentile (0..1)")
    p.add_argument("--margin", type=float, default=d.margin, help="histogram margin")
    p.add_argument("--min-samples", type=int, default=d.min_samples)
    p.add_argument("--cv-threshold", type=float, default=d.cv_threshold)
    p.add_argument("--oob-threshold", type=float, default=d.oob_threshold)
    p.add_argument(
        "--fixed-min",
        type=float,
        default=d.fixed_s / MINUTE_S,
        help="the adaptive policy's fixed window, minutes (default: Shoal's idle_timeout)",
    )
    args = p.parse_args(argv)
    plt = pyplot() if args.plot else None
    if args.plot and plt is None:
        p.error("--plot needs the matplotlib package, which is not installed here")
    settings = settings_from(args)
    try:
        functions, minutes = load_trace(args.trace)
    except (OSError, ValueError, StopIteration) as e:
        p.error(f"cannot read the trace in {args.trace}: {e!r}")

    started = time.perf_counter()
    fixed: dict[int, Result] = {}
    for k in FIXED_MINUTES:
        fixed[k] = Result()
        for active in functions:
            replay(active, minutes, Fixed(k), fixed[k])
    adaptive, used = Result(), Counter[str]()
    for active in functions:
        replay(active, minutes, Adaptive(settings, used), adaptive)
    elapsed = time.perf_counter() - started

    invoked = sum(1 for a in functions if a)
    print(
        f"trace: {len(functions)} functions ({invoked} invoked) x {minutes} minutes, "
        f"{sum(map(len, functions))} minutes with invocations; replayed in {elapsed:.1f} s"
    )
    print(
        f"{'policy':<22}{'cold starts':>12}{'cold% median':>14}{'cold% p75':>11}{'wasted min':>12}"
    )
    rows = [(f"fixed {k} min", r) for k, r in fixed.items()] + [("adaptive", adaptive)]
    for name, r in rows:
        s = r.summary()
        print(
            f"{name:<22}{s['cold_starts']:>12}{s['cold_pct_median']:>14.1f}"
            f"{s['cold_pct_p75']:>11.1f}{s['wasted_minutes']:>12}"
        )
    total = sum(used.values()) or 1
    print(
        "adaptive windows by basis: "
        + ", ".join(f"{b} {100 * n / total:.1f}%" for b, n in used.most_common())
    )
    points = [(r.wasted_minutes, r.cold_starts) for r in fixed.values()]
    reference = fixed_cold_at(points, adaptive.wasted_minutes)
    ratio = adaptive.cold_starts / reference if reference else float("nan")
    print(
        f"adaptive / fixed cold starts at {adaptive.wasted_minutes} wasted minutes: "
        f"{adaptive.cold_starts} / {reference:.0f} = {ratio:.3f}"
    )
    if plt is not None:
        plot(plt, args.plot, fixed, adaptive)
        print(f"plot: {args.plot}")
    out: dict[str, Any] = {
        "fixed": {str(k): r.summary() for k, r in fixed.items()},
        "adaptive": adaptive.summary(),
        "ratio": round(ratio, 4),
    }
    if args.live:
        out["live"] = live(args, functions, settings)
    print(json.dumps(out))


def live(
    args: argparse.Namespace, functions: list[list[int]], settings: KeepAliveSettings
) -> dict[str, Any]:
    """The live replay (bench/keepalive_live.py), next to the simulation of the same window."""
    import tempfile

    import anyio

    from bench import keepalive_live

    p = keepalive_live.plan(
        functions, start=args.live_start, minutes=args.live_minutes, count=args.live_functions
    )
    predicted = keepalive_live.simulate(p, settings)
    with tempfile.TemporaryDirectory(prefix="shoal-keepalive-") as tmp:
        measured = anyio.run(lambda: keepalive_live.replay(p, scale=args.live_scale, tmp=Path(tmp)))
    print(
        f"live replay: {len(p.rows)} functions, trace minutes {p.start}-{p.start + p.minutes}, "
        f"1 minute -> {args.live_scale:g} s; {predicted['invocation_minutes']} invocation "
        f"minutes ({measured['answered']} answered, publishing at most "
        f"{measured['max_late_s']:.2f} s late)"
    )
    print(f"{'':<34}{'cold starts':>12}{'worker-minutes':>16}")
    print(
        f"{'simulated (same window)':<34}{predicted['cold_starts']:>12}"
        f"{predicted['loaded_minutes']:>16}"
    )
    f5 = predicted["fixed_5"]
    print(
        f"{'simulated, fixed 5 min (reference)':<34}{f5['cold_starts']:>12}"
        f"{f5['loaded_minutes']:>16}"
    )
    print(
        f"{'live: no ready worker at publish':<34}{measured['cold_starts']:>12}"
        f"{measured['worker_minutes']:>16}"
    )
    print(f"{'live: the controller count':<34}{measured['controller_cold_starts']:>12}")
    return {
        "functions": len(p.rows),
        "start": p.start,
        "minutes": p.minutes,
        "scale_s": args.live_scale,
        "simulated": predicted,
        "measured": measured,
    }


def pyplot() -> Any:
    """matplotlib's pyplot, drawing to files; None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot


def plot(plt: Any, path: Path, fixed: dict[int, Result], adaptive: Result) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [r.wasted_minutes for r in fixed.values()]
    ys = [r.cold_starts for r in fixed.values()]
    ax.plot(xs, ys, "o-", label="fixed keep-alive")
    for k, x, y in zip(fixed, xs, ys, strict=True):
        ax.annotate(f"{k} min", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.plot([adaptive.wasted_minutes], [adaptive.cold_starts], "r*", ms=14, label="adaptive")
    ax.set_xlabel("wasted minutes (worker loaded, no invocation)")
    ax.set_ylabel("cold starts")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
