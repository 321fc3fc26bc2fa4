"""Overload: twice the measured capacity for 60 s, then recovery.

    python bench/bench_overload.py [--seconds 60] [--factor 2]

Deploys a function with fixed work per event (10 ms, 4 in flight per worker, at most 2
workers), measures its capacity on the durable path, then publishes at ``factor`` times that
rate for ``seconds``. Every 5 s it prints the rate answered, the backlog JetStream holds, the
p50 latency of events answered in that window, and the memory of workers and nats-server.
Then it waits for the backlog to drain and measures latency again. Backpressure is the
design: workers pull only as many events as they have free slots, so the excess waits in
JetStream's file storage, not in worker memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller import Controller, ControllerSettings, EmbeddedNats, ProcessLauncher  # noqa: E402
from controller.deploy import deploy_file  # noqa: E402
from runtime.wire import protocol  # noqa: E402
from runtime.wire.connection import connect  # noqa: E402
from tests.conftest import workers_of  # noqa: E402

FUNCTION = """
import anyio
from runtime import function

@function(name="steady", concurrency=4, max_workers=2, ack_wait=30, max_deliver=10)
async def steady(event):
    await anyio.sleep(0.01)  # fixed work per event
    return event
"""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Tracker:
    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.latencies: list[tuple[float, float]] = []  # (answered at, latency)
        self.answered: set[str] = set()
        self.duplicates = 0
        self._progress = anyio.Event()

    async def wait_for(self, count: int) -> None:
        while len(self.answered) < count:
            await self._progress.wait()
            self._progress = anyio.Event()

    async def on_answer(self, msg: Any) -> None:
        rid = msg.headers["Shoal-Request-Id"]
        now = time.perf_counter()
        if rid in self.answered:
            self.duplicates += 1
            return
        self.answered.add(rid)
        self.latencies.append((now, now - self.sent[rid]))
        self._progress.set()


async def publish_at(nc: Any, tracker: Tracker, rate: float, seconds: float, tag: str) -> None:
    """Publish ``rate * seconds`` events, paced evenly over ``seconds``."""
    js = nc.jetstream()
    total = int(rate * seconds)
    start = time.perf_counter()
    n = 0
    async with anyio.create_task_group() as tg:
        while n < total:
            due = min(total, int((time.perf_counter() - start) * rate) + 1)
            while n < due:
                rid = f"{tag}-{n}"
                tracker.sent[rid] = time.perf_counter()
                tg.start_soon(publish_one, js, rid)
                n += 1
            await anyio.sleep(0.01)  # pacing the publisher, not waiting for state


async def publish_one(js: Any, rid: str) -> None:
    await js.publish(
        "fn.steady",
        b"{}",
        headers={"Nats-Msg-Id": rid, "Shoal-Reply-To": "overload.answers"},
        timeout=30,
    )


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="shoal-overload-"))
    (tmp / "steady.py").write_text(FUNCTION)
    server = EmbeddedNats(tmp / "nats", port=0).start()
    os.environ["SHOAL_NATS_URL"] = server.url
    nc = await connect(server.url, name="bench")
    tracker = Tracker()
    await nc.subscribe("overload.answers", cb=tracker.on_answer)
    try:
        async with ProcessLauncher(code_dir=tmp / "code") as launcher:
            async with anyio.create_task_group() as tg:
                await tg.start(Controller(nc, launcher, ControllerSettings.from_env()).run)
                await deploy_file(nc, tmp / "steady.py")
                await run(nc, tracker, server, args)
                tg.cancel_scope.cancel()
    finally:
        await nc.close()
        server.stop()


def window_p50(tracker: Tracker, since: float) -> float:
    lat = [lat for at, lat in tracker.latencies if at >= since]
    return statistics.median(lat) * 1000 if lat else float("nan")


async def run(nc: Any, tracker: Tracker, server: EmbeddedNats, args: argparse.Namespace) -> None:
    js = nc.jetstream()
    # Capacity: a burst far above it, answered rate once both workers are busy.
    burst = 6000
    t0 = time.perf_counter()
    await publish_at(nc, tracker, rate=20000, seconds=burst / 20000, tag="cap")
    with anyio.fail_after(300):
        await tracker.wait_for(burst)
    capacity = burst / (time.perf_counter() - t0)
    quiet = time.perf_counter()
    await publish_at(nc, tracker, rate=20, seconds=3, tag="before")
    await anyio.sleep(1)
    before = window_p50(tracker, quiet)
    print(
        f"capacity (durable, 2 workers x 4 slots, 10 ms each): {capacity:.0f} events/s; "
        f"p50 at low load {before:.1f} ms"
    )

    rate = capacity * args.factor
    print(f"\noverload: {rate:.0f} events/s for {args.seconds:g} s")
    print(
        f"{'t (s)':>6} {'answered/s':>11} {'backlog':>8} {'p50 ms':>9} {'workers MiB':>12} "
        f"{'nats MiB':>9}"
    )
    start = time.perf_counter()
    answered_before = len(tracker.answered)
    peak_workers = 0.0
    async with anyio.create_task_group() as tg:
        tg.start_soon(publish_at, nc, tracker, rate, args.seconds, "load")
        last, last_count = start, answered_before
        while time.perf_counter() - start < args.seconds:
            await anyio.sleep(5)
            now = time.perf_counter()
            ci = await js.consumer_info(protocol.stream_name("steady"), protocol.CONSUMER)
            workers = await workers_of(nc, "steady")
            mem = sum(rss_mib(w["pid"]) for w in workers.values())
            peak_workers = max(peak_workers, mem)
            assert server.process is not None
            print(
                f"{now - start:6.0f} {(len(tracker.answered) - last_count) / (now - last):11.0f} "
                f"{ci.num_pending:8d} {window_p50(tracker, last):9.1f} {mem:12.0f} "
                f"{rss_mib(server.process.pid):9.0f}"
            )
            last, last_count = now, len(tracker.answered)
    sent = sum(1 for k in tracker.sent if k.startswith("load-"))
    t_end = time.perf_counter()
    with anyio.fail_after(600):
        await tracker.wait_for(len(tracker.sent))
    drained = time.perf_counter() - t_end
    quiet = time.perf_counter()
    await publish_at(nc, tracker, rate=20, seconds=3, tag="after")
    await anyio.sleep(1)
    after = window_p50(tracker, quiet)
    lost = len(tracker.sent) - len(tracker.answered)
    print(
        f"\nsent during overload {sent}; backlog drained {drained:.1f} s after publishing "
        f"stopped; lost {lost}, duplicated answers {tracker.duplicates}"
    )
    print(
        f"p50 at low load: before {before:.1f} ms, after recovery {after:.1f} ms; "
        f"workers' memory peak {peak_workers:.0f} MiB"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--factor", type=float, default=2.0)
    anyio.run(main, p.parse_args())
