"""Partitioned models: data-plane hop overhead, a channel sweep, and radixnet scaling.

    python bench/bench_partition.py [--sections hop,sweep,scaling] [--quick]

Starts one nats-server and one S3 server (SeaweedFS) on free ports, and measures in one run:

hop      one hop of a small intermediate between two partitions in different processes
         (Shoal's data plane: encode, publish, the peer's mailbox, decode), as half a round
         trip, against half a raw nats-py request/reply round trip of the same bytes (the
         floor). Target: p50 <= 1.5 ms up to 64 KB.
sweep    moving 1 KB .. 64 MB from one process to another inline (NATS, chunked), as an
         object (S3 PUT + GET + a reference on NATS), and "auto" (the cost model, calibrated
         at the start of the run). Target: auto within 10% of the better fixed channel.
scaling  radixnet (functions/radixnet.py) served by a controller with process workers, with
         1, 2, 4 and 8 partitions, a good and a random partition: latency, bytes moved
         between partitions, and what those bytes would cost on a cloud price list.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller import Controller, ControllerSettings, EmbeddedNats, ProcessLauncher  # noqa: E402
from controller.deploy import deploy_file  # noqa: E402
from controller.embedded_s3 import EmbeddedS3  # noqa: E402
from runtime import Client  # noqa: E402
from runtime.partition import calibration  # noqa: E402
from runtime.partition.costmodel import Prices  # noqa: E402
from runtime.partition.dataplane import DataPlane  # noqa: E402
from runtime.partition.worker import object_store_from_env  # noqa: E402
from runtime.wire.connection import connect  # noqa: E402

FUNCTION = "bench"
RUN = "bench-run"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000


# -- the peer process: echoes data-plane messages and raw requests ---------------------------


async def peer(url: str) -> None:
    nc = await connect(url, name="bench-peer")
    plane = DataPlane(nc, FUNCTION, "peer", object_store_from_env())
    await plane.start()

    async def raw(msg: Any) -> None:
        await nc.publish(msg.reply, msg.data)

    await nc.subscribe("bench.raw", cb=raw)
    await nc.flush()
    print("ready", flush=True)
    step = 0
    box = plane.mailbox(RUN, 1)
    while True:
        value = await plane.receive(box, step, 0)
        mode = value["mode"]
        # "echo": send the payload back (a hop each way); "ack": answer with nothing.
        back = value if mode == "echo" else None
        await plane.send("main", RUN, step, 1, 0, back, "inline")
        step += 1


class Link:
    """The main process's end: send to the peer, wait for its answer."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane
        self.box = plane.mailbox(RUN, 0)
        self.step = 0

    async def round_trip(self, value: dict[str, Any], channel: str) -> float:
        start = time.perf_counter()
        await self.plane.send("peer", RUN, self.step, 0, 1, value, channel)
        await self.plane.receive(self.box, self.step, 1)
        self.step += 1
        return time.perf_counter() - start


