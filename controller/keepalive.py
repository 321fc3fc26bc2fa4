"""Keep-alive and pre-warm windows learned from each function's idle times.

The hybrid histogram policy of Shahrad et al., "Serverless in the Wild" (USENIX ATC 2020):
per function, a histogram of idle times (the time from one event to the next; 1-minute bins up
to 4 hours by default). After an event the function's worker is

- unloaded, and loaded again ``prewarm_s`` later (the head percentile of the idle times, less a
  margin), then kept for ``keepalive_s`` (up to the tail percentile, plus a margin), when the
  histogram is representative;
- kept for a fixed window (the function's ``idle_timeout``) from the event, when it is not:
  too few samples, or too flat (the coefficient of variation of the bin counts is low);
- pre-warmed around a forecast of the next idle time when most idle times fall beyond the
  histogram's range (the paper fits an ARIMA model; here the median of the last few).

Times are measured from a function's last activity (the last moment it had an event waiting or
in flight; in a per-minute trace, its last minute with invocations) to its next event. Pure: no
I/O and no clock, the caller says how long ago that activity was. :mod:`controller.idle_history`
keeps the histograms in NATS KV; docs/keepalive.md has the rest.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Literal

OOB_KEPT = 16  # out-of-bounds idle times a history remembers (the latest), for the forecast


@dataclass(frozen=True)
class KeepAliveSettings:
    """The policy's knobs. The defaults are the paper's, except ``min_samples`` and
    ``fixed_s`` (there: none, and the histogram's whole range)."""

    bin_s: float = 60.0  # width of a bin, seconds (smaller on a compressed clock)
    bins: int = 240  # bins in the histogram: 240 x 60 s covers 4 hours
    head: float = 0.05  # percentile of idle times at which to pre-warm
    tail: float = 0.99  # percentile of idle times up to which to keep the worker
    margin: float = 0.10  # pre-warm this much earlier, keep this much longer
    min_samples: int = 5  # idle times needed before the history is trusted at all
    cv_threshold: float = 2.0  # bin counts' coefficient of variation below which: too flat
    oob_threshold: float = 0.5  # share of idle times beyond the range that asks for a forecast
    oob_margin: float = 0.15  # the forecast's margin, each side
    oob_recent: int = 3  # the forecast is the median of this many latest out-of-bounds times
    fixed_s: float = 300.0  # the window when the history is not representative

    def __post_init__(self) -> None:
        if not (self.bin_s > 0 and math.isfinite(self.bin_s)):
            raise ValueError(f"bin_s must be > 0, got {self.bin_s!r}")
        if self.bins < 1:
            raise ValueError(f"bins must be >= 1, got {self.bins!r}")
        if not 0.0 <= self.head <= self.tail <= 1.0:
            raise ValueError(f"need 0 <= head <= tail <= 1, got {self.head!r}, {self.tail!r}")
        if not (0.0 <= self.margin < 1.0 and 0.0 <= self.oob_margin < 1.0):
            raise ValueError("margins must be in [0, 1)")
        if self.min_samples < 1 or not 1 <= self.oob_recent <= OOB_KEPT:
            raise ValueError(f"need min_samples >= 1 and 1 <= oob_recent <= {OOB_KEPT}")
        if not 0.0 < self.oob_threshold <= 1.0:
            raise ValueError(f"oob_threshold must be in (0, 1], got {self.oob_threshold!r}")
        if self.fixed_s < 0 or self.cv_threshold < 0:
            raise ValueError("fixed_s and cv_threshold must be >= 0")


DEFAULT = KeepAliveSettings()


@dataclass
class IdleHistory:
    """One function's idle times: counts per bin, and those beyond the last bin.

    Change it only through :func:`observe`, which keeps the derived totals in step.
    """

    bin_s: float
    counts: list[int]
    oob_count: int = 0  # idle times beyond the last bin ("out of bounds")
    oob_recent: list[float] = field(default_factory=list)  # the latest of them, oldest first
    # Bookkeeping the policy does not read: when (Unix time) the function's recent cold
    # starts were, as the controller records them for `shoal status`.
    cold_starts: list[float] = field(default_factory=list)
    # And when (Unix time) its latest recorded activity was, so that a controller that
    # restarts or takes the function over knows when to pre-warm it (0: not known).
    last_active: float = 0.0
    in_range: int = field(init=False)  # sum(counts)
    _sumsq: int = field(init=False, repr=False)  # sum of squared counts, for the CV

    def __post_init__(self) -> None:
        if not (self.bin_s > 0 and math.isfinite(self.bin_s)) or not self.counts:
            raise ValueError("a history needs bin_s > 0 and at least one bin")
        if any(c < 0 for c in self.counts) or self.oob_count < 0:
            raise ValueError("counts must be >= 0")
        self.in_range = sum(self.counts)
        self._sumsq = sum(c * c for c in self.counts)

    @property
    def samples(self) -> int:
        return self.in_range + self.oob_count

    @property
    def range_s(self) -> float:
        return self.bin_s * len(self.counts)

    def cv(self) -> float:
        """Coefficient of variation of the bin counts (sample standard deviation / mean):
        high for idle times gathered in a few bins, low for ones spread evenly."""
        b, n = len(self.counts), self.in_range
        if n == 0 or b < 2:
            return 0.0
        var = (self._sumsq - n * n / b) / (b - 1)
        return math.sqrt(max(0.0, var)) / (n / b)

    def percentile_bin(self, p: float) -> int:
        """The first bin by which a share ``p`` of the in-range idle times is reached."""
        need = p * self.in_range - 1e-9
        acc = 0
        for i, c in enumerate(self.counts):
            acc += c
            if c and acc >= need:
                return i
        return len(self.counts) - 1


def new_history(settings: KeepAliveSettings = DEFAULT) -> IdleHistory:
    return IdleHistory(bin_s=settings.bin_s, counts=[0] * settings.bins)


def bin_of(history: IdleHistory, idle_s: float) -> int:
    """The bin an idle time falls in (past the last one: out of bounds). Times a hair (1e-9
    of a bin) below a bin's lower edge count in that bin: 0.5 s is in bin 10 of 0.05 s bins,
    though 0.5 // 0.05 == 9.0."""
    return math.floor(max(0.0, idle_s) / history.bin_s + 1e-9)


def observe(history: IdleHistory, idle_s: float) -> None:
    """Add one idle time: seconds from the function's last activity to its next event (a
    negative one, from clocks that disagree, counts as zero)."""
    if not math.isfinite(idle_s):
        raise ValueError(f"an idle time must be a finite number of seconds, got {idle_s!r}")
    idle = max(0.0, idle_s)
    b = bin_of(history, idle)
    if b < len(history.counts):
        c = history.counts[b]
        history.counts[b] = c + 1
        history.in_range += 1
        history._sumsq += 2 * c + 1
    else:
        history.oob_count += 1
        history.oob_recent.append(idle)
        del history.oob_recent[:-OOB_KEPT]


Kind = Literal["adaptive", "fixed"]
Basis = Literal[
    "histogram", "forecast", "few-samples", "flat", "configured"
]  # configured: set by hand


@dataclass(frozen=True)
class Windows:
    """After a function's activity: no worker for ``prewarm_s``, then one for ``keepalive_s``.

    ``prewarm_s == 0`` is plain keep-alive: the worker stays loaded from the activity on.
    """

    prewarm_s: float
    keepalive_s: float
    kind: Kind
    basis: Basis

    @property
    def end_s(self) -> float:
        """Seconds after the last activity at which the worker goes."""
        return self.prewarm_s + self.keepalive_s


def windows(
    history: IdleHistory, settings: KeepAliveSettings = DEFAULT, *, fixed_s: float | None = None
) -> Windows:
    """The windows to apply after a function's latest activity, from its history so far.

    ``fixed_s`` (the function's ``idle_timeout``) overrides ``settings.fixed_s``.
    """
    fixed = settings.fixed_s if fixed_s is None else fixed_s
    n = history.samples
    if n < settings.min_samples:
        return Windows(0.0, fixed, "fixed", "few-samples")
    if history.oob_count / n >= settings.oob_threshold:
        forecast = statistics.median(history.oob_recent[-settings.oob_recent :])
        start = _floor_ms(forecast * (1 - settings.oob_margin))
        end = _ceil_ms(forecast * (1 + settings.oob_margin))
        return Windows(start, end - start, "adaptive", "forecast")
    if history.cv() < settings.cv_threshold:
        return Windows(0.0, fixed, "fixed", "flat")
    head = history.percentile_bin(settings.head) * history.bin_s
    tail = (history.percentile_bin(settings.tail) + 1) * history.bin_s  # the bin's upper edge
    start = _floor_ms(head * (1 - settings.margin))
    if start < history.bin_s:
        start = 0.0  # unloading for less than one bin is not worth a cold load
    end = _ceil_ms(tail * (1 + settings.margin))
    return Windows(start, end - start, "adaptive", "histogram")


def workers_wanted(windows: Windows, since_last_s: float | None, *, lead_s: float = 0.0) -> int:
    """Workers the policy wants loaded now, with no event waiting: 1 inside the window, else 0.

    ``since_last_s``: seconds since the function's last activity (None: it never had any).
    ``lead_s``: start pre-warming this much early, to cover a worker's own start-up time.
    """
    if since_last_s is None:
        return 0
    start = max(0.0, windows.prewarm_s - lead_s) if windows.prewarm_s > 0 else 0.0
    return int(start <= since_last_s <= windows.end_s)


def _floor_ms(s: float) -> float:
    return math.floor(s * 1000 + 1e-6) / 1000


def _ceil_ms(s: float) -> float:
    return math.ceil(s * 1000 - 1e-6) / 1000
