"""Metrics, without a cluster: workers' counts in heartbeats, a controller's sums over the
workers it launched (exited ones kept, others' left out), and the Prometheus text it writes.
The server side: an address in use costs one warning and the controller runs on."""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

import msgpack
import pytest

from controller.figures import ClusterFigures
from controller.metrics import Snapshot, prometheus_text
from controller.metrics_server import parse_addr
from runtime import config
from runtime.errors import FunctionError
from runtime.wire.figures import DURATION_BOUNDS, Histogram, WorkerFigures
from runtime.wire.kvwatch import Change
from tests.observability import observed_cluster, sample_value

if TYPE_CHECKING:
    from pathlib import Path

    from nats.aio.client import Client as NATS


def heartbeat(
    worker: str, figures: WorkerFigures, controller: str = "ctl-a", function: str = "echo"
) -> Change:
    """The registry change a worker's heartbeat makes."""
    info = {
        "id": worker,
        "function": function,
        "kind": "function",
        "controller": controller,
        "state": "ready",
        "inflight": 0,
        "startup": {"spawn": 0.2, "connect": 0.01, "load": 0.05, "setup": 0.0},
        "figures": figures.snapshot(),
    }
    return Change(f"{function}.{worker}", msgpack.packb(info), False, 1, None, False)


def gone(worker: str, function: str = "echo") -> Change:
    return Change(f"{function}.{worker}", b"", True, 2, None, False)


def worked(ok: int, errors: int = 0, seconds: float = 0.003) -> WorkerFigures:
    w = WorkerFigures()
    for _ in range(ok):
        w.invoked(seconds)
    for i in range(errors):
        w.invoked(seconds, FunctionError("ValueError: no"), f"req-{i}")
    return w


def snapshot_of(figures: ClusterFigures) -> Snapshot:
    kinds = dict(figures.kinds)
    return Snapshot(
        controller=figures.controller_id,
        at=0.0,
        kinds=kinds,
        partitioned=set(),
        workers={},
        in_flight={},
        queue={},
        backlog={},
        totals={name: figures.totals(name) for name in kinds},
        cold_starts=dict(figures.cold_starts),
    )


def test_exited_workers_totals_are_kept_so_counters_never_decrease() -> None:
    figures = ClusterFigures("ctl-a")
    a = worked(3)
    figures.apply(heartbeat("w1", a))
    a.invoked(0.002)  # the last invocation, sent by the drain's final heartbeat
    figures.apply(heartbeat("w1", a))
    assert figures.totals("echo").ok == 4
    figures.apply(gone("w1"))
    assert figures.totals("echo").ok == 4
    figures.apply(heartbeat("w2", worked(2, errors=1)))
    t = figures.totals("echo")
    assert (t.ok, t.error, t.duration.count) == (6, 1, 7)
    figures.apply(gone("w2"))
    figures.apply(gone("w2"))  # the launcher's delete after the worker's own: counted once
    assert (figures.totals("echo").ok, figures.totals("echo").error) == (6, 1)
    assert figures.cold_starts["echo"].count == 2


def test_a_retired_worker_heard_of_again_is_not_counted_twice() -> None:
    figures = ClusterFigures("ctl-a")
    w = worked(5)
    figures.apply(heartbeat("w1", w))
    figures.forget_silent(max_age=0.0)  # silent (another host, say): retired
    assert figures.totals("echo").ok == 5
    w.invoked(0.001)
    figures.apply(heartbeat("w1", w))  # it was alive after all
    assert figures.totals("echo").ok == 6
    assert figures.cold_starts["echo"].count == 1


def test_two_controllers_each_export_only_their_own_workers() -> None:
    a, b = ClusterFigures("ctl-a"), ClusterFigures("ctl-b")
    changes = [
        heartbeat("w1", worked(3), controller="ctl-a"),
        heartbeat("w2", worked(4, errors=2), controller="ctl-b"),
        heartbeat("w3", worked(1), controller="ctl-a"),
    ]
    for change in changes:  # both watch the whole registry
        a.apply(change)
        b.apply(change)
    text_a, ctype = prometheus_text(snapshot_of(a))
    text_b, _ = prometheus_text(snapshot_of(b))
    assert ctype.startswith("text/plain")
    got = {}
    for name, text in (("ctl-a", text_a.decode()), ("ctl-b", text_b.decode())):
        assert f'controller="{name}"' in text
        assert 'controller="ctl-a"' not in text or name == "ctl-a"
        got[name] = (
            sample_value(text, "shoal_invocations_total", function="echo", status="ok"),
            sample_value(text, "shoal_invocations_total", function="echo", status="error"),
        )
    assert got == {"ctl-a": (4.0, 0.0), "ctl-b": (4.0, 2.0)}
    # Summed over controllers, as Prometheus would: every invocation once.
    assert got["ctl-a"][0] + got["ctl-b"][0] == 8