async def bench_hop(nc: Any, link: Link, quick: bool) -> None:
    n = 300 if quick else 2000
    print("\n== hop: one intermediate between two processes (half a round trip) ==")
    print(
        f"{'bytes':>8} {'raw p50':>9} {'raw p99':>9} {'shoal p50':>10} {'shoal p99':>10} "
        f"{'ratio':>6}"
    )
    for size in (1 << 10, 4 << 10, 16 << 10, 64 << 10):
        payload = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
        raw_body = payload.tobytes()
        raw, ours = [], []
        for i in range(n + n // 10):
            t = time.perf_counter()
            await nc.request("bench.raw", raw_body, timeout=5)
            r = (time.perf_counter() - t) / 2
            s = await link.round_trip({"mode": "echo", "x": payload}, "inline") / 2
            if i >= n // 10:  # warm-up left out
                raw.append(r)
                ours.append(s)
        ratio = statistics.median(ours) / statistics.median(raw)
        print(
            f"{size:>8} {pct(raw, 0.5):>8.3f}ms {pct(raw, 0.99):>8.3f}ms "
            f"{pct(ours, 0.5):>9.3f}ms {pct(ours, 0.99):>9.3f}ms {ratio:>5.2f}x"
        )


async def bench_sweep(link: Link, quick: bool) -> None:
    plane = link.plane
    print("\n== sweep: moving one intermediate, by channel (median of repeats, ack included) ==")
    print(f"cost model: {plane.cost.describe()}")
    print(
        f"{'bytes':>10} {'inline':>10} {'object':>10} {'auto':>10} {'auto picks':>10} "
        f"{'faster':>7} {'auto/best':>9}"
    )
    sizes = [1 << 10, 16 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20]
    if quick:
        sizes = sizes[:-2]
    worst, right = 0.0, 0
    for size in sizes:
        payload = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
        value = {"mode": "ack", "x": payload}
        reps = 9 if size >= 16 << 20 else 41 if size >= 1 << 20 else 101
        times: dict[str, list[float]] = {"inline": [], "object": [], "auto": []}
        shuffle = random.Random(size).shuffle
        for _ in range(reps):  # interleaved, in a random order: drift and after-effects of
            order = list(times)  # one channel (S3 threads, freed memory) hit all alike
            shuffle(order)
            for channel in order:
                times[channel].append(await link.round_trip(value, channel))
        med = {c: statistics.median(t) for c, t in times.items()}
        best = min(med["inline"], med["object"])
        faster = "inline" if med["inline"] <= med["object"] else "object"
        picks = plane.cost.choose(size + 64)
        right += picks == faster
        ratio = med["auto"] / best
        worst = max(worst, ratio)
        print(
            f"{size:>10} {med['inline'] * 1e3:>8.2f}ms {med['object'] * 1e3:>8.2f}ms "
            f"{med['auto'] * 1e3:>8.2f}ms {picks:>10} {faster:>7} {ratio:>8.2f}x"
        )
    print(
        f"auto picked the faster channel at {right} of {len(sizes)} sizes; "
        f"worst auto/best: {worst:.2f}x (target <= 1.10)"
    )


async def bench_scaling(url: str, data: Path, quick: bool) -> None:
    print("\n== scaling: radixnet, partitions over process workers ==")
    print(f"(this machine: {os.cpu_count()} cores; every worker is a process on it)")
    nc = await connect(url, name="bench-scaling")
    prices = Prices()
    async with ProcessLauncher(code_dir=data / "code") as launcher:
        controller = Controller(nc, launcher, ControllerSettings(calibrate=False))
        async with anyio.create_task_group() as tg:
            await tg.start(controller.run)
            await deploy_file(
                nc,
                ROOT / "functions" / "radixnet.py",
                overrides={"radixnet": {"worker_memory_mb": 0}},  # monolithic baselines too
            )
            client = Client(nc)
            print(
                f"{'N':>5} {'parts':>5} {'partition':>9} {'p50':>9} {'vs 1':>6} "
                f"{'bytes moved':>12} {'msgs':>6} {'queue $/1k':>10} {'object $/1k':>11}"
            )
            for neurons in (1024, 4096):
                base = None
                for parts in (1, 2, 4, 8):
                    for partitioner in ("good", "random") if parts > 1 else ("good",):
                        request = {
                            "neurons": neurons,
                            "layers": 120,
                            "batch": 64,
                            "seed": 0,
                            "partitions": parts,
                            "partitioner": partitioner,
                            "stats": True,
                        }
                        lat = []
                        out: dict[str, Any] = {}
                        for _ in range(2 if quick else 5):
                            t = time.perf_counter()
                            out = await client.call("radixnet", request, timeout=300)
                            lat.append(time.perf_counter() - t)
                        lat = lat[1:]  # the first run generates and caches the weights
                        p50 = statistics.median(lat)
                        base = base or p50
                        stats = out.get("stats", {})
                        moved = int(stats.get("bytes_moved", 0))
                        msgs = int(stats.get("messages", 0))
                        print(
                            f"{neurons:>5} {parts:>5} {partitioner:>9} {p50 * 1e3:>7.0f}ms "
                            f"{p50 / base:>5.2f}x {moved:>12,} {msgs:>6} "
                            f"{prices.queue_cost(msgs, moved) * 1e3:>10.4f} "
                            f"{prices.object_cost(msgs) * 1e3:>11.4f}"
                        )
            tg.cancel_scope.cancel()
    await nc.drain()


async def main(args: argparse.Namespace) -> None:
    sections = set(args.sections.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        nats = EmbeddedNats(data / "nats", port=0).start()
        s3 = EmbeddedS3(data / "s3").start()
        os.environ.update(s3.env())
        os.environ["SHOAL_NATS_URL"] = nats.url
        peer_proc = subprocess.Popen(  # noqa: ASYNC220 (started once, before any timing)
            [sys.executable, __file__, "--peer", nats.url],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert peer_proc.stdout is not None
            assert peer_proc.stdout.readline().strip() == "ready"
            nc = await connect(nats.url, name="bench-main")
            plane = DataPlane(nc, FUNCTION, "main", object_store_from_env())
            await plane.start()
            link = Link(plane)
            if "hop" in sections:
                await bench_hop(nc, link, args.quick)
            if "sweep" in sections:
                plane.cost = await calibration.measure(nc, object_store_from_env())
                await bench_sweep(link, args.quick)
            await nc.drain()
            if "scaling" in sections:
                await bench_scaling(nats.url, data, args.quick)
        finally:
            peer_proc.kill()
            s3.stop()
            nats.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="hop,sweep,scaling")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        anyio.run(peer, args.peer)
    else:
        anyio.run(main, args)
