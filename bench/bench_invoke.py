"""Invocation overhead: Shoal's two paths against a raw nats-py responder on the same server.

    python bench/bench_invoke.py [--n 2000] [--seconds 5] [--inflight 64] [--tracing both]
    python bench/bench_invoke.py [--n 2000] [--seconds 5] [--inflight 64] [--metrics both]
    python bench/bench_invoke.py [--cold-rounds 7] [--cold-only]

First, cold starts: zero workers to the first answer of fn.echo.call with the template process
on and off (SHOAL_WORKER_TEMPLATE), in interleaved rounds, medians and phases
(bench/coldstart.py); ``--cold-only`` stops there.

Starts one nats-server, a raw nats-py request/reply responder in its own process (the
baseline), and a Shoal controller that spawns echo workers as processes. Measures, in one run:
  (a) raw request/reply,  (b) fn.echo.call,  (c) durable fn.echo with Shoal-Reply-To, end to end,
sequentially and with N requests in flight, and prints p50/p99, throughput and ratios to (a).

``--tracing on`` exports the workers' spans over OTLP/HTTP to a receiver in this process
(``OTEL_EXPORTER_OTLP_ENDPOINT``); ``--tracing both`` runs the whole measurement twice, off
then on, each on a fresh server, and prints both tables (trace context travels either way).

``--metrics both`` (the default) measures twice in the same run, against the same server: with
the controller's metrics off (``SHOAL_METRICS_ADDR=off``), then on, with /metrics scraped every
second and the status page's /api/status every 2 s, as Prometheus and an open page would; then
it prints the difference. ``on`` or ``off`` measures once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.coldstart import Setting, rounds  # noqa: E402
from bench.coldstart import report as report_cold  # noqa: E402
from controller import Controller, ControllerSettings, EmbeddedNats, ProcessLauncher  # noqa: E402
from controller.deploy import deploy_file  # noqa: E402
from runtime.wire.connection import connect  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.client import Client as NATS

RAW_RESPONDER = """
import asyncio, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1])
    async def cb(m):
        await nc.publish(m.reply, m.data)
    await nc.subscribe("raw.echo", cb=cb)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

ECHO = ROOT / "functions" / "echo.py"
PAYLOAD = json.dumps({"text": "hello from the benchmark", "n": 42}).encode()
HEADERS = {"Content-Type": "application/json"}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000


async def sequential(n: int, once: Callable[[int], Awaitable[None]]) -> list[float]:
    lat = []
    for i in range(n):
        t = time.perf_counter()
        await once(i)
        lat.append(time.perf_counter() - t)
    return lat


async def concurrent(
    seconds: float, inflight: int, once: Callable[[int], Awaitable[None]]
) -> tuple[list[float], float]:
    lat: list[float] = []
    counter = iter(range(10**9))
    deadline = time.perf_counter() + seconds

    async def lane() -> None:
        while time.perf_counter() < deadline:
            i = next(counter)
            t = time.perf_counter()
            await once(i)
            lat.append(time.perf_counter() - t)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(inflight):
            tg.start_soon(lane)
    return lat, len(lat) / (time.perf_counter() - start)


class Durable:
    """Publishes to fn.echo with Shoal-Reply-To and matches answers by request id."""

    def __init__(self, nc: NATS, tag: str) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.tag = tag
        self.waiting: dict[str, anyio.Event] = {}
        self.sent = 0  # ids never repeat: JetStream drops a repeated Nats-Msg-Id as a duplicate

    async def start(self) -> None:
        async def on_reply(msg) -> None:
            ev = self.waiting.pop(msg.headers["Shoal-Request-Id"], None)
            if ev:
                ev.set()

        await self.nc.subscribe(f"bench.{self.tag}", cb=on_reply)

    async def once(self, i: int) -> None:
        self.sent += 1
        rid = f"{self.tag}-{self.sent}"
        ev = self.waiting[rid] = anyio.Event()
        await self.js.publish(
            "fn.echo",
            PAYLOAD,
            headers={**HEADERS, "Nats-Msg-Id": rid, "Shoal-Reply-To": f"bench.{self.tag}"},
        )
        with anyio.move_on_after(30) as scope:
            await ev.wait()
        if scope.cancelled_caught:
            ci = await self.js.consumer_info("SHOAL_FN_ECHO", "workers")
            raise RuntimeError(f"no answer for {rid} in 30 s; consumer: {ci}")


