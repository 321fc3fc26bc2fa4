"""The user-facing contract, exercised with raw nats-py (not Shoal's client), on the examples
echo and textstats; beside their served tests, the same examples in process (TestApp)."""

from __future__ import annotations

import json
import os
import sys

import anyio
import msgpack
import pytest

from functions import echo, textstats
from runtime import Client, InvalidPayload
from runtime.testing import TestApp
from runtime.wire import protocol
from runtime.wire.connection import kv
from tests.conftest import FNS, FUNCTIONS, Cluster

pytestmark = pytest.mark.anyio


async def test_request_reply_with_raw_nats(cluster: Cluster) -> None:
    await cluster.deploy(FUNCTIONS / "echo.py")
    msg = await cluster.nc.request(
        "fn.echo.call", b'{"text":"hi"}', timeout=30, headers={"Content-Type": "application/json"}
    )
    assert json.loads(msg.data) == {"text": "hi"}
    assert msg.headers is not None
    assert msg.headers[protocol.STATUS] == "ok"
    assert msg.headers[protocol.REQUEST_ID]


async def test_json_text_with_no_header(cluster: Cluster) -> None:
    await cluster.deploy(FUNCTIONS / "echo.py")
    msg = await cluster.nc.request(
        "fn.echo.call", b'{"typed": ["in", "a", "terminal"]}', timeout=30
    )
    assert json.loads(msg.data) == {"typed": ["in", "a", "terminal"]}
    assert msg.headers and msg.headers["Content-Type"] == "application/json"


async def test_msgpack_answered_in_msgpack(cluster: Cluster) -> None:
    await cluster.deploy(FUNCTIONS / "echo.py")
    payload = {"bytes": b"\x00\x01", "n": 7}
    msg = await cluster.nc.request(
        "fn.echo.call",
        msgpack.packb(payload),
        timeout=30,
        headers={"Content-Type": "application/msgpack"},
    )
    assert msg.headers and msg.headers["Content-Type"] == "application/msgpack"
    assert msgpack.unpackb(msg.data) == payload


async def test_durable_event_answers_on_reply_subject_and_by_id(cluster: Cluster) -> None:
    await cluster.deploy(FUNCTIONS / "echo.py")
    nc = cluster.nc
    sub = await nc.subscribe("answers.mine")
    ack = await nc.jetstream().publish(
        "fn.echo",
        b'{"order": 42}',
        headers={"Shoal-Reply-To": "answers.mine", "Nats-Msg-Id": "order-42"},
    )
    assert ack.stream == protocol.stream_name("echo")
    reply = await sub.next_msg(timeout=30)
    assert json.loads(reply.data) == {"order": 42}
    assert reply.headers and reply.headers[protocol.REQUEST_ID] == "order-42"

    # Third path: look the result up by the id the caller chose, raw KV and Python client.
    # The answer leaves before the result is stored (the event is acknowledged after):
    # wait for it to be stored, then read it every way.
    waited = await Client(nc).wait_result("order-42", timeout=30)
    assert waited.unwrap() == {"order": 42}
    bucket = await kv(nc.jetstream(), protocol.RESULTS_BUCKET)
    stored = msgpack.unpackb((await bucket.get("order-42")).value)
    assert stored["ok"] is True and stored["value"] == {"order": 42}
    result = await Client(nc).result("order-42")
    assert result is not None and result.unwrap() == {"order": 42}

    # And from the CLI.
    out = await anyio.run_process(
        [sys.executable, "-m", "controller.cli", "result", "order-42"],
        check=False,
        env={**os.environ, "SHOAL_NATS_URL": cluster.url},
    )
    assert out.returncode == 0, out.stderr.decode()
    assert json.loads(out.stdout)["result"] == {"order": 42}


async def test_request_reply_results_are_stored_too(cluster: Cluster) -> None:
    await cluster.deploy(FUNCTIONS / "echo.py")
    client = Client(cluster.nc)
    assert await client.call("echo", [1, 2], request_id="call-1") == [1, 2]
    result = await client.wait_result("call-1", timeout=10)
    assert result.ok and result.value == [1, 2] and result.function == "echo"


async def test_echo_in_process() -> None:
    async with TestApp(echo.echo) as app:
        assert await app.call({"a": [1, "b"]}) == {"a": [1, "b"]}
        assert await app.call(b"raw", encoding="msgpack") == b"raw"


async def test_extra_subjects_trigger_the_function(cluster: Cluster) -> None:
    await cluster.deploy(FUNCTIONS / "textstats.py")
    sub = await cluster.nc.subscribe("stats.out")
    await cluster.nc.jetstream().publish(
        "docs.uploaded",
        b'{"text": "Shoal serves models. Models answer events!"}',
        headers={"Shoal-Reply-To": "stats.out"},
    )
    reply = await sub.next_msg(timeout=30)
    body = json.loads(reply.data)
    assert body["words"] == 6 and body["sentences"] == 2
    assert body["keywords"][0] == ["models", 2]


