"""The figures of the workers one controller launched, added up per function.

Workers count in-process (:mod:`runtime.wire.figures`) and put their counts into every
heartbeat in ``shoal_workers``; a worker that drains puts its last counts there before it
deletes its entry (the bucket keeps a few values per key, so that a follower lagging behind
still receives those counts before the deletes). This module follows those entries (every
change, not only the latest value), keeps only the workers whose ``controller`` is this one,
and adds them up. A counter never decreases: when a worker's entry goes (it exited, or was
not heard of for ``FORGET_AFTER``), its last counts move into the function's retired totals.
Several controllers each count only their own workers, so Prometheus sums them without
counting anything twice.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

from runtime.wire.figures import BATCH_BOUNDS, COLD_START_BOUNDS, DURATION_BOUNDS, Histogram

if TYPE_CHECKING:
    from runtime.wire.kvwatch import Change

FORGET_AFTER = 600.0  # seconds without a heartbeat after which a worker's counts are retired
RETIRED_IDS = 10_000  # retired workers remembered, in case one is heard of again
RECENT_ERRORS = 50
HISTORY = 150  # samples kept for the status page's charts
SAMPLE_EVERY = 2.0  # seconds between samples


@dataclass
class Totals:
    """Counts of one worker, or the sum of several (of one function)."""

    ok: int = 0
    error: int = 0
    duration: Histogram = field(default_factory=lambda: Histogram(DURATION_BOUNDS))
    dead_letters: int = 0
    redeliveries: int = 0
    batch: Histogram | None = None
    dataplane: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> Totals:
        t = cls(
            ok=int(snap.get("ok", 0)),
            error=int(snap.get("error", 0)),
            dead_letters=int(snap.get("dead_letters", 0)),
            redeliveries=int(snap.get("redeliveries", 0)),
        )
        duration = Histogram.from_wire(DURATION_BOUNDS, snap.get("duration"))
        if duration is not None:
            t.duration = duration
        if "batch" in snap:
            t.batch = Histogram.from_wire(BATCH_BOUNDS, snap["batch"])
        raw = snap.get("dataplane")
        if isinstance(raw, dict):
            t.dataplane = {str(k): int(v) for k, v in raw.items()}
        return t

    def add(self, other: Totals, sign: int = 1) -> None:
        self.ok += sign * other.ok
        self.error += sign * other.error
        self.dead_letters += sign * other.dead_letters
        self.redeliveries += sign * other.redeliveries
        (self.duration.add if sign > 0 else self.duration.subtract)(other.duration)
        if other.batch is not None:
            if self.batch is None:
                self.batch = Histogram(BATCH_BOUNDS)
            (self.batch.add if sign > 0 else self.batch.subtract)(other.batch)
        for channel, n in other.dataplane.items():
            self.dataplane[channel] = self.dataplane.get(channel, 0) + sign * n


@dataclass
class _Live:
    function: str
    kind: str
    totals: Totals
    seen: float  # time.monotonic() of its last heartbeat


@dataclass
class Sample:
    at: float  # time.time()
    count: int
    duration: Histogram


class ClusterFigures:
    """Every figure a controller exports, from its own workers' heartbeats and its own
    doings (cold starts seen, events it dead-lettered)."""

    def __init__(self, controller_id: str) -> None:
        self.controller_id = controller_id
        self.kinds: dict[str, str] = {}  # function -> kind, for every function seen
        self._live: dict[str, _Live] = {}  # by registry key
        self._retired: dict[str, Totals] = {}  # by function: workers gone
        self._retired_ids: OrderedDict[str, _Live] = OrderedDict()
        self.cold_starts: dict[str, Histogram] = {}
        self.exhausted: dict[str, int] = {}  # dead letters this controller made, by function
        self.errors: deque[dict[str, Any]] = deque(maxlen=RECENT_ERRORS)
        self._error_keys: deque[tuple[Any, ...]] = deque(maxlen=RECENT_ERRORS * 4)
        self.history: dict[str, deque[Sample]] = {}

    # -- following the registry ------------------------------------------------------------

    def apply(self, change: Change) -> None:
        """One change of ``shoal_workers`` (a :class:`~runtime.wire.kvwatch.Follower` hook)."""
        if change.deleted:
            self.retire(change.key)
            return
        try:
            info = msgpack.unpackb(change.value, raw=False)
        except Exception:
            return  # the controller's own view logs undecodable entries
        if isinstance(info, dict):
            self.heard(change.key, info, initial=change.initial)

    def heard(self, key: str, info: dict[str, Any], *, initial: bool = False) -> None:
        """A heartbeat of the worker under ``key``."""
        if info.get("controller") != self.controller_id:
            return
        snap = info.get("figures")
        if not isinstance(snap, dict):
            return
        function, kind = str(info.get("function")), str(info.get("kind", "function"))
        self.kinds.setdefault(function, kind)
        totals = Totals.from_snapshot(snap)
        back = self._retired_ids.pop(key, None)
        if back is not None:  # heard of again after its counts were retired: live once more
            self._retired_base(back.function).add(back.totals, -1)
        elif key not in self._live and not initial:
            self._cold_start(function, info)
        self._live[key] = _Live(function, kind, totals, time.monotonic())
        self._note_errors(key, function, snap.get("errors"))

    def retire(self, key: str) -> None:
        """The worker under ``key`` is gone: its last counts join its function's totals."""
        live = self._live.pop(key, None)
        if live is None:
            return
        self._retired_base(live.function).add(live.totals)
        self._retired_ids[key] = live
        while len(self._retired_ids) > RETIRED_IDS:
            self._retired_ids.popitem(last=False)

    def forget_silent(self, max_age: float = FORGET_AFTER) -> None:
        """Retire workers gone without deleting their entry (another host's crash)."""
        cutoff = time.monotonic() - max_age
        for key in [k for k, w in self._live.items() if w.seen < cutoff]:
            self.retire(key)

    def dead_lettered(self, function: str) -> None:
        """This controller dead-lettered an event of ``function`` (delivery exhausted)."""
        self.exhausted[function] = self.exhausted.get(function, 0) + 1

    def _retired_base(self, function: str) -> Totals:
        return self._retired.setdefault(function, Totals())

    def _cold_start(self, function: str, info: dict[str, Any]) -> None:
        phases = info.get("startup")
        if not isinstance(phases, dict) or not phases:
            return
        seconds = sum(float(v) for v in phases.values())
        self.cold_starts.setdefault(function, Histogram(COLD_START_BOUNDS)).observe(seconds)

    def _note_errors(self, key: str, function: str, errors: Any) -> None:
        for e in errors if isinstance(errors, list) else ():
            if not isinstance(e, dict):
                continue
            mark = (key, e.get("at"), e.get("request_id"))
            if mark in self._error_keys:
                continue
            self._error_keys.append(mark)
            self.errors.append({**e, "function": function, "worker": key.partition(".")[2]})

    # -- reading ---------------------------------------------------------------------------

    def functions(self) -> set[str]:
        return set(self.kinds) | set(self._retired) | set(self.cold_starts) | set(self.exhausted)

    def totals(self, function: str) -> Totals:
        """Everything counted for ``function``: live workers' counts plus the retired ones."""
        out = Totals()
        base = self._retired.get(function)
        if base is not None:
            out.add(base)
        for w in self._live.values():
            if w.function == function:
                out.add(w.totals)
        out.dead_letters += self.exhausted.get(function, 0)
        return out

    def sample(self) -> None:
        """Record each function's invocation count and durations, for rates and charts."""
        now = time.time()
        for function in self.functions():
            t = self.totals(function)
            ring = self.history.setdefault(function, deque(maxlen=HISTORY))
            ring.append(Sample(now, t.ok + t.error, t.duration))

    def series(self, function: str, window: int = 5) -> list[dict[str, Any]]:
        """Rate (per second) and p50/p99 (seconds) over a sliding ``window`` of samples."""
        ring = list(self.history.get(function, ()))
        out = []
        for i in range(1, len(ring)):
            a, b = ring[max(0, i - window)], ring[i]
            delta = b.duration.copy()
            delta.subtract(a.duration)
            span = b.at - a.at
            out.append(
                {
                    "t": round(b.at, 3),
                    "rate": round((b.count - a.count) / span, 3) if span > 0 else 0.0,
                    "p50": delta.quantile(0.5),
                    "p99": delta.quantile(0.99),
                }
            )
        return out
