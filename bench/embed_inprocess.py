"""all-MiniLM-L6-v2 in one process, batch 32: the baseline bench_embed.py holds serving against.

    python -m bench.embed_inprocess < JOB.json

The job, on standard input: ``{"seconds": s, "blocks": b, "sets": {"short": [texts], ...}}``.
Prints one line of JSON, texts per second for each engine and set::

    {"engine": {"short": 512.3, ...}, "sentence-transformers": {"short": 488.1, ...}}

- ``engine``: what the ``minilm`` executor of functions/embed.py runs (its onnxruntime engine on
  CPU, from the model cache), tokenizing included: ``MiniLM()`` on each batch of 32 texts;
- ``sentence-transformers``: as a user runs it, ``SentenceTransformer(model).encode(texts,
  batch_size=32)``, on lists of 32 texts.

Each engine and set is measured for ``seconds`` in all, in ``blocks`` turns (every engine and
set, then again), so a busy moment of a shared machine falls on all of them alike. A run of
its own process: the model loads once per engine, and nothing else shares the process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parent.parent
BATCH = 32
ENCODE_LIST = 32  # texts per encode() call: small, so a slow machine still keeps to the time


def engine(functions: Path) -> Callable[[list[str]], Any]:
    sys.path.insert(0, str(functions))
    import embed  # functions/embed.py

    model = embed.MiniLM()
    model.device, model.engine = "cpu", "onnxruntime"
    model.setup()

    def run(texts: list[str]) -> Any:
        return [model(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]

    return run


def sentence_transformers(functions: Path) -> Callable[[list[str]], Any]:
    sys.path.insert(0, str(functions))
    import embed
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(embed.model_dir()), device="cpu")

    def run(texts: list[str]) -> Any:
        return model.encode(texts, batch_size=BATCH)

    return run


def measure(
    runners: dict[str, Callable[[list[str]], Any]],
    sets: dict[str, list[str]],
    seconds: float,
    blocks: int,
) -> dict[str, dict[str, float]]:
    done = {(e, s): 0 for e in runners for s in sets}
    spent = {(e, s): 0.0 for e in runners for s in sets}
    at = {s: 0 for s in sets}  # each set's texts are taken in turn, round and round
    for run in runners.values():  # warm up: first calls pay for lazy setup
        for texts in sets.values():
            run(texts[:2])
    for _ in range(blocks):
        for name, s in list(done):
            texts, run = sets[s], runners[name]
            start = time.perf_counter()
            while time.perf_counter() - start < seconds / blocks:
                chunk = [texts[(at[s] + k) % len(texts)] for k in range(ENCODE_LIST)]
                at[s] += ENCODE_LIST
                run(chunk)
                done[name, s] += len(chunk)
            spent[name, s] += time.perf_counter() - start
    return {name: {s: round(done[name, s] / spent[name, s], 2) for s in sets} for name in runners}


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the packaged model: never ask the Hub
    job = json.load(sys.stdin)
    functions = ROOT / "functions"
    runners = {
        "engine": engine(functions),
        "sentence-transformers": sentence_transformers(functions),
    }
    rates = measure(runners, job["sets"], float(job["seconds"]), int(job.get("blocks", 2)))
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