async def test_textstats_in_process() -> None:
    async with TestApp(textstats.TextStats) as app:
        got = await app.call({"text": "Shoal serves models. Models batch; shoal scales!"})
        assert (got["words"], got["sentences"]) == (7, 2)
        assert got["keywords"][:2] == [["models", 2], ["shoal", 2]]
        with pytest.raises(InvalidPayload, match="textstats expects"):
            await app.call({"txt": "typo"})


async def test_bad_payload_gets_structured_error_and_worker_keeps_serving(cluster: Cluster) -> None:
    await cluster.deploy(FUNCTIONS / "echo.py")
    nc = cluster.nc
    bad = await nc.request(
        "fn.echo.call",
        b"\xc1\xff not json",
        timeout=30,
        headers={"Nats-Msg-Id": "bad-1"},
    )
    assert bad.headers and bad.headers[protocol.STATUS] == "error"
    err = json.loads(bad.data)["error"]
    assert err["type"] == "InvalidPayload" and err["request_id"] == "bad-1"
    assert "JSON" in err["message"]

    # Wrong declared type, durable path: an error answer, acknowledged, not redelivered.
    sub = await nc.subscribe("bad.answers")
    acks = await nc.subscribe(f"$JS.ACK.{protocol.stream_name('echo')}.>")
    stored = await nc.jetstream().publish(
        "fn.echo",
        b"{trunc",
        headers={"Shoal-Reply-To": "bad.answers", "Content-Type": "application/json"},
    )
    reply = await sub.next_msg(timeout=30)
    assert json.loads(reply.data)["error"]["code"] == InvalidPayload.code
    # The worker acknowledges it (a bad payload will not get better by redelivery):
    # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...
    with anyio.fail_after(30):
        while True:
            ack = await acks.next_msg(timeout=30)
            tokens = ack.subject.split(".")
            if int(tokens[5]) == stored.seq:
                break
    assert int(tokens[4]) == 1 and ack.data in (b"", b"+ACK")

    good = await nc.request("fn.echo.call", b'"still here"', timeout=30)
    assert json.loads(good.data) == "still here"


async def test_function_errors_and_timeouts_are_typed(cluster: Cluster) -> None:
    await cluster.deploy(FNS / "basics.py")
    client = Client(cluster.nc)
    with pytest.raises(Exception) as boom:
        await client.call("boom", {"x": 1}, timeout=30)
    assert type(boom.value).__name__ == "FunctionError"
    assert "ValueError" in str(boom.value)
    with pytest.raises(Exception) as slow:
        await client.call("slowpoke", {"seconds": 5}, timeout=30)
    assert type(slow.value).__name__ == "FunctionTimeout"


async def test_context_reaches_the_handler(cluster: Cluster) -> None:
    await cluster.deploy(FNS / "basics.py")
    got = await Client(cluster.nc).call("info", {}, request_id="ctx-1", timeout=30)
    assert got["request_id"] == "ctx-1" and got["attempt"] == 1
    # A cold call is queued durably on fn.info while a worker starts; a warm one is direct.
    assert got["subject"] == ("fn.info" if got["durable"] else "fn.info.call")


async def test_event_published_before_any_controller_is_processed(
    nats_server, nc, tmp_path, monkeypatch
) -> None:
    from controller import Controller, ProcessLauncher, deploy_file
    from tests.conftest import controller_settings

    monkeypatch.setenv("SHOAL_NATS_URL", nats_server.url)
    await deploy_file(nc, FUNCTIONS / "echo.py")
    sub = await nc.subscribe("early.answers")
    for i in range(3):
        await nc.jetstream().publish(
            "fn.echo", json.dumps({"i": i}).encode(), headers={"Shoal-Reply-To": "early.answers"}
        )
    async with ProcessLauncher(code_dir=tmp_path / "code") as launcher:
        async with anyio.create_task_group() as tg:
            await tg.start(Controller(nc, launcher, controller_settings()).run)
            got = sorted([json.loads((await sub.next_msg(timeout=30)).data)["i"] for _ in range(3)])
            tg.cancel_scope.cancel()
    assert got == [0, 1, 2]


async def test_unknown_function_and_no_controller_are_told_apart(nc) -> None:
    from controller import deploy_file
    from runtime import FunctionNotFound, WorkerUnavailable

    client = Client(nc)
    with pytest.raises(FunctionNotFound, match="shoal deploy"):
        await client.call("nope", {}, timeout=5)
    await deploy_file(nc, FUNCTIONS / "echo.py", wait=0)
    with pytest.raises(WorkerUnavailable, match="run a controller"):
        await client.call("echo", {}, timeout=5)


def test_every_error_type_is_public() -> None:
    """runtime is the one public SDK: every error a user can meet is importable from it."""
    import inspect

    import runtime
    from runtime import errors
    from runtime.config.var import ConfigError

    defined = {
        name
        for name, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, errors.ShoalError) and obj.__module__ == errors.__name__
    } | {ConfigError.__name__}
    assert defined <= set(runtime.__all__), defined - set(runtime.__all__)
    assert all(getattr(runtime, name) is not None for name in runtime.__all__)
