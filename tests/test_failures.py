"""Failures a user can diagnose: a handler's or an executor's exception reaches the answer and
the stored result with its type, message and the user's frames; ``shoal result`` tells where
a request stands; ``shoal dlq show`` prints a dead letter whole."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

from controller import deploy_file, lookup
from controller.cli import Exit
from runtime import Client, FunctionError, function
from runtime.context import Context
from runtime.define.decorator import definition_of
from runtime.errors import MAX_TRACEBACK, ShoalError
from runtime.wire import deadletter, protocol
from runtime.wire.connection import kv
from runtime.wire.results import ResultStore, make_result
from runtime.worker.invoker import Invoker
from tests.conftest import FNS, Cluster, controller_settings, shoal

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

    from nats.aio.client import Client as NATS

    from controller import EmbeddedNats

pytestmark = pytest.mark.anyio

FAILING = FNS / "failing.py"


async def ashoal(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return await anyio.to_thread.run_sync(lambda: shoal(*args, url=url))


def _inner(event: Any) -> Any:
    return {}[event]  # a KeyError, two frames below the handler


def _outer(event: Any) -> Any:
    return _inner(event)


async def test_a_handlers_exception_keeps_its_type_message_and_user_frames_only() -> None:
    @function(name="unit")
    async def unit(event: Any) -> Any:
        await anyio.lowlevel.checkpoint()
        return _outer(event)

    definition = definition_of(unit)
    assert definition is not None
    invoker = Invoker(definition)
    await invoker.start()
    ctx = Context("r-1", "unit", "fn.unit.call", {}, 1, False)
    with pytest.raises(FunctionError) as caught:
        await invoker.invoke("missing", ctx)
    err = caught.value
    assert err.message == "KeyError: 'missing'" and err.cause_type == "KeyError"
    tb = err.traceback or ""
    assert tb.startswith("Traceback (most recent call last):")
    assert "in unit" in tb and "in _outer" in tb and "in _inner" in tb
    assert tb.rstrip().endswith("KeyError: 'missing'")
    # How the call got there is the same every time: Shoal's and anyio's frames are left out.
    assert "invoker.py" not in tb and "anyio" not in tb, tb

    wire = err.to_wire()
    assert wire["traceback"] == tb and wire["cause"] == "KeyError"
    back = ShoalError.from_wire(wire)
    assert isinstance(back, FunctionError) and back.traceback == tb
    assert any("_inner" in note for note in back.__notes__)  # printed where it is raised again


def test_a_long_traceback_keeps_its_end_within_the_limit() -> None:
    err = FunctionError("boom")
    err.traceback = "x" * (3 * MAX_TRACEBACK) + "\nValueError: the end"
    tb = err.to_wire()["traceback"]
    assert len(tb) < MAX_TRACEBACK + 100 and tb.endswith("ValueError: the end")
    assert "characters left out" in tb.splitlines()[0]
    assert "traceback" not in FunctionError("plain").to_wire()  # none: none on the wire


async def test_handler_traceback_reaches_the_answer_the_result_and_the_cli(
    cluster: Cluster,
) -> None:
    await cluster.deploy(FAILING)
    client = Client(cluster.nc)
    with pytest.raises(FunctionError) as caught:
        await client.call("parse", {"n": "x"}, timeout=30)
    tb = caught.value.traceback or ""
    assert "ValueError: invalid literal for int()" in tb
    assert "in parse" in tb and "in _scale" in tb and "in _parse" in tb
    assert "runtime/worker" not in tb and "anyio" not in tb, tb

    # A durable event: the stored result and the dead letter's copy carry it too.
    rid = await client.publish("parse", {"n": "y"}, request_id="parse-durable")
    stored = await client.wait_result(rid, timeout=30)
    assert not stored.ok and "in _parse" in stored.value["traceback"]
    assert stored.value["cause"] == "ValueError"
    shown = await ashoal("result", rid, url=cluster.url)
    assert shown.returncode == Exit.FUNCTION_ERROR, shown.stderr
    body = json.loads(shown.stdout)
    assert body["state"] == "done" and body["error"]["code"] == "function_error"
    assert "in _parse" in shown.stderr  # the traceback, for a person to read

    # (The first call, made while no worker ran, waited as a durable event: a letter too.)
    letters = await deadletter.list_dead(cluster.nc.jetstream(), "parse")
    (letter,) = [d for d in letters if d.request_id == "parse-durable"]
    whole = await ashoal("dlq", "show", str(letter.seq), url=cluster.url)
    assert whole.returncode == 0, whole.stderr
    out = whole.stdout
    assert f"dead letter {letter.seq} of parse" in out and "parse-durable" in out
    assert '"n": "y"' in out and "Content-Type: application/json" in out
    assert "in _parse" in out and "ValueError" in out
    as_json = json.loads(
        (await ashoal("dlq", "show", str(letter.seq), "--json", url=cluster.url)).stdout
    )
    assert as_json["event"] == {"n": "y"} and as_json["request_id"] == "parse-durable"
    assert "in _parse" in as_json["error"]["traceback"]
    missing = await ashoal("dlq", "show", "9999", url=cluster.url)
    assert missing.returncode == Exit.NOT_FOUND and "9999" in missing.stderr


async def test_executor_traceback_reaches_the_handlers_caller(cluster: Cluster) -> None:
    await cluster.deploy(FAILING)
    client = Client(cluster.nc)
    assert await client.call("divide", {"d": 5}, timeout=60) == 2
    with pytest.raises(FunctionError) as caught:
        await client.call("divide", {"d": 0}, timeout=60)
    err = caught.value
    assert "ZeroDivisionError" in err.message and err.cause_type == "ZeroDivisionError"
    tb = err.traceback or ""
    assert "in __call__" in tb and "in _one" in tb and "10 // item" in tb, tb
    assert "batching.py" not in tb, tb


async def test_tracebacks_off_for_production(
    nats_server: EmbeddedNats, nc: NATS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller import Controller, ProcessLauncher

    monkeypatch.setenv("SHOAL_NATS_URL", nats_server.url)
    env = {"SHOAL_HEARTBEAT": "0.2", "SHOAL_ERROR_TRACEBACKS": "0"}
    async with ProcessLauncher(code_dir=tmp_path / "code", stop_grace=15) as launcher:
        controller = Controller(nc, launcher, controller_settings(worker_env=env))
        async with anyio.create_task_group() as tg:
            await tg.start(controller.run)
            await deploy_file(nc, FAILING)
            client = Client(nc)
            with pytest.raises(FunctionError) as caught:
                await client.call("parse", {"n": "x"}, timeout=30)
            assert caught.value.traceback is None
            assert caught.value.message.startswith("ValueError: invalid literal")
            with pytest.raises(FunctionError) as caught:
                await client.call("divide", {"d": 0}, timeout=60)
            assert caught.value.traceback is None
            tg.cancel_scope.cancel()


async def poll_state(nc: NATS, rid: str, state: str, timeout: float = 20.0) -> lookup.RequestState:
    deadline = time.monotonic() + timeout
    while True:
        found = await lookup.request_state(nc, rid)
        if found.state == state or time.monotonic() > deadline:
            return found
        await anyio.sleep(0.1)


async def test_result_tells_queued_running_and_done_apart(cluster: Cluster) -> None:
    await cluster.deploy(FAILING)
    client = Client(cluster.nc)
    assert (await lookup.request_state(cluster.nc, "never-sent")).state == lookup.UNKNOWN
    rid = await client.publish("snooze", {"seconds": 60}, request_id="snooze-1")
    running = await poll_state(cluster.nc, rid, lookup.RUNNING)
    assert running.state == lookup.RUNNING and running.function == "snooze"
    shown = await ashoal("result", rid, url=cluster.url)
    assert shown.returncode == 0 and json.loads(shown.stdout)["state"] == "running"
    assert "running on" in shown.stderr
    # A call runs too: its worker's heartbeat lists it.
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: client.call("snooze", {"seconds": 3}, request_id="call-1"))
        found = await poll_state(cluster.nc, "call-1", lookup.RUNNING)
        assert found.state == lookup.RUNNING and found.worker, found
    assert (await poll_state(cluster.nc, "call-1", lookup.DONE)).state == lookup.DONE
    await client.cancel(rid)
    assert (await poll_state(cluster.nc, rid, lookup.DONE)).state == lookup.DONE
    unknown = await ashoal("result", "never-sent", url=cluster.url)
    assert unknown.returncode == Exit.NOT_FOUND and "unknown" in unknown.stderr


async def test_result_says_queued_for_an_event_nobody_serves_yet(
    nats_server: EmbeddedNats, nc: NATS
) -> None:
    await deploy_file(nc, FAILING, wait=0)  # no controller: events stay queued
    client = Client(nc)
    rid = await client.publish("parse", {"n": 1}, request_id="waiting-1")
    queued = await lookup.request_state(nc, rid)
    assert queued.state == lookup.QUEUED and queued.function == "parse" and queued.stream_seq
    # An event without an id of its own goes by <function>-<stream sequence>.
    await nc.jetstream().publish("fn.parse", b'{"n": 2}')
    second = await lookup.request_state(nc, "parse-2")
    assert second.state == lookup.QUEUED and second.stream_seq == 2
    shown = await ashoal("result", rid, url=nats_server.url)
    assert shown.returncode == 0 and json.loads(shown.stdout)["state"] == "queued"


async def test_result_says_expired_once_the_result_aged_out(
    nats_server: EmbeddedNats, nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOAL_RESULTS_TTL", "1")  # the bucket is made with it below
    store = ResultStore(nc, await kv(nc.jetstream(), protocol.RESULTS_BUCKET))
    await store.put(make_result("old-1", "parse", True, 1, "json"))
    assert (await lookup.request_state(nc, "old-1")).state == lookup.DONE
    expired = await poll_state(nc, "old-1", lookup.EXPIRED, timeout=15)
    assert expired.state == lookup.EXPIRED, expired
    assert (await lookup.request_state(nc, "other")).state == lookup.UNKNOWN
    shown = await ashoal("result", "old-1", url=nats_server.url)
    assert shown.returncode == Exit.NOT_FOUND and "expired" in shown.stderr
