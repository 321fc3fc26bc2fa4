"""The adaptive keep-alive in the running controller: for each function it owns, when it was
last active, its idle times recorded in the shared history, its windows, and the workers the
policy wants loaded now (:func:`controller.keepalive.workers_wanted`, the scaler's
``Observation.keep_warm``).

A function is *active* while the controller sees demand for it (events pending or
unacknowledged, invocations in flight, executor items held by the cold path) and when a
worker's heartbeat shows it finished more work than before (``served``; its ``idle_for``
dates that work). An activity that follows a quiet spell starts a new one: the time since the
previous one ended is an idle time, recorded in the shared history (KV, revision-checked) by a
task off the reconcile path, with a cold start when demand found no ready worker, and the
time that activity began. The controller's own clock is ``time.monotonic()``; what is stored
is in Unix time: cold starts, and the latest activity, from which a controller that restarts
or takes the function over (it has seen no activity yet) dates the windows, so it pre-warms
on time instead of waiting for the next event.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
from nats.js.errors import BucketNotFoundError, NotFoundError

from runtime.wire import protocol

from .idle_history import COLD_KEPT_S, IdleHistoryStore, open_bucket
from .keepalive import DEFAULT, KeepAliveSettings, Windows, new_history, windows, workers_wanted

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import TaskGroup
    from nats.js import JetStreamContext

    from runtime.wire.spec import FunctionSpec

    from .scaler import WorkerState

log = logging.getLogger("shoal.keepalive")

LEAD_KEPT = 5  # a function's latest start-up times; pre-warms lead by the longest of them
DEFAULT_LEAD_S = 1.0  # before any start-up time is measured


def fixed_window(spec: FunctionSpec, settings: KeepAliveSettings) -> float:
    """The function's fixed window on the policy's clock: an adaptive function's fallback
    (300 s, 600 s) scales with the bin width (60 s by default), so a compressed clock
    compresses it too; a number of seconds is taken as it is."""
    if not spec.adaptive:
        return spec.fixed_idle_s
    return spec.fixed_idle_s * settings.bin_s / DEFAULT.bin_s


@dataclass
class _Track:
    """What the controller knows of one function's activity."""

    last: float | None = None  # when its latest activity ended (monotonic); None: unknown
    quiet_from: float = float("-inf")  # activity seen before this continues the current one
    demanding: bool = False  # the latest pass saw demand
    served: dict[str, int] = field(default_factory=dict)  # per worker, as last reported
    windows: Windows | None = None  # from the stored history; None until it is read
    idle: list[float] = field(default_factory=list)  # idle times not yet recorded
    cold: list[float] = field(default_factory=list)  # cold starts (Unix times) not yet recorded
    active_at: float | None = None  # the start of an activity (Unix time) not yet recorded
    syncing: bool = False  # a task is reading or recording the history
    lead: deque[float] = field(default_factory=lambda: deque(maxlen=LEAD_KEPT))
    wanted: int = 0  # the policy's answer at the latest pass


