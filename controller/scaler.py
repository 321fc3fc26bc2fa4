"""Scaling decisions, as a pure function of what the controller observes.

Kept free of I/O so the policy can be read, and tested, on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runtime.wire.spec import FunctionSpec


@dataclass(frozen=True)
class WorkerState:
    """A live worker as its heartbeats describe it."""

    id: str
    version: str
    state: str  # "ready" or "draining"
    inflight: int
    idle_for: float  # seconds since it last had work
    served: int = 0  # invocations (items, for an executor) it has finished
    reported_at: float | None = None  # when its heartbeat arrived (time.monotonic())

    @classmethod
    def of(cls, info: Mapping[str, Any], reported_at: float | None = None) -> WorkerState:
        """The state a worker's heartbeat values describe, as they arrived at ``reported_at``."""
        return cls(
            id=str(info.get("id")),
            version=str(info.get("version")),
            state=str(info.get("state")),
            inflight=int(info.get("inflight", 0)),
            idle_for=float(info.get("idle_for", 0.0)),
            served=int(info.get("served", 0)),
            reported_at=reported_at,
        )


@dataclass(frozen=True)
class Observation:
    """One function's load and workers, cluster-wide."""

    pending: int  # events stored and not yet delivered
    ack_pending: int  # events delivered and not yet acknowledged
    workers: list[WorkerState] = field(default_factory=list)
    starting: int = 0  # launched, not yet reporting (by any controller)
    # Workers the keep-alive policy wants loaded now with no event waiting (pre-warm
    # included): controller.keepalive.workers_wanted. None: spec.idle_timeout alone decides.
    keep_warm: int | None = None
    # Seconds idle before a worker above that floor goes (None: spec.fixed_idle_s, which is
    # idle_timeout when a number); the controller scales an adaptive fallback to its clock.
    idle_timeout: float | None = None


@dataclass(frozen=True)
class Decision:
    spawn: int = 0
    drain: tuple[str, ...] = ()
    # Workers of the current version the function should have once this is done: what
    # placement spreads over hosts (controller.placement). Stale versions' are not counted.
    wanted: int = 0


def decide(spec: FunctionSpec, obs: Observation) -> Decision:
    """How many workers to add, and which to drain, for one function."""
    # Workers of an older version are drained; their replacements come from demand below.
    stale = tuple(w.id for w in obs.workers if w.state == "ready" and w.version != spec.version)
    current = [w for w in obs.workers if w.state == "ready" and w.version == spec.version]
    live = len(current) + obs.starting

    inflight = sum(w.inflight for w in current)
    demand = obs.pending + max(obs.ack_pending, inflight)
    desired = math.ceil(demand / spec.capacity)
    if spec.partitions and demand:
        # One request of a partitioned model may span up to `partitions` workers.
        desired = max(desired, spec.partitions)
    if current and inflight >= len(current) * spec.capacity:
        # Every slot is busy: request/reply load queued in front of the workers is
        # invisible to JetStream, so saturation itself asks for one more.
        desired = max(desired, len(current) + 1)
    floor = spec.min_workers if obs.keep_warm is None else max(spec.min_workers, obs.keep_warm)
    desired = min(spec.max_workers, max(floor, desired))

    spawn = max(0, desired - live)
    drain: list[str] = list(stale)
    surplus = live - desired
    idle_timeout = spec.fixed_idle_s if obs.idle_timeout is None else obs.idle_timeout
    if surplus > 0:
        # Workers idle past idle_timeout go, the longest idle first. When the keep-alive
        # policy wants none loaded (before its pre-warm, or past its window) and nothing is
        # waiting, the function is unloaded: every idle worker goes now.
        unload = obs.keep_warm is not None and desired == 0
        idle = sorted(
            (w for w in current if w.inflight == 0 and (unload or w.idle_for >= idle_timeout)),
            key=lambda w: -w.idle_for,
        )
        drain += [w.id for w in idle[:surplus]]
    wanted = live + spawn - (len(drain) - len(stale))
    return Decision(spawn=spawn, drain=tuple(drain), wanted=wanted)
