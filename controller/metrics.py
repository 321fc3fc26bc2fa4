"""What a controller exports: one :class:`Snapshot` of its figures and gauges, written as
Prometheus text (``/metrics``) or as the status page's JSON (``/api/status``).

The names and labels are a contract (README, deploy/grafana/): every series carries the
``controller`` label, and each controller exports only the workers it launched (gauges) and
what they counted (counters, kept across their exits by :mod:`controller.figures`). The
backlog of a function comes from the controller that places (docs/placement.md), so a sum
over controllers counts it once. ``prometheus_client`` is imported here only, when a scrape
is written: no worker and no command that does not serve metrics pays for it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from runtime.wire import deadletter, protocol
from runtime.wire.figures import BATCH_BOUNDS, CHANNELS, COLD_START_BOUNDS, Histogram

if TYPE_CHECKING:
    from collections.abc import Iterator

    from runtime.wire.spec import FunctionSpec

    from .controller import Controller
    from .figures import Totals

log = logging.getLogger("shoal.metrics")

STATES = ("starting", "ready", "draining")
BACKLOG_TIMEOUT = 2.0  # seconds a scrape waits for one function's consumer info
DEAD_LETTERS_SHOWN = 10


@dataclass
class Snapshot:
    """Everything one scrape or one status request shows, read at one moment."""

    controller: str
    at: float
    kinds: dict[str, str]  # function -> "function" or "executor", every function shown
    partitioned: set[str]
    workers: dict[tuple[str, str], int]  # (function, state) -> this controller's workers
    in_flight: dict[str, int]
    queue: dict[str, int]  # executor -> items waiting for a batch
    backlog: dict[str, int]  # owned functions with a stream
    totals: dict[str, Totals]
    cold_starts: dict[str, Histogram]
    errors: list[dict[str, Any]] = field(default_factory=list)


async def snapshot(controller: Controller) -> Snapshot:
    """Read the controller's figures, its live workers and, if it places, the backlogs."""
    figures = controller.figures
    specs = controller.functions.items()
    kinds = {**figures.kinds, **{name: s.kind for name, s in specs.items()}}
    workers: dict[tuple[str, str], int] = {}
    in_flight: dict[str, int] = {}
    queue: dict[str, int] = {}
    for info in controller.workers.items(controller.settings.stale_after).values():
        if info.get("controller") != controller.id:
            continue
        name = str(info.get("function"))
        kinds.setdefault(name, str(info.get("kind", "function")))
        state = str(info.get("state"))
        workers[(name, state)] = workers.get((name, state), 0) + 1
        in_flight[name] = in_flight.get(name, 0) + int(info.get("inflight", 0))
        if "queued" in info:
            queue[name] = queue.get(name, 0) + int(info["queued"])
    for name, n in controller.starting_counts().items():
        workers[(name, "starting")] = workers.get((name, "starting"), 0) + n
    return Snapshot(
        controller=controller.id,
        at=time.time(),
        kinds=kinds,
        partitioned={name for name, s in specs.items() if s.partitions},
        workers=workers,
        in_flight=in_flight,
        queue=queue,
        backlog=await _backlog(controller, specs),
        totals={name: figures.totals(name) for name in kinds},
        cold_starts={name: h.copy() for name, h in figures.cold_starts.items()},
        errors=list(figures.errors),
    )


async def _backlog(controller: Controller, specs: dict[str, FunctionSpec]) -> dict[str, int]:
    out: dict[str, int] = {}

    async def one(spec: FunctionSpec) -> None:
        try:
            with anyio.fail_after(BACKLOG_TIMEOUT):
                ci = await controller.js.consumer_info(spec.stream, protocol.CONSUMER)
            out[spec.name] = int(ci.num_pending or 0)
        except Exception as e:
            log.debug("backlog of %s unknown: %r", spec.name, e)

    async with anyio.create_task_group() as tg:
        for spec in specs.values():
            if spec.kind != "executor" and controller.places():
                tg.start_soon(one, spec)
    return out


# -- Prometheus text ----------------------------------------------------------------------


