"""Open-loop arrivals for the benchmarks, and the ideal batching server they are held against.

Pure functions (no I/O but :func:`read_azure_llm`, which only parses a file):

- :func:`poisson` draws Poisson arrival times at a rate, from a seed;
- :func:`read_azure_llm` reads the Azure LLM inference trace (2023,
  ``AzureLLMInferenceTrace_conv.csv``: ``TIMESTAMP,ContextTokens,GeneratedTokens``) as
  seconds from its first request and context tokens;
- :func:`compress` scales arrival times to a mean rate and keeps a window of them;
- :func:`ideal_batching` simulates one FIFO server that, whenever it is idle and requests are
  waiting, takes up to ``max_batch`` of them at once and serves a batch of n in n / rate
  seconds, with no other cost: the latencies a perfect batching server would give on the same
  arrivals.
"""

from __future__ import annotations

import csv
import itertools
import math
import random
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path


def ideal_batching(arrivals: Sequence[float], rate: float, max_batch: int = 32) -> list[float]:
    """Each request's latency (finish - arrival, seconds) through the ideal batching server.

    ``arrivals`` are ascending times in seconds; ``rate`` is items per second (a batch of n
    takes n / rate). The server never waits for a batch to fill: when it becomes free it
    starts at once with the requests already waiting (up to ``max_batch``, oldest first), or,
    with none waiting, with those that arrive at the next arrival time.
    """
    if rate <= 0 or max_batch < 1:
        raise ValueError(f"rate must be > 0 and max_batch >= 1, not {rate!r} and {max_batch!r}")
    if any(b < a for a, b in itertools.pairwise(arrivals)):
        raise ValueError("arrivals must be in ascending order")
    latencies: list[float] = []
    free = -math.inf  # when the server is next free
    i = 0
    while i < len(arrivals):
        start = max(free, arrivals[i])
        n = 1
        while n < max_batch and i + n < len(arrivals) and arrivals[i + n] <= start:
            n += 1
        free = start + n / rate
        latencies += [free - arrivals[j] for j in range(i, i + n)]
        i += n
    return latencies


def poisson(rate: float, seconds: float, seed: int = 0) -> list[float]:
    """Arrival times in [0, seconds) of a Poisson process of ``rate`` per second."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0, not {rate!r}")
    rng = random.Random(seed)
    times: list[float] = []
    t = rng.expovariate(rate)
    while t < seconds:
        times.append(t)
        t += rng.expovariate(rate)
    return times


def read_azure_llm(path: Path) -> tuple[list[float], list[int]]:
    """The trace's arrival times (seconds after its first request, ascending) and each
    request's context tokens."""
    rows: list[tuple[datetime, int]] = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            # Seven decimal places in the file; datetime keeps microseconds (six).
            stamp = datetime.fromisoformat(row["TIMESTAMP"][:26])
            rows.append((stamp, int(row["ContextTokens"])))
    if not rows:
        raise ValueError(f"{path} holds no requests")
    rows.sort(key=lambda r: r[0])
    first = rows[0][0]
    return [(t - first).total_seconds() for t, _ in rows], [tokens for _, tokens in rows]


def words_for(context_tokens: int, cap: int = 200, tokens_per_word: int = 8) -> int:
    """Words of the text that stands in for an LLM request: min(cap, tokens / 8), at least 1."""
    return max(1, min(cap, context_tokens // tokens_per_word))


def compress(arrivals: Sequence[float], mean_rate: float, window: float) -> list[float]:
    """The arrivals scaled in time so that their mean rate over the whole trace is
    ``mean_rate`` per second, keeping those in the first ``window`` seconds (scaled)."""
    if len(arrivals) < 2 or arrivals[-1] <= arrivals[0]:
        raise ValueError("a trace of at least two requests at different times is needed")
    if mean_rate <= 0:
        raise ValueError(f"mean_rate must be > 0, not {mean_rate!r}")
    span = arrivals[-1] - arrivals[0]
    scale = (len(arrivals) / mean_rate) / span  # new seconds per trace second
    scaled = [(t - arrivals[0]) * scale for t in arrivals]
    return [t for t in scaled if t < window]


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p`` quantile (0..1) by the nearest-rank rule, as the benchmarks' ``pct``."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]