def test_prometheus_text_has_the_contract_names_and_histograms() -> None:
    figures = ClusterFigures("ctl-a")
    figures.apply(heartbeat("w1", worked(10, seconds=0.004)))
    text = prometheus_text(snapshot_of(figures))[0].decode()
    for name in (
        "shoal_invocations_total",
        "shoal_invocation_duration_seconds_bucket",
        "shoal_workers",
        "shoal_in_flight",
        "shoal_cold_starts_total",
        "shoal_cold_start_seconds_bucket",
        "shoal_dead_letters_total",
        "shoal_redeliveries_total",
    ):
        assert f"\n{name}{{" in text, name
    le = {"function": "echo", "controller": "ctl-a"}
    assert sample_value(text, "shoal_invocation_duration_seconds_bucket", le="0.0025", **le) == 0
    assert sample_value(text, "shoal_invocation_duration_seconds_bucket", le="0.005", **le) == 10
    assert sample_value(text, "shoal_invocation_duration_seconds_count", **le) == 10
    assert sample_value(text, "shoal_cold_starts_total", **le) == 1


def test_histogram_quantiles_interpolate_like_prometheus() -> None:
    h = Histogram(DURATION_BOUNDS)
    assert h.quantile(0.5) is None
    for _ in range(50):
        h.observe(0.004)  # (0.0025, 0.005]
    for _ in range(50):
        h.observe(0.02)  # (0.01, 0.025]
    assert h.quantile(0.5) == pytest.approx(0.005)
    assert 0.01 < (h.quantile(0.99) or 0) <= 0.025
    wire = msgpack.unpackb(msgpack.packb(h.to_wire()))
    back = Histogram.from_wire(DURATION_BOUNDS, wire)
    assert back is not None and back.counts == h.counts
    assert Histogram.from_wire(DURATION_BOUNDS, [[1, 2], 0.1]) is None  # another shape


def test_recent_errors_carry_request_ids_once() -> None:
    figures = ClusterFigures("ctl-a")
    w = worked(0, errors=2)
    figures.apply(heartbeat("w1", w))
    figures.apply(heartbeat("w1", w))  # the same errors in the next heartbeat
    assert [e["request_id"] for e in figures.errors] == ["req-0", "req-1"]
    assert figures.errors[0]["function"] == "echo"
    assert figures.errors[0]["code"] == "function_error"


def test_rates_and_quantiles_over_recent_samples() -> None:
    figures = ClusterFigures("ctl-a")
    w = worked(0)
    for _ in range(3):
        for _ in range(20):
            w.invoked(0.004)
        figures.apply(heartbeat("w1", w))
        figures.sample()
    series = figures.series("echo")
    assert len(series) == 2
    assert series[-1]["rate"] > 0
    assert 0.0025 < series[-1]["p50"] <= 0.005


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("127.0.0.1:9464", ("127.0.0.1", 9464)), ("[::1]:80", ("::1", 80)), (":9", ("0.0.0.0", 9))],
)
def test_metrics_addresses(raw: str, expected: tuple[str, int]) -> None:
    assert config.METRICS_ADDR.get({"SHOAL_METRICS_ADDR": raw}) == raw
    assert parse_addr(raw) == expected


def test_a_bad_metrics_address_names_the_variable() -> None:
    with pytest.raises(config.ConfigError, match="SHOAL_METRICS_ADDR='9464' is not host:port"):
        config.METRICS_ADDR.get({"SHOAL_METRICS_ADDR": "9464"})
    assert config.METRICS_ADDR.get({}) == "127.0.0.1:9464"
    assert config.METRICS_ADDR.get({"SHOAL_METRICS_ADDR": "off"}) == "off"


@pytest.mark.anyio
async def test_an_address_in_use_is_one_warning_and_the_controller_runs_on(
    nc: NATS, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="shoal.metrics"):
            async with observed_cluster(nc, tmp_path, addr=f"127.0.0.1:{port}") as cluster:
                assert cluster.controller.metrics is not None
                assert cluster.controller.metrics.url is None
                await cluster.controller.reconcile()  # it runs on
    warnings: list[Any] = [r for r in caplog.records if r.name == "shoal.metrics"]
    assert len(warnings) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in warnings[0].getMessage()
