"""A real controller with process workers, scraped by a real Prometheus server: the values read
back through Prometheus's query API match a known workload; counters survive scaling to
zero; every PromQL expression of deploy/grafana/shoal.json returns data."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

from controller import deploy_file
from runtime import Client
from tests.conftest import FNS, wait_workers
from tests.observability import Prometheus, observed_cluster, poll, prometheus_binary, sample_value

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from tests.observability import Observed

pytestmark = pytest.mark.anyio

DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana" / "shoal.json"
ECHOES = 20
FLAKY = 2  # events; each fails twice (one retry), then is dead-lettered
TALLIED = 24
FIGURES_WITHIN = 5.0  # seconds: the contract for a worker's figures to reach /metrics


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the dashboard, its variables filled in."""
    board = json.loads(DASHBOARD.read_text())
    out = []
    for panel in board["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$function", ".*")
            out.append((panel["title"], expr))
    return out


async def workload(cluster: Observed) -> None:
    client = Client(cluster.nc)
    for i in range(ECHOES):
        assert await client.call("echo", {"i": i}, timeout=60) == {"i": i}
    answers = await cluster.nc.subscribe("flaky.answers")
    for i in range(FLAKY):
        await client.publish("flaky", {"i": i}, reply_to="flaky.answers")
    for _ in range(FLAKY):
        await answers.next_msg(timeout=60)

    async def tally(i: int) -> None:
        assert await client.call("tallied", {"i": i}, timeout=60) >= 1

    async with anyio.create_task_group() as tg:
        for i in range(TALLIED):
            tg.start_soon(tally, i)
    assert await client.call("pairsum", {}, timeout=60) == 2 * 100 + 1 * 100


async def test_prometheus_reads_the_known_workload_and_counters_survive_scale_to_zero(
    nc: NATS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nats_server: object
) -> None:
    binary = prometheus_binary()
    monkeypatch.setenv("SHOAL_NATS_URL", nats_server.url)  # type: ignore[attr-defined]
    async with observed_cluster(nc, tmp_path) as cluster:
        prom = Prometheus(binary, tmp_path / "prometheus", [cluster.target]).start()
        try:
            await prom.ready()
            await deploy_file(nc, FNS / "observed.py")
            # Prometheus scrapes a few seconds after it is ready: the rates of the dashboard
            # need the counters seen at 0 before the workload.
            await poll(
                lambda: prom.query('shoal_invocations_total{function="pairsum"}'),
                30,
                "a first scrape with every function deployed",
            )
            await workload(cluster)
            done = time.monotonic()

            async def echoes_on_metrics() -> bool:
                text = await cluster.scrape()
                ok = sample_value(text, "shoal_invocations_total", function="echo", status="ok")
                return ok == ECHOES

            await poll(echoes_on_metrics, FIGURES_WITHIN, "echo's figures on /metrics")
            assert time.monotonic() - done < FIGURES_WITHIN
            await check_through_prometheus(prom)
            await check_dashboard(prom)

            # Scale echo to zero (idle_timeout=1s): its worker drains and exits.
            await wait_workers(nc, "echo", lambda e: e == {}, timeout=30)
            gone = time.time()
            text = await cluster.scrape()
            assert (
                sample_value(text, "shoal_invocations_total", function="echo", status="ok")
                == ECHOES
            )
            assert sample_value(text, "shoal_workers", function="echo", state="ready") == 0
            echo_ok = 'shoal_invocations_total{function="echo",status="ok"}'
            after = await poll(
                lambda: prom.fresh(echo_ok, gone), 20, "a scrape after echo scaled to zero"
            )
            assert after == ECHOES
        finally:
            prom.stop()


async def check_through_prometheus(prom: Prometheus) -> None:
    async def value(expr: str) -> float | None:
        return await prom.value(expr)

    async def settled(expr: str, expected: float) -> bool:
        return await value(expr) == expected

    exact = {
        'sum(shoal_invocations_total{function="echo",status="ok"})': ECHOES,
        'sum(shoal_invocations_total{function="echo",status="error"})': 0,
        'sum(shoal_invocation_duration_seconds_count{function="echo"})': ECHOES,
        'sum(shoal_invocations_total{function="flaky",status="error"})': 2 * FLAKY,
        'sum(shoal_redeliveries_total{function="flaky"})': FLAKY,
        'sum(shoal_dead_letters_total{function="flaky"})': FLAKY,
        'sum(shoal_invocations_total{function="tallied",status="ok"})': TALLIED,
        'sum(shoal_invocations_total{function="tally",status="ok"})': TALLIED,
        'sum(shoal_executor_batch_size_sum{executor="tally"})': TALLIED,
        'sum(shoal_invocations_total{function="pairsum",status="ok"})': 1,
    }
    for expr, expected in exact.items():
        await poll(lambda e=expr, x=expected: settled(e, x), 20, f"{expr} == {expected}")
    positive = [
        'sum(shoal_cold_starts_total{function="echo"})',
        'sum(shoal_cold_start_seconds_count{function="pairsum"})',
        'sum(shoal_dataplane_bytes_total{function="pairsum",channel="inline"})',
        'sum(shoal_workers{function="tally",state="ready"})',
    ]
    for expr in positive:
        await poll(lambda e=expr: _positive(prom, e), 20, f"{expr} > 0")
    for series in ("shoal_backlog", "shoal_in_flight", "shoal_executor_queue"):
        assert await prom.query(series), series
    (labels,) = [r["metric"] for r in await prom.query('shoal_backlog{function="echo"}')]
    assert labels["controller"] == "ctl-test"


async def _positive(prom: Prometheus, expr: str) -> bool:
    v = await prom.value(expr)
    return v is not None and v > 0


async def check_dashboard(prom: Prometheus) -> None:
    """Every expression of the dashboard returns data, a number in at least one series
    (Grafana itself cannot run here)."""
    exprs = dashboard_expressions()
    assert len(exprs) >= 12
    empty = []
    for title, expr in exprs:

        async def numbers(e: str = expr) -> bool:
            return any(r["value"][1] != "NaN" for r in await prom.query(e))

        try:
            await poll(numbers, 20, f"{title}: {expr}", every=1.0)
        except AssertionError:
            empty.append(f"{title}: {expr} -> {await prom.query(expr)}")
    assert not empty, "dashboard expressions without data:\n" + "\n".join(empty)
