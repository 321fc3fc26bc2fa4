"""Placement: how many workers of each function each host runs, as a pure function.

The placing controller (:mod:`controller.lease`) turns each function's wanted worker count
(from its scaling decision, :func:`controller.scaler.decide`) into a :data:`Plan`, which every
controller reads to start or stop its own host's workers. :func:`place` is free of I/O:

- **Capacity.** A host's assigned workers never need more than it declares (GPUs and memory;
  see :func:`controller.hosts.need_of`). A worker that fits nowhere stays unplaced.
- **Stable.** It starts from the previous plan: an assignment that still fits on a live host
  stays where it is, so nothing moves when nothing changed (``place`` is idempotent).
- **Spread.** A new worker goes to the host with room that runs the fewest of its function,
  then the fewest workers in all; a function shrinks where its scaling decision drains (the
  ``shrink_from`` hosts), else where it runs the most.
- **Hosts that go.** A host absent from ``hosts`` (silent) loses its assignments; they are
  placed anew on the others, room permitting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .hosts import Amount

if TYPE_CHECKING:
    from collections.abc import Mapping

Plan = dict[str, dict[str, int]]  # function -> host -> workers


@dataclass(frozen=True)
class Wanted:
    """One function's wanted workers, what each takes, and where a shrink should start."""

    count: int
    need: Amount = field(default_factory=Amount)
    shrink_from: tuple[str, ...] = ()  # hosts of the workers its decision drains


@dataclass(frozen=True)
class Placement:
    plan: Plan
    unplaced: dict[str, int]  # function -> wanted workers that fit on no host


def place(
    wanted: Mapping[str, Wanted],
    hosts: Mapping[str, Amount],
    previous: Mapping[str, Mapping[str, int]],
) -> Placement:
    """Each function's ``wanted`` workers spread over ``hosts`` (name -> capacity), kept where
    ``previous`` had them as far as they still fit."""
    plan: Plan = {}
    used = {h: Amount() for h in hosts}
    # Larger needs first (GPUs, then memory), so small ones do not fill the hosts they need.
    order = sorted(wanted, key=lambda f: (-wanted[f].need.gpus, -wanted[f].need.memory_mb, f))
    for f in order:  # keep what still fits, shrunk to the wanted count
        w = wanted[f]
        kept = _shrunk({h: n for h, n in previous.get(f, {}).items() if h in hosts and n > 0}, w)
        for h in sorted(kept):
            fit = _fitting(w.need, hosts[h], used[h], kept[h])
            if fit:
                plan.setdefault(f, {})[h] = fit
                used[h] = used[h] + w.need.times(fit)
    unplaced: dict[str, int] = {}
    for f in order:  # then place what is missing
        w = wanted[f]
        counts = plan.setdefault(f, {})
        for _ in range(w.count - sum(counts.values())):
            room = [h for h in hosts if (used[h] + w.need).within(hosts[h])]
            if not room:
                unplaced[f] = w.count - sum(counts.values())
                break
            h = min(room, key=lambda h: (counts.get(h, 0), _load(plan, h), h))
            counts[h] = counts.get(h, 0) + 1
            used[h] = used[h] + w.need
    return Placement({f: c for f, c in plan.items() if c}, unplaced)


def _shrunk(counts: dict[str, int], w: Wanted) -> dict[str, int]:
    """``counts`` less its surplus over ``w.count``: from the ``shrink_from`` hosts first,
    then from the hosts with the most."""
    surplus = sum(counts.values()) - w.count
    for h in w.shrink_from:
        if surplus > 0 and counts.get(h, 0) > 0:
            counts[h] -= 1
            surplus -= 1
    while surplus > 0:
        h = max(counts, key=lambda h: (counts[h], h))
        counts[h] -= 1
        surplus -= 1
    return {h: n for h, n in counts.items() if n > 0}


def _fitting(need: Amount, capacity: Amount, used: Amount, n: int) -> int:
    """How many of ``n`` workers needing ``need`` fit beside ``used`` in ``capacity``."""
    while n > 0 and not (used + need.times(n)).within(capacity):
        n -= 1
    return n


def _load(plan: Plan, host: str) -> int:
    return sum(c.get(host, 0) for c in plan.values())
