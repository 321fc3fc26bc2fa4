"""Invocation overhead: Shoal's two paths against raw nats-py and FastStream on the same server.

    python bench/bench_invoke.py [--n 2000] [--seconds 5] [--inflight 64] [--blocks 5]
    python bench/bench_invoke.py [--n 2000] [--seconds 5] [--inflight 64] [--tracing both]
    python bench/bench_invoke.py [--n 2000] [--seconds 5] [--inflight 64] [--metrics both]
    python bench/bench_invoke.py [--cold-rounds 7] [--cold-only]

First, cold starts: zero workers to the first answer of fn.echo.call with the template process
on and off (SHOAL_WORKER_TEMPLATE), in interleaved rounds, medians and phases
(bench/coldstart.py); ``--cold-only`` stops there.

Starts one nats-server, a raw nats-py request/reply responder in its own process (the
baseline), FastStream's NATS subscriber and its JetStream pull subscriber, each in a process of
its own (per-message logging off: ``NatsBroker(logger=None)``), and a Shoal controller that
spawns echo workers as processes, at most ``--workers`` of them per function (default 1: one
process, as each peer has; 0: as the controller scales it, which on a small machine can mean
more workers than cores, each idle one slower to wake). All echo the same JSON event.

Each framework runs a plain ``def`` handler in a thread (FastStream in anyio's thread pool,
Shoal in a thread of its own) and an ``async def`` one on its event loop, so each kind is
measured against its like: the ``async def`` echo (FastStream's example handler;
bench/echo_async.py for Shoal) and the ``def`` echo (functions/echo.py, what Shoal ships).
Measures, in one run, with the same nats-py client:
  (a) raw request/reply,
  (b) FastStream's NATS subscriber, request/reply, async def echo,
  (c) FastStream's JetStream pull subscriber (durable consumer, work-queue stream on file, as
      Shoal's), published with ``reply_to`` and answered there, end to end, async def echo,
  (d) fn.aecho.call, async def echo,
  (e) durable fn.aecho with Shoal-Reply-To, end to end, async def echo,
  (f) FastStream's NATS subscriber, def echo,
  (g) fn.echo.call, def echo,
  (h) durable fn.echo with Shoal-Reply-To, end to end, def echo,
sequentially and with N requests in flight, and prints p50/p99, throughput and ratios to (a),
the goals against the peers (d against b, e against c, g against f), and a last line of JSON
(``{"bench": "invoke", ...}``). The paths take turns in ``--blocks`` blocks (n / blocks
sequential requests, then seconds / blocks at N in flight, each), so a busy moment of a shared
machine falls on all of them alike.

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
import platform
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

# FastStream as its users write it: a broker, a typed handler that returns the event (decoded
# from JSON and encoded again, as Shoal's echo does), per-message logging off. argv: the
# server's URL and "nats", "nats-sync" (a ``def`` handler, which FastStream runs in anyio's
# thread pool) or "jetstream". The JetStream stream is configured as Shoal's
# function streams are (work queue, file storage, 120 s duplicate window); FastStream answers a
# JetStream message on its ``reply_to`` header, with its ``correlation_id``.
PEER_RESPONDER = """
import asyncio, sys
from typing import Any
from faststream.nats import JStream, NatsBroker, PullSub
from nats.js.api import RetentionPolicy, StorageType

async def main() -> None:
    url, kind = sys.argv[1], sys.argv[2]
    broker = NatsBroker(url, logger=None)
    if kind == "nats":
        @broker.subscriber("peer.fs.echo")
        async def echo(body: Any) -> Any:
            return body
    elif kind == "nats-sync":
        @broker.subscriber("peer.fs.echo.sync")
        def echo_sync(body: Any) -> Any:
            return body
    else:
        stream = JStream(
            "PEER_FS_ECHO", subjects=["peer.fs.js.echo"], retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE, duplicate_window=120,
        )
        @broker.subscriber(
            "peer.fs.js.echo", stream=stream, durable="workers", pull_sub=PullSub(batch_size=64)
        )
        async def echo_js(body: Any) -> Any:
            return body
    await broker.start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""

