"""Logs: every line names its function, worker and (inside an invocation) request and trace;
``SHOAL_LOG_FORMAT=json`` prints JSON; real workers publish their lines and output to
``SHOAL_LOGS``, and ``shoal logs`` reads them back."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from runtime.wire import logstream, tracing
from runtime.worker.logs import Publisher, Tee
from tests.conftest import FNS, Cluster, shoal, wait_workers

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.anyio

REPO = Path(__file__).parent.parent
CHATTY = FNS / "chatty.py"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("user", logging.INFO, __file__, 1, message, None, None)


def test_a_line_names_function_worker_request_and_trace() -> None:
    tag = logstream.ContextFilter("fn", "w1")
    outside = record("idle")
    tag.filter(outside)
    assert logstream.fields(outside) == {
        "ts": round(outside.created, 6),
        "level": "INFO",
        "logger": "user",
        "message": "idle",
        "function": "fn",
        "worker": "w1",
    }
    parent = tracing.parse(f"00-{TRACE}-00f067aa0ba902b7-01")
    with logstream.invocation("req-1"), tracing.span("x", parent=parent):
        inside = record("busy")
        tag.filter(inside)
    line = json.loads(logstream.JsonFormatter().format(inside))
    assert line["request_id"] == "req-1" and line["trace_id"] == TRACE
    assert line["function"] == "fn" and line["worker"] == "w1" and line["message"] == "busy"
    text = logstream.TextFormatter().format(inside)
    assert f"[fn w1 request=req-1 trace={TRACE}]: busy" in text


def test_a_full_buffer_drops_and_counts_instead_of_growing() -> None:
    publisher = Publisher("fn", "w1", max_buffered=10_000)
    for i in range(1000):  # nothing sends: NATS is "away"
        publisher.add({"message": f"line {i}"})
    assert 0 < publisher._bytes <= 10_000
    assert publisher.dropped == 1000 - len(publisher._lines) > 900
    sent: list[dict[str, Any]] = []
    while batch := publisher._take():
        sent += batch
    assert sent[0]["message"] == "line 0"
    assert "log line(s) dropped" in sent[-1]["message"]  # said once there is room again


def test_output_goes_through_and_is_published_line_by_line() -> None:
    publisher = Publisher("fn", "w1")
    original = io.StringIO()
    tee = Tee(original, "stdout", publisher)  # type: ignore[arg-type]
    with logstream.invocation("req-2"):
        tee.write("part")
        tee.write("ial\nsecond\nthird")
    assert original.getvalue() == "partial\nsecond\nthird"
    lines = publisher._take()
    assert [line["message"] for line in lines] == ["partial", "second"]
    assert {line["request_id"] for line in lines} == {"req-2"}
    assert {line["stream"] for line in lines} == {"stdout"}


def test_json_format_prints_one_object_per_line() -> None:
    code = (
        "import logging, sys\n"
        "from runtime.worker import logs\n"
        "logs.setup('fn', 'w9', level='INFO', fmt='json', publish=True)\n"
        "logging.getLogger('user').info('hello %s', 1)\n"
        "print('plain output')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (line,) = [json.loads(text) for text in done.stderr.splitlines()]
    assert line["message"] == "hello 1" and line["function"] == "fn" and line["worker"] == "w9"
    assert done.stdout == "plain output\n"  # output still reaches the process's stream


async def read_lines(
    cluster: Cluster, done: Callable[[list[dict[str, Any]]], bool], *args: str
) -> list[dict[str, Any]]:
    """``shoal logs ... --json``, run until ``done(lines)`` or 20 s."""
    deadline = time.monotonic() + 20
    while True:
        out = await anyio.to_thread.run_sync(
            lambda: shoal("logs", *args, "--json", url=cluster.url)
        )
        assert out.returncode == 0, out.stderr
        lines = [json.loads(text) for text in out.stdout.splitlines()]
        if done(lines) or time.monotonic() > deadline:
            return lines
        await anyio.sleep(0.2)


def has(message: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda lines: any(line.get("message") == message for line in lines)


async def test_workers_publish_their_lines_and_output(cluster: Cluster) -> None:
    await cluster.deploy(CHATTY)
    nc = cluster.nc
    headers = {"Content-Type": "application/json", "traceparent": f"00-{TRACE}-{'1' * 16}-01"}
    for n, rid in ((1, "chatty-a"), (2, "chatty-b")):
        headers["Shoal-Request-Id"] = rid
        event = json.dumps({"n": n}).encode()
        reply = await nc.request("fn.chatty.call", event, 60, headers=headers)
        assert json.loads(reply.data) == n
    workers = await wait_workers(nc, "chatty", lambda e: len(e) >= 1)
    ids = {w["id"] for w in workers.values()}

    lines = await read_lines(cluster, has("to stderr 2"), "chatty", "--request", "chatty-b")
    assert {line["request_id"] for line in lines} == {"chatty-b"}
    by_message = {line["message"]: line for line in lines}
    logged, printed, errored = (
        by_message["handling 2"],
        by_message["printed 2"],
        by_message["to stderr 2"],
    )
    assert logged["logger"] == "user.chatty" and logged["level"] == "INFO"
    assert printed["stream"] == "stdout" and errored["stream"] == "stderr"
    for line in (logged, printed, errored):
        assert line["function"] == "chatty" and line["worker"] in ids
        assert line["trace_id"] == TRACE

    # Everything of the function, the worker's own lines too; --since leaves nothing out here.
    every = await read_lines(cluster, has("printed 1"), "chatty", "--since", "10m")
    assert has("printed 1")(every) and has("printed 2")(every)
    assert any(x["logger"] == "shoal.worker" and "serving chatty" in x["message"] for x in every)
    # Text, as a person reads it.
    text = await anyio.to_thread.run_sync(
        lambda: shoal("logs", "chatty", "--request", "chatty-a", url=cluster.url)
    )
    assert "printed 1" in text.stdout and "chatty-a" in text.stdout

    # A failure's traceback, in the log line that says it failed.
    event = json.dumps({"n": 3, "fail": True}).encode()
    await nc.request("fn.chatty.call", event, 60, headers={"Shoal-Request-Id": "chatty-c"})
    failed = await read_lines(cluster, has("to stderr 3"), "chatty", "--request", "chatty-c")
    assert any("failing on 3" in x["message"] and "in chatty" in x["message"] for x in failed)


async def test_follow_prints_lines_as_they_come(cluster: Cluster) -> None:
    await cluster.deploy(CHATTY)
    nc = cluster.nc
    await nc.request("fn.chatter.call", b'{"n": 0}', 60)  # a worker is up
    proc = await anyio.open_process(
        [sys.executable, "-m", "controller.cli", "logs", "chatter", "--follow", "--json"],
        env={**os.environ, "PYTHONPATH": str(REPO), "SHOAL_NATS_URL": cluster.url},
    )
    try:
        assert proc.stdout is not None
        seen = b""
        with anyio.fail_after(30):
            for n in range(1, 4):
                await nc.request("fn.chatter.call", json.dumps({"n": n}).encode(), 60)
            while b'"async print 3"' not in seen:
                seen += await proc.stdout.receive()
        lines = [json.loads(text) for text in seen.decode().splitlines() if text.strip()]
        messages = [line["message"] for line in lines]
        assert "async print 1" in messages and "async warning 3" in messages
        assert proc.returncode is None  # still following
    finally:
        proc.terminate()
        await proc.wait()


async def test_logs_of_nothing_and_bad_durations(cluster: Cluster) -> None:
    out = await anyio.to_thread.run_sync(lambda: shoal("logs", "nobody", url=cluster.url))
    assert out.returncode == 0 and out.stdout == ""
    bad = await anyio.to_thread.run_sync(
        lambda: shoal("logs", "nobody", "--since", "soon", url=cluster.url)
    )
    assert bad.returncode == 2 and "--since" in bad.stderr