def start_baseline(tmp: Path) -> tuple[EmbeddedNats, subprocess.Popen[str]]:
    server = EmbeddedNats(tmp / "nats", port=0).start()
    os.environ["SHOAL_NATS_URL"] = server.url
    raw = subprocess.Popen(
        [sys.executable, "-c", RAW_RESPONDER, server.url], stdout=subprocess.PIPE, text=True
    )
    assert raw.stdout is not None and raw.stdout.readline().strip() == "ready"
    return server, raw


Row = tuple[str, list[float], list[float], float]  # label, sequential, concurrent, req/s


async def main(args: argparse.Namespace) -> None:
    modes = ["off", "on"] if args.tracing == "both" else [args.tracing]
    for mode in modes:
        if mode == "off":
            print("\n== tracing off (no OTEL_EXPORTER_OTLP_ENDPOINT)")
            await measure_all(args)
            continue
        from tests.otlp import Receiver

        with Receiver() as receiver:
            os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint  # workers inherit it
            print(f"\n== tracing on (spans exported to {receiver.endpoint})")
            try:
                await measure_all(args)
            finally:
                del os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
            print(f"spans received: {len(receiver.spans())}")


async def measure_all(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    server, raw = start_baseline(tmp)
    nc = await connect(server.url, name="bench")
    try:
        if args.cold_rounds:
            await cold_starts(nc, tmp, args.cold_rounds)
        if args.cold_only:
            return
        modes = ["off", "on"] if args.metrics == "both" else [args.metrics]
        results: dict[str, list[list[Row]]] = {mode: [] for mode in modes}
        for r in range(args.rounds):  # alternating, so a busy moment hits both alike
            for mode in modes:
                results[mode].append(await measure(nc, args, tmp, mode, r))
        if len(results) == 2:
            compare(results["off"], results["on"], args.inflight)
    finally:
        await nc.close()
        raw.kill()
        server.stop()


async def cold_starts(nc: NATS, tmp: Path, repeats: int) -> None:
    print(f"cold start, zero workers to the first answer of fn.echo.call, {repeats} rounds each:")

    async def call() -> None:
        await nc.request("fn.echo.call", PAYLOAD, timeout=60, headers=HEADERS)

    settings = [
        Setting("template process on", True, {}),
        Setting("template process off", False, {}),
    ]
    done = await rounds(
        nc, settings, repeats, path=ECHO, call=call, functions=["echo"], code_dir=tmp / "code"
    )
    print()
    report_cold(done, ["echo"])
    print("   (ms) goal: <= 50 ms with the template process\n")


async def measure(
    nc: NATS, args: argparse.Namespace, tmp: Path, mode: str, round_: int = 0
) -> list[Row]:
    """One controller (metrics ``mode``), its echo workers, every path measured."""
    settings = ControllerSettings.from_env(metrics_addr="127.0.0.1:0" if mode == "on" else None)
    async with ProcessLauncher(code_dir=tmp / f"code-{mode}-{round_}") as launcher:
        async with anyio.create_task_group() as tg:
            controller = Controller(nc, launcher, settings)
            await tg.start(controller.run)
            await deploy_file(nc, ROOT / "functions" / "echo.py")
            t = time.perf_counter()
            await nc.request("fn.echo.call", PAYLOAD, timeout=60, headers=HEADERS)
            cold = time.perf_counter() - t
            if controller.metrics is not None and controller.metrics.url:
                tg.start_soon(scrape, controller.metrics.url)
            print(f"\n== metrics {mode} (round {round_ + 1})")
            rows = await report(nc, args, cold, launcher, f"{mode}{round_}")
            tg.cancel_scope.cancel()
    return rows


async def scrape(url: str) -> None:
    """What Prometheus (every second) and an open status page (every 2 s) ask for."""

    def get(path: str) -> None:
        with urllib.request.urlopen(url + path, timeout=10) as r:
            r.read()

    for tick in range(10**9):
        await anyio.to_thread.run_sync(get, "metrics")
        if tick % 2 == 0:
            await anyio.to_thread.run_sync(get, "api/status")
        await anyio.sleep(1.0)


def compare(off: list[list[Row]], on: list[list[Row]], inflight: int) -> None:
    """Medians over the rounds: p50 (sequential) and req/s (@inflight), absolute and as a
    ratio to the raw baseline (a) of the same round, which takes out the machine's load."""

    def figures(rounds: list[list[Row]]) -> list[tuple[float, float, float, float]]:
        out = []
        for i in range(len(rounds[0])):
            p50 = [pct(r[i][1], 0.5) for r in rounds]
            rate = [r[i][3] for r in rounds]
            p50_x = [pct(r[i][1], 0.5) / pct(r[0][1], 0.5) for r in rounds]
            rate_x = [r[i][3] / r[0][3] for r in rounds]
            out.append(tuple(statistics.median(v) for v in (p50, rate, p50_x, rate_x)))
        return out  # type: ignore[return-value]

    print(f"\n== metrics off -> on, {len(off)} round(s) each, alternating; medians")
    rate = f"req/s @{inflight}"
    print(f"{'path':<40}{'seq p50 ms':>22}{'x raw':>16}{rate:>22}{'x raw':>16}")
    for (label, *_), a, b in zip(off[0], figures(off), figures(on), strict=True):
        print(
            f"{label:<40}{a[0]:>9.3f} ->{b[0]:>7.3f} {(b[0] / a[0] - 1) * 100:+4.0f}%"
            f"{a[2]:>7.2f} ->{b[2]:>5.2f}"
            f"{a[1]:>9.0f} ->{b[1]:>6.0f} {(b[1] / a[1] - 1) * 100:+4.0f}%"
            f"{a[3]:>7.2f} ->{b[3]:>5.2f}"
        )


async def report(
    nc: NATS, args: argparse.Namespace, cold: float, launcher: ProcessLauncher, tag: str = ""
) -> list[Row]:
    async def raw_once(i: int) -> None:
        await nc.request("raw.echo", PAYLOAD, timeout=30)

    async def call_once(i: int) -> None:
        await nc.request("fn.echo.call", PAYLOAD, timeout=30, headers=HEADERS)

    durable = Durable(nc, f"seq{tag}")
    await durable.start()
    durable_c = Durable(nc, f"conc{tag}")
    await durable_c.start()

    # Warm every path so no run pays a one-off cost.
    await sequential(200, raw_once)
    await sequential(200, call_once)
    await sequential(200, durable.once)

    rows: list[Row] = []
    for label, seq_fn, conc_fn in (
        ("(a) raw nats-py request/reply", raw_once, raw_once),
        ("(b) fn.echo.call", call_once, call_once),
        ("(c) durable fn.echo + Shoal-Reply-To", durable.once, durable_c.once),
    ):
        seq = await sequential(args.n, seq_fn)
        conc, rate = await concurrent(args.seconds, args.inflight, conc_fn)
        rows.append((label, seq, conc, rate))

    base_seq = statistics.median(rows[0][1])
    base_conc = statistics.median(rows[0][2])
    print(f"\ncold start, zero workers to first answer of fn.echo.call: {cold * 1000:.0f} ms")
    print(f"echo workers at the end: {len(launcher.running())}\n")
    print(
        f"{'path':<40}{'seq p50':>9}{'seq p99':>9}{'x raw':>7}   "
        f"{'@' + str(args.inflight) + ' p50':>9}{'p99':>8}{'x raw':>7}{'req/s':>9}"
    )
    for label, seq, conc, rate in rows:
        print(
            f"{label:<40}{pct(seq, 0.5):>8.2f}m{pct(seq, 0.99):>8.2f}m"
            f"{statistics.median(seq) / base_seq:>7.2f}   "
            f"{pct(conc, 0.5):>8.2f}m{pct(conc, 0.99):>7.2f}m"
            f"{statistics.median(conc) / base_conc:>7.2f}{rate:>9.0f}"
        )
    print("\n(ms; 'x raw' = p50 / p50 of (a) in the same mode)")
    print("targets: (b) seq p50 <= 2.5x raw, (c) seq p50 <= 4x raw, >= 3000 invocations/s @64")
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000, help="sequential requests per path")
    p.add_argument("--seconds", type=float, default=5.0, help="duration of each concurrent run")
    p.add_argument("--inflight", type=int, default=64)
    p.add_argument("--tracing", choices=("off", "on", "both"), default="off")
    p.add_argument(
        "--metrics",
        choices=("both", "on", "off"),
        default="both",
        help="the controller's /metrics and status page: measure with both, or one",
    )
    p.add_argument("--rounds", type=int, default=1, help="measurements per mode, alternating")
    p.add_argument("--cold-rounds", type=int, default=7, help="cold starts per setting; 0: none")
    p.add_argument("--cold-only", action="store_true", help="only the cold starts")
    anyio.run(main, p.parse_args())
