"""Delivery guarantees: retries with backoff, dead letters, idempotency, ack extension, cancel,
and a handler's own choice (Retry, Reject)."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

import anyio
import pytest

from controller import EmbeddedNats, ProcessLauncher, deploy_file
from controller.launcher import LaunchRequest
from runtime import Client, Reject, Retry
from runtime.wire import deadletter, protocol
from tests.conftest import FAST, FNS, Cluster, wait_workers

if TYPE_CHECKING:
    from pathlib import Path

    from nats.aio.client import Client as NATS
    from nats.aio.subscription import Subscription

pytestmark = pytest.mark.anyio

DELIVERY = FNS / "delivery.py"


async def publish(cluster: Cluster, fn: str, event: object, rid: str, reply: str) -> None:
    await cluster.nc.jetstream().publish(
        f"fn.{fn}",
        json.dumps(event).encode(),
        headers={"Shoal-Reply-To": reply, "Nats-Msg-Id": rid},
    )


async def watch_settlements(nc: NATS, function: str) -> Subscription:
    """What workers tell JetStream about each delivery of a function's events, on subjects
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...``."""
    return await nc.subscribe(f"$JS.ACK.{protocol.stream_name(function)}.{protocol.CONSUMER}.>")


async def next_settlement(settlements: Subscription) -> tuple[int, bytes]:
    """(delivery count, what the worker said) for the next ack or nak; progress skipped."""
    while True:
        msg = await settlements.next_msg(timeout=30)
        if msg.data != b"+WPI":
            return int(msg.subject.split(".")[4]), msg.data


async def test_retries_with_backoff_then_success(cluster: Cluster) -> None:
    await cluster.deploy(DELIVERY)
    sub = await cluster.nc.subscribe("flaky.answers")
    await publish(cluster, "flaky", {}, "flaky-1", "flaky.answers")
    reply = await sub.next_msg(timeout=30)
    assert json.loads(reply.data) == {"attempt": 3}
    assert await deadletter.list_dead(cluster.nc.jetstream(), "flaky") == []


async def test_failures_past_retries_are_dead_lettered_and_can_be_redriven(
    cluster: Cluster,
) -> None:
    await cluster.deploy(DELIVERY)
    nc = cluster.nc
    sub = await nc.subscribe("doomed.answers")
    await publish(cluster, "doomed", {"order": 9}, "doomed-1", "doomed.answers")
    reply = await sub.next_msg(timeout=30)
    err = json.loads(reply.data)["error"]
    assert err["code"] == "function_error" and "doomed to fail" in err["message"]
    (letter,) = await deadletter.list_dead(nc.jetstream(), "doomed")
    assert letter.request_id == "doomed-1" and letter.deliveries == 2
    assert letter.subject == "fn.doomed" and json.loads(letter.data) == {"order": 9}
    assert "doomed to fail" in letter.reason

    # The CLI lists it; a re-drive publishes it again (the same request id) and drops it.
    env = {**os.environ, "SHOAL_NATS_URL": cluster.url}
    listed = await anyio.run_process(
        [sys.executable, "-m", "controller.cli", "dlq", "list"], env=env
    )
    assert b"doomed-1" in listed.stdout
    await anyio.run_process(
        [sys.executable, "-m", "controller.cli", "dlq", "redrive", "--function", "doomed"],
        env=env,
    )
    again = await sub.next_msg(timeout=30)
    assert json.loads(again.data) == {"redriven": "1"}
    assert again.headers["Shoal-Request-Id"] == "doomed-1"
    assert await deadletter.list_dead(nc.jetstream(), "doomed") == []
    stored = await Client(nc).result("doomed-1")
    assert stored is not None and stored.ok


async def test_event_whose_workers_keep_dying_is_dead_lettered_not_stranded(
    cluster: Cluster,
) -> None:
    await cluster.deploy(DELIVERY)
    nc = cluster.nc
    sub = await nc.subscribe("crash.answers")
    await publish(cluster, "crasher", {}, "crash-1", "crash.answers")
    reply = await sub.next_msg(timeout=60)
    assert json.loads(reply.data)["error"]["code"] == "delivery_exhausted"
    (letter,) = await deadletter.list_dead(nc.jetstream(), "crasher")
    assert letter.request_id == "crash-1" and letter.deliveries == 2
    info = await nc.jetstream().stream_info(protocol.stream_name("crasher"))
    assert info.state.messages == 0  # removed from the work queue, kept in the dead letters
    stored = await Client(nc).result("crash-1")
    assert stored is not None and not stored.ok


async def test_duplicate_publish_runs_once(cluster: Cluster) -> None:
    await cluster.deploy(DELIVERY)
    js = cluster.nc.jetstream()
    sub = await cluster.nc.subscribe("dup.answers")
    first = await js.publish(
        "fn.long",
        b'{"seconds": 0}',
        headers={"Nats-Msg-Id": "dup-1", "Shoal-Reply-To": "dup.answers"},
    )
    second = await js.publish(
        "fn.long",
        b'{"seconds": 0}',
        headers={"Nats-Msg-Id": "dup-1", "Shoal-Reply-To": "dup.answers"},
    )
    assert not first.duplicate and second.duplicate and second.seq == first.seq
    reply = await sub.next_msg(timeout=30)
    assert reply.headers["Shoal-Request-Id"] == "dup-1"
    info = await js.stream_info(protocol.stream_name("long"))
    assert info.state.last_seq == first.seq  # stored once
    result = await Client(cluster.nc).wait_result("dup-1", timeout=10)
    assert result.ok


async def test_long_invocation_extends_its_ack_window(cluster: Cluster) -> None:
    # ack_wait is 1 s and the handler runs 3 s: in_progress keeps the event from redelivery.
    await cluster.deploy(DELIVERY)
    sub = await cluster.nc.subscribe("long.answers")
    await publish(cluster, "long", {"seconds": 3}, "long-1", "long.answers")
    reply = await sub.next_msg(timeout=30)
    assert json.loads(reply.data) == {"attempt": 1}
    ci = await cluster.nc.jetstream().consumer_info(protocol.stream_name("long"), "workers")
    assert ci.num_redelivered == 0


async def test_cancel_queued_and_running_invocations(cluster: Cluster) -> None:
    await cluster.deploy(DELIVERY)
    nc = cluster.nc
    client = Client(nc)
    sub = await nc.subscribe("cancel.answers")
    # Queued: cancelled before it runs.
    await client.cancel("cancel-queued")
    await publish(cluster, "long", {"seconds": 30}, "cancel-queued", "cancel.answers")
    reply = await sub.next_msg(timeout=30)
    assert json.loads(reply.data)["error"]["code"] == "cancelled"
    # Running: interrupted.
    await publish(cluster, "long", {"seconds": 30}, "cancel-running", "cancel.answers")
    await wait_workers(nc, "long", lambda e: any(w["inflight"] for w in e.values()))
    await client.cancel("cancel-running")
    reply = await sub.next_msg(timeout=20)
    assert reply.headers["Shoal-Request-Id"] == "cancel-running"
    assert json.loads(reply.data)["error"]["code"] == "cancelled"
    assert await deadletter.list_dead(nc.jetstream(), "long") == []  # deliberate: no dead letter


async def test_handler_raising_retry_is_run_again_after_its_delay(cluster: Cluster) -> None:
    await cluster.deploy(DELIVERY)
    nc = cluster.nc
    sub = await nc.subscribe("patient.answers")
    settlements = await watch_settlements(nc, "patient")
    await publish(cluster, "patient", {"delay": 0.5}, "patient-1", "patient.answers")
    reply = await sub.next_msg(timeout=60)
    nak = b'-NAK {"delay": 500000000}'  # nanoseconds
    assert [await next_settlement(settlements) for _ in range(3)] == [(1, nak), (2, nak), (3, b"")]
    answer = json.loads(reply.data)
    assert answer["attempt"] == 3  # two Retry raised, no retries= set
    # JetStream held each redelivery for the delay (not ack_wait, 30 s, as for a lost event).
    assert len(answer["gaps"]) == 2 and all(0.5 <= gap < 15 for gap in answer["gaps"])
    assert await deadletter.list_dead(nc.jetstream(), "patient") == []
    stored = await Client(nc).result("patient-1")
    assert stored is not None and stored.ok


async def test_retry_past_max_deliver_is_dead_lettered(cluster: Cluster) -> None:
    await cluster.deploy(DELIVERY)
    nc = cluster.nc
    sub = await nc.subscribe("stubborn.answers")
    await publish(cluster, "stubborn", {}, "stubborn-1", "stubborn.answers")
    reply = await sub.next_msg(timeout=60)
    assert json.loads(reply.data)["error"]["code"] == "retry"
    (letter,) = await deadletter.list_dead(nc.jetstream(), "stubborn")
    assert letter.request_id == "stubborn-1" and letter.deliveries == 2  # max_deliver
    assert letter.code == "retry" and "run again in 0.1s" in letter.reason


async def test_handler_raising_reject_is_dead_lettered_after_one_delivery(
    cluster: Cluster,
) -> None:
    await cluster.deploy(DELIVERY)
    nc = cluster.nc
    sub = await nc.subscribe("picky.answers")
    settlements = await watch_settlements(nc, "picky")
    await publish(cluster, "picky", {"order": 17}, "picky-1", "picky.answers")
    reply = await sub.next_msg(timeout=60)
    assert await next_settlement(settlements) == (1, b"")  # acknowledged on its first delivery
    assert reply.headers["Shoal-Status"] == "error"
    err = json.loads(reply.data)["error"]
    assert err == {
        "type": "Reject",
        "code": "rejected",
        "message": "order 17 does not exist",
        "request_id": "picky-1",
    }
    (letter,) = await deadletter.list_dead(nc.jetstream(), "picky")
    assert letter.request_id == "picky-1" and letter.deliveries == 1  # retries=3 skipped
    assert letter.code == "rejected" and letter.reason == "order 17 does not exist"
    ci = await nc.jetstream().consumer_info(protocol.stream_name("picky"), "workers")
    assert ci.num_redelivered == 0 and ci.num_ack_pending == 0 and ci.num_pending == 0
    stored = await Client(nc).result("picky-1")
    assert stored is not None and isinstance(stored.error, Reject)


async def test_retry_and_reject_on_a_call_answer_their_typed_errors(
    nats_server: EmbeddedNats, nc: NATS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No controller, so no cold path: every call reaches a worker, and is never redelivered.
    # (A cold call is queued as a durable event and follows the durable rules.)
    monkeypatch.setenv("SHOAL_NATS_URL", nats_server.url)
    specs = {s.name: s for s in await deploy_file(nc, DELIVERY, wait=0)}
    client = Client(nc)
    async with ProcessLauncher(code_dir=tmp_path / "code", stop_grace=15) as launcher:
        for name in ("picky", "patient"):
            await launcher.start(LaunchRequest(name, f"w-{name}", specs[name].version, FAST))
            await wait_workers(nc, name, lambda e: any(w["state"] == "ready" for w in e.values()))
        with pytest.raises(Reject, match="order 3 does not exist"):
            await client.call("picky", {"order": 3}, timeout=30)
        with pytest.raises(Retry, match=r"not yet \(1\)"):
            await client.call("patient", {"delay": 5}, timeout=30)
    assert await deadletter.list_dead(nc.jetstream()) == []  # calls are not dead-lettered