ECHO = ROOT / "functions" / "echo.py"
ECHO_ASYNC = ROOT / "bench" / "echo_async.py"
PAYLOAD = json.dumps({"text": "hello from the benchmark", "n": 42}).encode()
HEADERS = {"Content-Type": "application/json"}
PEER_HEADERS = {"content-type": "application/json"}  # FastStream's spelling


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
    """Publishes durable events to a stream with a reply subject in a header, and matches the
    answers by request id: Shoal's fn.echo (Shoal-Reply-To, answered with Shoal-Request-Id,
    the Nats-Msg-Id) by default, or FastStream's (reply_to, answered with correlation_id)."""

    def __init__(
        self,
        nc: NATS,
        tag: str,
        subject: str = "fn.echo",
        stream: str = "SHOAL_FN_ECHO",
        faststream: bool = False,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.tag = tag
        self.subject, self.stream, self.faststream = subject, stream, faststream
        self.id_header = "correlation_id" if faststream else "Shoal-Request-Id"
        self.waiting: dict[str, anyio.Event] = {}
        self.sent = 0  # ids never repeat: JetStream drops a repeated Nats-Msg-Id as a duplicate

    async def start(self) -> None:
        async def on_reply(msg) -> None:
            ev = self.waiting.pop(msg.headers[self.id_header], None)
            if ev:
                ev.set()

        await self.nc.subscribe(f"bench.{self.tag}", cb=on_reply)

    def headers(self, rid: str) -> dict[str, str]:
        if self.faststream:
            return {
                **PEER_HEADERS,
                "Nats-Msg-Id": rid,
                "reply_to": f"bench.{self.tag}",
                "correlation_id": rid,
            }
        return {**HEADERS, "Nats-Msg-Id": rid, "Shoal-Reply-To": f"bench.{self.tag}"}

    async def once(self, i: int) -> None:
        self.sent += 1
        rid = f"{self.tag}-{self.sent}"
        ev = self.waiting[rid] = anyio.Event()
        await self.js.publish(self.subject, PAYLOAD, headers=self.headers(rid))
        with anyio.move_on_after(30) as scope:
            await ev.wait()
        if scope.cancelled_caught:
            ci = await self.js.consumer_info(self.stream, "workers")
            raise RuntimeError(f"no answer for {rid} in 30 s; consumer: {ci}")


def responder(args: list[str]) -> subprocess.Popen[str]:
    """A responder process; returns once it says it is subscribed."""
    proc = subprocess.Popen([sys.executable, "-c", *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", args[1:]
    return proc


def start_baseline(tmp: Path) -> tuple[EmbeddedNats, list[subprocess.Popen[str]]]:
    """The server, the raw responder and FastStream's two, each in a process of its own."""
    server = EmbeddedNats(tmp / "nats", port=0).start()
    os.environ["SHOAL_NATS_URL"] = server.url
    procs = [responder([RAW_RESPONDER, server.url])]
    kinds = ("nats", "jetstream", "nats-sync")
    procs += [responder([PEER_RESPONDER, server.url, kind]) for kind in kinds]
    return server, procs


Row = tuple[str, list[float], list[float], float]  # label, sequential, concurrent, req/s
PATHS = (
    "(a) raw nats-py request/reply",
    "(b) FastStream NATS subscriber, async def",
    "(c) FastStream JetStream pull subscriber, async def",
    "(d) fn.aecho.call, async def",
    "(e) durable fn.aecho + Shoal-Reply-To, async def",
    "(f) FastStream NATS subscriber, def",
    "(g) fn.echo.call, def",
    "(h) durable fn.echo + Shoal-Reply-To, def",
)
KEYS = (
    "raw",
    "faststream_nats",
    "faststream_jetstream",
    "call",
    "durable",
    "faststream_nats_sync",
    "call_sync",
    "durable_sync",
)
RAW = 0


async def main(args: argparse.Namespace) -> None:
    modes = ["off", "on"] if args.tracing == "both" else [args.tracing]
    summary: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for mode in modes:
        if mode == "off":
            print("\n== tracing off (no OTEL_EXPORTER_OTLP_ENDPOINT)")
            results = await measure_all(args)
        else:
            from tests.otlp import Receiver

            with Receiver() as receiver:
                os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint  # workers inherit
                print(f"\n== tracing on (spans exported to {receiver.endpoint})")
                try:
                    results = await measure_all(args)
                finally:
                    del os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
                print(f"spans received: {len(receiver.spans())}")
        for metrics, rounds_ in results.items():
            summary[f"tracing {mode}, metrics {metrics}"] = figures(rounds_)
    if summary:
        final(summary, args)


async def measure_all(args: argparse.Namespace) -> dict[str, list[list[Row]]]:
    """Every path, for each metrics mode and round; {metrics mode: [rows of each round]}."""
    tmp = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    server, procs = start_baseline(tmp)
    nc = await connect(server.url, name="bench")
    try:
        if args.cold_rounds:
            await cold_starts(nc, tmp, args.cold_rounds)
        if args.cold_only:
            return {}
        modes = ["off", "on"] if args.metrics == "both" else [args.metrics]
        results: dict[str, list[list[Row]]] = {mode: [] for mode in modes}
        for r in range(args.rounds):  # alternating, so a busy moment hits both alike
            for mode in modes:
                results[mode].append(await measure(nc, args, tmp, mode, r))
        if len(results) == 2:
            compare(results["off"], results["on"], args.inflight)
        return results
    finally:
        await nc.close()
        for proc in procs:
            proc.kill()
            proc.wait()
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
            # --workers N caps echo at N workers (one, as each peer runs in one process);
            # 0 leaves it to the controller's scaling, as deployed by default.
            for path, name in ((ECHO, "echo"), (ECHO_ASYNC, "aecho")):
                cap = {name: {"max_workers": args.workers}} if args.workers else None
                await deploy_file(nc, path, overrides=cap)
            t = time.perf_counter()
            await nc.request("fn.echo.call", PAYLOAD, timeout=60, headers=HEADERS)
            cold = time.perf_counter() - t
            await nc.request("fn.aecho.call", PAYLOAD, timeout=60, headers=HEADERS)
            print(f"\n== metrics {mode} (round {round_ + 1})")
            # Scraping stops before the controller does: a scrape in flight when its metrics
            # server closes would fail the run.
            async with anyio.create_task_group() as scraping:
                if controller.metrics is not None and controller.metrics.url:
                    scraping.start_soon(scrape, controller.metrics.url)
                rows = await report(nc, args, cold, launcher, f"{mode}{round_}")
                scraping.cancel_scope.cancel()
            tg.cancel_scope.cancel()
    return rows


async def scrape(url: str) -> None:
    """What Prometheus (every second) and an open status page (every 2 s) ask for."""

    def get(path: str) -> None:
        with urllib.request.urlopen(url + path, timeout=10) as r:
            r.read()

    for tick in range(10**9):
        await anyio.to_thread.run_sync(get, "metrics", abandon_on_cancel=True)
        if tick % 2 == 0:
            await anyio.to_thread.run_sync(get, "api/status", abandon_on_cancel=True)
        await anyio.sleep(1.0)


def figures(rounds: list[list[Row]]) -> dict[str, dict[str, float]]:
    """Medians over the rounds of each path's sequential p50 and p99 (ms) and req/s, and of
    the ratios to the raw baseline (a) of the same round, which takes out the machine's load."""
    out = {}
    for i, key in enumerate(KEYS):
        per_round = {
            "p50_ms": [pct(r[i][1], 0.5) for r in rounds],
            "p99_ms": [pct(r[i][1], 0.99) for r in rounds],
            "rate": [r[i][3] for r in rounds],
            "p50_x_raw": [pct(r[i][1], 0.5) / pct(r[RAW][1], 0.5) for r in rounds],
            "rate_x_raw": [r[i][3] / r[RAW][3] for r in rounds],
        }
        out[key] = {k: round(statistics.median(v), 4) for k, v in per_round.items()}
    return out


def compare(off: list[list[Row]], on: list[list[Row]], inflight: int) -> None:
    """Metrics off against on: medians over the rounds (see :func:`figures`)."""
    print(f"\n== metrics off -> on, {len(off)} round(s) each, alternating; medians")
    rate = f"req/s @{inflight}"
    print(f"{'path':<54}{'seq p50 ms':>22}{'x raw':>16}{rate:>22}{'x raw':>16}")
    before, after = figures(off), figures(on)
    for label, key in zip(PATHS, KEYS, strict=True):
        a, b = before[key], after[key]
        print(
            f"{label:<54}{a['p50_ms']:>9.3f} ->{b['p50_ms']:>7.3f} "
            f"{(b['p50_ms'] / a['p50_ms'] - 1) * 100:+4.0f}%"
            f"{a['p50_x_raw']:>7.2f} ->{b['p50_x_raw']:>5.2f}"
            f"{a['rate']:>9.0f} ->{b['rate']:>6.0f} {(b['rate'] / a['rate'] - 1) * 100:+4.0f}%"
            f"{a['rate_x_raw']:>7.2f} ->{b['rate_x_raw']:>5.2f}"
        )


def goals(f: dict[str, dict[str, float]]) -> dict[str, dict[str, float | bool]]:
    """The goals against the peers and the raw baseline, from one setting's figures: each of
    Shoal's paths against FastStream's with the same kind of handler."""

    def goal(value: float, limit: float, at_most: bool = True) -> dict[str, float | bool]:
        met = value <= limit if at_most else value >= limit
        return {"value": round(value, 3), "limit": round(limit, 3), "met": met}

    out = {}
    for kind, call, fs, durable in (
        ("async def", f["call"], f["faststream_nats"], f["durable"]),
        ("def", f["call_sync"], f["faststream_nats_sync"], f["durable_sync"]),
    ):
        out[f"{kind}: call p50 <= FastStream NATS p50 (ms)"] = goal(call["p50_ms"], fs["p50_ms"])
        out[f"{kind}: call p50 / raw <= 1.5"] = goal(call["p50_x_raw"], 1.5)
        out[f"{kind}: call req/s @64 >= FastStream NATS"] = goal(
            call["rate"], fs["rate"], at_most=False
        )
        out[f"{kind}: call req/s @64 >= 7000"] = goal(call["rate"], 7000, at_most=False)
        if kind == "async def":  # FastStream's JetStream peer runs its async def echo
            fs_js = f["faststream_jetstream"]
            out[f"{kind}: durable p50 <= FastStream JetStream p50 (ms)"] = goal(
                durable["p50_ms"], fs_js["p50_ms"]
            )
        out[f"{kind}: durable p50 / raw <= 2.0"] = goal(durable["p50_x_raw"], 2.0)
    return out


def final(summary: dict[str, dict[str, dict[str, float]]], args: argparse.Namespace) -> None:
    """The goals, for the setting users get by default (metrics on, spans not exported; trace
    context travels either way) when it was measured, and the last line of JSON."""
    default = "tracing off, metrics on"
    setting = default if default in summary else next(iter(summary))
    checked = goals(summary[setting])
    print(f"\n== goals ({setting}; medians over {args.rounds} round(s))")
    for name, g in checked.items():
        print(
            f"   {name:<58} {g['value']:>10} vs {g['limit']:<10} {'met' if g['met'] else 'NOT met'}"
        )
    record = {
        "bench": "invoke",
        "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "n": args.n,
        "seconds": args.seconds,
        "inflight": args.inflight,
        "rounds": args.rounds,
        "settings": summary,
        "goals_setting": setting,
        "goals": checked,
    }
    print(json.dumps(record))


async def report(
    nc: NATS, args: argparse.Namespace, cold: float, launcher: ProcessLauncher, tag: str = ""
) -> list[Row]:
    async def raw_once(i: int) -> None:
        await nc.request("raw.echo", PAYLOAD, timeout=30)

    def call(subject: str, headers: dict[str, str]) -> Callable[[int], Awaitable[None]]:
        async def once(i: int) -> None:
            await nc.request(subject, PAYLOAD, timeout=30, headers=headers)

        return once

    def durables(subject: str, stream: str, kind: str, **kw: bool) -> tuple[Durable, Durable]:
        return Durable(nc, f"seq{kind}{tag}", subject, stream, **kw), Durable(
            nc, f"conc{kind}{tag}", subject, stream, **kw
        )

    peer_js = durables("peer.fs.js.echo", "PEER_FS_ECHO", "fs", faststream=True)
    durable_async = durables("fn.aecho", "SHOAL_FN_AECHO", "a")
    durable_sync = durables("fn.echo", "SHOAL_FN_ECHO", "s")
    for d in (*peer_js, *durable_async, *durable_sync):
        await d.start()

    def both(once: Callable[[int], Awaitable[None]]) -> tuple[Callable[..., Awaitable[None]], ...]:
        return once, once

    paths = (
        both(raw_once),
        both(call("peer.fs.echo", PEER_HEADERS)),
        (peer_js[0].once, peer_js[1].once),
        both(call("fn.aecho.call", HEADERS)),
        (durable_async[0].once, durable_async[1].once),
        both(call("peer.fs.echo.sync", PEER_HEADERS)),
        both(call("fn.echo.call", HEADERS)),
        (durable_sync[0].once, durable_sync[1].once),
    )
    # Warm every path so no run pays a one-off cost, and let the controller scale echo to the
    # concurrent load before it is measured.
    blocks = max(1, args.blocks)
    for seq_fn, conc_fn in paths:
        await sequential(200, seq_fn)
        await concurrent(args.seconds / blocks, args.inflight, conc_fn)

    # The paths take turns, block by block, so that a busy moment of a shared machine falls on
    # all of them alike rather than on whichever path it happened to be measuring.
    seqs: list[list[float]] = [[] for _ in paths]
    concs: list[list[float]] = [[] for _ in paths]
    spent = [0.0] * len(paths)
    for b in range(blocks):
        n = args.n * (b + 1) // blocks - args.n * b // blocks
        for i, (seq_fn, _) in enumerate(paths):
            seqs[i] += await sequential(n, seq_fn)
        for i, (_, conc_fn) in enumerate(paths):
            lat, rate = await concurrent(args.seconds / blocks, args.inflight, conc_fn)
            concs[i] += lat
            spent[i] += len(lat) / rate
    rows: list[Row] = [
        (label, seq, conc, len(conc) / took)
        for label, seq, conc, took in zip(PATHS, seqs, concs, spent, strict=True)
    ]

    base_seq = statistics.median(rows[0][1])
    base_conc = statistics.median(rows[0][2])
    print(
        f"\nfirst answer of fn.echo.call after deploy: {cold * 1000:.0f} ms (a cold start, unless"
        " the keep-alive policy pre-warmed echo from its history in an earlier round)"
    )
    print(f"echo workers at the end: {len(launcher.running())}\n")
    print(
        f"{'path':<52}{'seq p50':>9}{'seq p99':>9}{'x raw':>7}   "
        f"{'@' + str(args.inflight) + ' p50':>9}{'p99':>8}{'x raw':>7}{'req/s':>9}"
    )
    for label, seq, conc, rate in rows:
        print(
            f"{label:<52}{pct(seq, 0.5):>8.2f}m{pct(seq, 0.99):>8.2f}m"
            f"{statistics.median(seq) / base_seq:>7.2f}   "
            f"{pct(conc, 0.5):>8.2f}m{pct(conc, 0.99):>7.2f}m"
            f"{statistics.median(conc) / base_conc:>7.2f}{rate:>9.0f}"
        )
    print("\n(ms; 'x raw' = p50 / p50 of (a) in the same mode)")
    print(
        "goals: (d) seq p50 <= (b)'s and <= 1.5x raw; (e) seq p50 <= (c)'s and <= 2x raw;\n"
        f"       (d) req/s @{args.inflight} >= (b)'s and >= 7000; the same for (g) against (f)"
    )
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
    p.add_argument(
        "--blocks", type=int, default=5, help="turns the paths take within a measurement"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="echo's worker processes at most (1: one process, as each peer); 0: as the "
        "controller scales it (up to echo's max_workers)",
    )
    p.add_argument("--cold-rounds", type=int, default=7, help="cold starts per setting; 0: none")
    p.add_argument("--cold-only", action="store_true", help="only the cold starts")
    anyio.run(main, p.parse_args())
