"""A worker's own figures: plain counters and fixed-bucket histograms, sent in its heartbeats.

Workers count in-process with no metrics library (nothing on the cold-start path, a few
integer additions per invocation) and put :meth:`WorkerFigures.snapshot` into every heartbeat
in ``shoal_workers``. The controller that launched them adds them up (``controller.figures``)
and serves them to Prometheus. The bucket bounds below are part of that contract: a worker and
a controller of one release agree on them; a snapshot whose histogram has another length is
ignored.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from typing import Any

# Upper bounds (le) of the histograms' buckets; a last, implicit bucket is +Inf.
DURATION_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
COLD_START_BOUNDS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120)
BATCH_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
CHANNELS = ("inline", "object")
RECENT_ERRORS = 5  # a worker's last errors, carried in each heartbeat for the status page


class Histogram:
    """Counts per bucket (not cumulative) and the sum of what was observed. A plain class,
    not a dataclass: its module is on a worker's cold-start path, where making a dataclass
    costs more than this whole module otherwise does."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(
        self, bounds: tuple[float, ...], counts: list[int] | None = None, total: float = 0.0
    ) -> None:
        self.bounds = bounds
        self.counts = counts or [0] * (len(bounds) + 1)
        self.sum = total

    def __repr__(self) -> str:
        return f"Histogram(counts={self.counts}, sum={self.sum:g})"

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def to_wire(self) -> list[Any]:
        return [self.counts, round(self.sum, 6)]

    @classmethod
    def from_wire(cls, bounds: tuple[float, ...], wire: Any) -> Histogram | None:
        """The histogram a snapshot carries; None for one of another shape."""
        try:
            counts, total = wire
            counts = [int(c) for c in counts]
        except (TypeError, ValueError):
            return None
        if len(counts) != len(bounds) + 1:
            return None
        return cls(bounds, counts, float(total))

    def add(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum += other.sum

    def subtract(self, other: Histogram) -> None:
        self.counts = [a - b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum -= other.sum

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.sum)

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus's buckets: ``(le, observations at most le)``, ending with +Inf."""
        out, running = [], 0
        for bound, c in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += c
            out.append(("+Inf" if bound == float("inf") else f"{bound:g}", running))
        return out

    def quantile(self, q: float) -> float | None:
        """The q-quantile, interpolated inside its bucket as Prometheus's histogram_quantile;
        None with no observations."""
        total = self.count
        if not total:
            return None
        rank = q * total
        running = 0
        for i, c in enumerate(self.counts):
            if running + c >= rank and c:
                if i == len(self.bounds):  # +Inf: the highest finite bound
                    return float(self.bounds[-1])
                low = self.bounds[i - 1] if i else 0.0
                return low + (self.bounds[i] - low) * (rank - running) / c
            running += c
        return float(self.bounds[-1])


class WorkerFigures:
    """What one worker process counts; :meth:`snapshot` goes into its heartbeat."""

    def __init__(self) -> None:
        self.ok = 0
        self.error = 0
        self.duration = Histogram(DURATION_BOUNDS)
        self.dead_letters = 0
        self.redeliveries = 0
        self.errors: deque[dict[str, Any]] = deque(maxlen=RECENT_ERRORS)
        self.batch: Histogram | None = None  # an executor's batch sizes (its Batcher's)
        self.dataplane: dict[str, int] | None = None  # bytes sent, per channel (partitioned)

    def invoked(self, seconds: float, error: Any | None = None, request_id: str = "") -> None:
        """One invocation ended after ``seconds``; ``error``: the ShoalError it ended in."""
        self.duration.observe(seconds)
        if error is None:
            self.ok += 1
            return
        self.error += 1
        self.errors.append(
            {
                "at": round(time.time(), 3),
                "request_id": request_id,
                "code": str(getattr(error, "code", type(error).__name__)),
                "message": str(getattr(error, "message", error))[:300],
            }
        )

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "error": self.error,
            "duration": self.duration.to_wire(),
            "dead_letters": self.dead_letters,
            "redeliveries": self.redeliveries,
            "errors": list(self.errors),
        }
        if self.batch is not None:
            out["batch"] = self.batch.to_wire()
        if self.dataplane is not None:
            out["dataplane"] = dict(self.dataplane)
        return out