class KeepAlive:
    """The policy's state for the functions one controller owns."""

    def __init__(
        self,
        settings: KeepAliveSettings = DEFAULT,
        *,
        grace: float = 1.5,
        unix_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.unix_clock = unix_clock  # what cold starts and activities are stored in
        # After demand is seen, heartbeats report the work it became a little later: work
        # that ended within this many seconds of it continues that activity, and so does
        # work this close to the previous activity (shorter idle times are not recorded).
        self.grace = grace
        self.store: IdleHistoryStore | None = None
        self._tg: TaskGroup | None = None
        self._tracks: dict[str, _Track] = {}
        self._clock = (0.0, unix_clock())  # the latest pass's ``now`` and the Unix time then
        self.synced = anyio.Event()  # fires (and is replaced) after each recording task

    def busy(self) -> bool:
        """Whether idle times or cold starts are waiting to be recorded, or being recorded."""
        return any(t.syncing or t.idle or t.cold for t in self._tracks.values())

    async def start(self, js: JetStreamContext, tg: TaskGroup) -> None:
        """Open the shared history; recording and reading run as tasks of ``tg``."""
        self.store = IdleHistoryStore(await open_bucket(js), self.settings)
        self._tg = tg

    def fixed_s(self, spec: FunctionSpec) -> float:
        return fixed_window(spec, self.settings)

    def launched(self, function: str, seconds: float) -> None:
        """A worker of ``function`` reported in ``seconds`` after it was launched."""
        self._tracks.setdefault(function, _Track()).lead.append(seconds)
        log.debug("a worker of %s reported in %.2fs after its launch", function, seconds)

    def lead_s(self, function: str) -> float:
        t = self._tracks.get(function)
        return max(t.lead) if t is not None and t.lead else DEFAULT_LEAD_S

    def keep_only(self, functions: set[str]) -> None:
        """Forget functions no longer owned here: one that comes back is read anew."""
        for name in set(self._tracks) - functions:
            del self._tracks[name]

    def windows_of(self, spec: FunctionSpec) -> Windows:
        """The function's current windows (the fixed window until its history is read)."""
        t = self._tracks.get(spec.name)
        if t is not None and t.windows is not None:
            return t.windows
        return windows(new_history(self.settings), self.settings, fixed_s=self.fixed_s(spec))

    def wanted(self, function: str) -> int:
        """The policy's answer for ``function`` at the latest pass (0 if not seen)."""
        t = self._tracks.get(function)
        return t.wanted if t is not None else 0

    def observe(
        self,
        spec: FunctionSpec,
        now: float,
        *,
        demand: int,
        workers: list[WorkerState],
        ready: bool,
        lead_s: float = 0.0,
    ) -> int:
        """Take in one reconcile pass's view of ``spec``; the workers its policy wants loaded
        now with no event waiting (before ``min_workers`` and demand, which the scaler adds).

        ``demand``: events waiting or in flight, items held; ``ready``: a worker of the
        current version is serving; ``lead_s``: extra lead for a pre-warm (a reconcile tick).
        """
        t = self._tracks.setdefault(spec.name, _Track())
        self._clock = (now, self.unix_clock())
        if not demand and t.demanding:
            # The first pass that finds the demand gone: the work it was ended since the last
            # pass that saw it, and heartbeats report it up to ``grace`` later. Timed from
            # here, not from that last pass, so slow passes (a loaded controller) do not
            # split one activity into two with a short idle time between.
            t.quiet_from = now + self.grace
            t.demanding = False
        latest = self._activity(t, now, demand, workers)
        if latest is not None:
            # Demand seen by this pass and the one before is one activity, however far apart
            # the passes were (a pass that launches a worker can take a while).
            going_on = bool(demand) and t.demanding
            quiet = (
                t.last is not None
                and not going_on
                and latest > t.quiet_from
                and latest - t.last > self.grace
            )
            if quiet and t.last is not None:
                t.idle.append(latest - t.last)  # a new activity after a quiet spell
                log.debug("%s was idle %.2fs", spec.name, latest - t.last)
            if quiet or t.last is None:  # a new activity, or the first one seen here
                t.active_at = self._unix(latest)
                if demand and not ready:
                    t.cold.append(self._clock[1])  # cold: it waits for a worker
            t.last = latest if t.last is None else max(t.last, latest)
        if demand:
            t.quiet_from = now + self.grace
            t.demanding = True
        if t.windows is None or t.idle or t.cold or t.active_at is not None:
            self._sync(spec, t)
        since = None if t.last is None else now - t.last
        w = self.windows_of(spec)
        t.wanted = workers_wanted(w, since, lead_s=self.lead_s(spec.name) + lead_s)
        return t.wanted

    def keep_warm(
        self,
        spec: FunctionSpec,
        now: float,
        *,
        demand: int,
        workers: list[WorkerState],
        lead_s: float,
        called: bool,
    ) -> tuple[int | None, float | None]:
        """The policy's floor of workers for ``spec`` and its scale-in delay, for the scaler
        (None, None: the fixed ``idle_timeout`` alone decides). Every function's activity is
        followed (its cold starts are counted for ``shoal status``); adaptive ones get the
        policy's answer: a partitioned pool at its width, an executor also while a handler
        that ``called`` it has a worker up."""
        ready = any(w.state == "ready" and w.version == spec.version for w in workers)
        wanted = self.observe(spec, now, demand=demand, workers=workers, ready=ready, lead_s=lead_s)
        if not spec.adaptive:
            return None, None
        if spec.kind == "executor" and called:
            wanted = 1
        return wanted * max(1, spec.partitions), self.fixed_s(spec)

    def _offset(self) -> float:
        """Unix time minus the clock ``observe`` is given (monotonic in a controller)."""
        now, unix = self._clock
        return unix - now

    def _unix(self, at: float) -> float:
        return at + self._offset()

    @staticmethod
    def _activity(t: _Track, now: float, demand: int, workers: list[WorkerState]) -> float | None:
        """When the function was last active, as this pass sees it (None: nothing new)."""
        latest = now if demand else None
        for w in workers:
            before = t.served.get(w.id)
            t.served[w.id] = w.served
            # With no last activity known (a restarted controller, or one taking the function
            # over), a live worker counts as active as of its idleness: its heartbeat may
            # predate the work it did, and unloading it at once would throw that away.
            unknown = t.last is None and before is None
            if (w.served > (before or 0) or unknown) and w.reported_at is not None:
                at = w.reported_at - w.idle_for
                latest = at if latest is None else max(latest, at)
        for gone in set(t.served) - {w.id for w in workers}:
            del t.served[gone]
        return latest

    def _sync(self, spec: FunctionSpec, t: _Track) -> None:
        """Record what is pending and refresh the windows, in a task (one at a time)."""
        if t.syncing or self.store is None or self._tg is None:
            return
        t.syncing = True
        self._tg.start_soon(self._record, spec, t)

    async def _record(self, spec: FunctionSpec, t: _Track) -> None:
        assert self.store is not None
        try:
            while True:
                idle, cold, active = t.idle, t.cold, t.active_at
                t.idle, t.cold, t.active_at = [], [], None
                if idle or cold or active is not None:
                    history = await self.store.record(
                        spec.name, *idle, cold_at=cold, active_at=active
                    )
                else:
                    history, _ = await self.store.read(spec.name)
                if t.last is None and history.last_active > 0:
                    # Nothing seen here yet (a restart, a take-over): the activity another
                    # controller recorded dates the windows, so a pre-warm is not missed.
                    t.last = min(self._clock[0], history.last_active - self._offset())
                t.windows = windows(history, self.settings, fixed_s=self.fixed_s(spec))
                if not (t.idle or t.cold or t.active_at is not None):
                    return
        except Exception as e:
            log.warning("keep-alive history of %s not updated: %s", spec.name, e)
            if t.windows is None:  # the fixed window until a later activity tries again
                t.windows = self.windows_of(spec)
        finally:
            t.syncing = False
            self.synced.set()
            self.synced = anyio.Event()


async def summaries(
    js: JetStreamContext, specs: dict[str, FunctionSpec], settings: KeepAliveSettings
) -> dict[str, dict[str, object]]:
    """Each function's keep-alive as ``shoal status`` shows it: its windows now (from the
    stored history, as a controller computes them) and its cold starts in the last hour."""
    try:
        store: IdleHistoryStore | None = IdleHistoryStore(
            await js.key_value(protocol.IDLE_HISTORY_BUCKET), settings
        )
    except (BucketNotFoundError, NotFoundError):
        store = None  # no controller has recorded anything yet
    since = time.time() - COLD_KEPT_S
    out: dict[str, dict[str, object]] = {}
    for name, spec in specs.items():
        history = (await store.read(name))[0] if store is not None else new_history(settings)
        fixed = fixed_window(spec, settings)
        w = windows(history, settings, fixed_s=fixed)
        if not spec.adaptive:
            w = Windows(0.0, fixed, "fixed", "configured")
        out[name] = {
            "mode": "adaptive" if spec.adaptive else "fixed",
            "kind": w.kind,
            "basis": w.basis,
            "prewarm_s": w.prewarm_s,
            "keepalive_s": w.keepalive_s,
            "idle_times": history.samples,
            "cold_starts_1h": sum(1 for t in history.cold_starts if t >= since),
        }
    return out


def describe(summary: dict[str, object]) -> str:
    """One line: ``fixed 300 s``, ``pre-warm 540 s, keep 186 s``, ``keep 66 s``, with why
    an adaptive function is on its fixed window."""
    pre, keep = float(summary["prewarm_s"]), float(summary["keepalive_s"])  # type: ignore[arg-type]
    if summary["kind"] == "fixed":
        why = {"few-samples": f"learning, {summary['idle_times']} idle times", "flat": "flat"}
        note = why.get(str(summary["basis"]))
        return f"fixed {keep:g} s" + (f" ({note})" if note else "")
    text = f"pre-warm {pre:g} s, keep {keep:g} s" if pre > 0 else f"keep {keep:g} s"
    return text + (" (forecast)" if summary["basis"] == "forecast" else "")