def prometheus_text(s: Snapshot) -> tuple[bytes, str]:
    """The snapshot in Prometheus's text format, and its content type."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    class Collector:
        def collect(self) -> Iterator[Any]:
            return _families(s)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    return generate_latest(registry), CONTENT_TYPE_LATEST


def _families(s: Snapshot) -> Iterator[Any]:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    c = s.controller
    fn = ["controller", "function"]
    invocations = CounterMetricFamily(
        "shoal_invocations", "Invocations ended, by status", labels=[*fn, "status"]
    )
    duration = HistogramMetricFamily(
        "shoal_invocation_duration_seconds", "Handler time, measured on the worker", labels=fn
    )
    dead = CounterMetricFamily("shoal_dead_letters", "Events dead-lettered", labels=fn)
    redeliveries = CounterMetricFamily(
        "shoal_redeliveries", "Events delivered again (attempt > 1)", labels=fn
    )
    dataplane = CounterMetricFamily(
        "shoal_dataplane_bytes",
        "Intermediates sent between partitions, by channel",
        labels=[*fn, "channel"],
    )
    batch = HistogramMetricFamily(
        "shoal_executor_batch_size",
        "Items per batch an executor ran",
        labels=["controller", "executor"],
    )
    for name in sorted(s.kinds):
        t = s.totals[name]
        invocations.add_metric([c, name, "ok"], t.ok)
        invocations.add_metric([c, name, "error"], t.error)
        duration.add_metric([c, name], t.duration.cumulative(), t.duration.sum)
        dead.add_metric([c, name], t.dead_letters)
        redeliveries.add_metric([c, name], t.redeliveries)
        if name in s.partitioned or t.dataplane:
            for channel in CHANNELS:
                dataplane.add_metric([c, name, channel], t.dataplane.get(channel, 0))
        if s.kinds[name] == "executor":  # from zero on, so that rate() sees the first batch
            sizes = t.batch or Histogram(BATCH_BOUNDS)
            batch.add_metric([c, name], sizes.cumulative(), sizes.sum)
    yield from (invocations, duration, dead, redeliveries, dataplane, batch)
    yield from _gauges(s, GaugeMetricFamily)
    cold_total = CounterMetricFamily("shoal_cold_starts", "Workers started and ready", labels=fn)
    cold = HistogramMetricFamily(
        "shoal_cold_start_seconds", "A worker's time from spawn to ready", labels=fn
    )
    for name in sorted(s.kinds):
        h = s.cold_starts.get(name) or Histogram(COLD_START_BOUNDS)
        cold_total.add_metric([c, name], h.count)
        cold.add_metric([c, name], h.cumulative(), h.sum)
    yield from (cold_total, cold)


def _gauges(s: Snapshot, gauge: Any) -> Iterator[Any]:
    c = s.controller
    workers = gauge(
        "shoal_workers",
        "This controller's workers, by state",
        labels=["controller", "function", "state"],
    )
    in_flight = gauge(
        "shoal_in_flight", "Invocations running now", labels=["controller", "function"]
    )
    backlog = gauge(
        "shoal_backlog",
        "Events stored and not yet delivered (from the function's owning controller)",
        labels=["controller", "function"],
    )
    queue = gauge(
        "shoal_executor_queue", "Items waiting for a batch", labels=["controller", "executor"]
    )
    for name, kind in sorted(s.kinds.items()):
        for state in STATES:
            workers.add_metric([c, name, state], s.workers.get((name, state), 0))
        in_flight.add_metric([c, name], s.in_flight.get(name, 0))
        if name in s.backlog:
            backlog.add_metric([c, name], s.backlog[name])
        if kind == "executor":
            queue.add_metric([c, name], s.queue.get(name, 0))
    yield from (workers, in_flight, backlog, queue)


# -- the status page's JSON ---------------------------------------------------------------


def status(s: Snapshot, history: dict[str, list[dict[str, Any]]], dead: dict[str, Any]) -> Any:
    """``/api/status``: what the page shows."""
    functions, executors = [], []
    for name, kind in sorted(s.kinds.items()):
        t = s.totals[name]
        counts = {state: s.workers.get((name, state), 0) for state in STATES}
        series = history.get(name, [])
        recent = series[-1] if series else {}
        row = {
            "name": name,
            "state": _state(counts),
            "workers": counts,
            "in_flight": s.in_flight.get(name, 0),
            "ok": t.ok,
            "error": t.error,
            "rate": recent.get("rate", 0.0),
            "p50": recent.get("p50"),
            "p99": recent.get("p99"),
            "dead_letters": t.dead_letters,
            "redeliveries": t.redeliveries,
            "cold_starts": s.cold_starts[name].count if name in s.cold_starts else 0,
            "history": series,
        }
        if kind == "executor":
            b = t.batch
            row.update(
                queue=s.queue.get(name, 0),
                batches=b.count if b else 0,
                mean_batch=round(b.sum / b.count, 2) if b and b.count else None,
                p50_batch=b.quantile(0.5) if b else None,
                batch_sizes=b.cumulative() if b else [],
            )
            executors.append(row)
        else:
            row["backlog"] = s.backlog.get(name)
            functions.append(row)
    return {
        "controller": s.controller,
        "at": s.at,
        "functions": functions,
        "executors": executors,
        "errors": list(reversed(s.errors)),
        "dead_letters": dead,
    }


def _state(counts: dict[str, int]) -> str:
    if counts["ready"]:
        return "ready"
    if counts["starting"]:
        return "starting"
    return "draining" if counts["draining"] else "scaled to zero"


async def recent_dead_letters(controller: Controller) -> dict[str, Any]:
    """How many dead letters are kept, and the last few (newest first)."""
    js = controller.js
    try:
        info = await js.stream_info(deadletter.STREAM)
    except Exception:
        return {"kept": 0, "recent": []}
    recent: list[dict[str, Any]] = []
    seq, tries = info.state.last_seq, 0
    while seq >= max(1, info.state.first_seq) and len(recent) < DEAD_LETTERS_SHOWN:
        tries += 1
        if tries > 5 * DEAD_LETTERS_SHOWN:  # re-driven (deleted) letters in between
            break
        try:
            raw = await js.get_msg(deadletter.STREAM, seq)
        except Exception:
            seq -= 1
            continue
        h = dict(raw.headers or {})
        recent.append(
            {
                "seq": seq,
                "function": h.get(deadletter.FUNCTION, ""),
                "request_id": h.get("Shoal-Request-Id"),
                "code": h.get(deadletter.ERROR, ""),
                "reason": h.get(deadletter.REASON, "")[:300],
                "deliveries": int(h.get(deadletter.DELIVERIES, "0") or 0),
            }
        )
        seq -= 1
    return {"kept": int(info.state.messages), "recent": recent}
