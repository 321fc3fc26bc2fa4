"""Delivery guarantees: retries with backoff, dead letters, idempotency, ack extension, cancel."""

from __future__ import annotations

import json
import os
import sys

import anyio
import pytest

from runtime import Client
from runtime.wire import deadletter, protocol
from tests.conftest import FNS, Cluster, wait_workers

pytestmark = pytest.mark.anyio

DELIVERY = FNS / "delivery.py"


async def publish(cluster: Cluster, fn: str, event: object, rid: str, reply: str) -> None:
    await cluster.nc.jetstream().publish(
        f"fn.{fn}",
        json.dumps(event).encode(),
        headers={"Shoal-Reply-To": reply, "Nats-Msg-Id": rid},
    )


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
