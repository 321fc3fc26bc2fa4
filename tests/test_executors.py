"""Handlers split from executors: batching, fusion, bad items, an executor killed mid-batch,
and many items in one message (runtime.wire.items)."""

from __future__ import annotations

import json
import os
import signal
from typing import TYPE_CHECKING

import anyio
import pytest

from controller import Controller, ProcessLauncher, deploy_file
from runtime import Client, FunctionError, InvalidPayload
from runtime.wire import answer, codec, protocol
from runtime.wire import items as batch_wire
from runtime.wire.spec import FunctionSpec
from runtime.worker.batching import Batcher
from runtime.worker.executor import ExecutorWorker
from runtime.worker.executors import RemoteExecutor
from runtime.worker.serving import WorkerSettings
from tests.conftest import FNS, Cluster, controller_settings, wait_workers

if TYPE_CHECKING:
    from pathlib import Path

    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

    from controller import EmbeddedNats

pytestmark = pytest.mark.anyio

EXECUTORS = FNS / "executors.py"


async def call_many(client: Client, function: str, events: list[dict]) -> list[object]:
    results: list[object] = [None] * len(events)

    async def one(i: int) -> None:
        try:
            results[i] = await client.call(function, events[i], timeout=30)
        except Exception as e:
            results[i] = e

    async with anyio.create_task_group() as tg:
        for i in range(len(events)):
            tg.start_soon(one, i)
    return results


async def test_executor_batches_items_from_concurrent_handlers(cluster: Cluster) -> None:
    await cluster.deploy(EXECUTORS)
    client = Client(cluster.nc)
    results = await call_many(client, "batchinfo", [{"n": i} for i in range(24)])
    assert [r["value"] for r in results] == [2 * i for i in range(24)]  # type: ignore[index]
    assert max(r["batch"] for r in results) > 1  # type: ignore[index]
    # Handler and executor are separate workers, scaled apart.
    executors = await wait_workers(cluster.nc, "doubler", lambda e: len(e) >= 1)
    assert all(w["kind"] == "executor" for w in executors.values())
    handlers = await wait_workers(cluster.nc, "batchinfo", lambda e: len(e) >= 1)
    assert {w["pid"] for w in handlers.values()}.isdisjoint({w["pid"] for w in executors.values()})


async def test_a_cold_executors_held_items_go_to_it_once_ready_not_at_the_next_tick(
    nats_server: EmbeddedNats, nc: NATS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller holds items for an executor with no worker; the executor's entry turning
    ready wakes it, so they are sent on at once: with a 10-minute tick and a minute between
    the controller's heartbeats (its lease renewals wake it too), the call is answered (before,
    it waited for the next reconcile pass)."""
    monkeypatch.setenv("SHOAL_NATS_URL", nats_server.url)
    async with ProcessLauncher(code_dir=tmp_path / "code") as launcher:
        controller = Controller(
            nc, launcher, controller_settings(tick=600.0, heartbeat=60.0, stale_after=180.0)
        )
        async with anyio.create_task_group() as tg:
            await tg.start(controller.run)
            await deploy_file(nc, FNS / "slowload.py")
            assert await Client(nc).call("slowload", {"n": 4}, timeout=60) == 8
            tg.cancel_scope.cancel()


async def test_split_and_fused_give_identical_outputs(cluster: Cluster) -> None:
    client = Client(cluster.nc)
    events = [{"n": i} for i in range(10)]
    await deploy_file(cluster.nc, EXECUTORS, fuse=False)
    split = await call_many(client, "double", events)
    specs = await deploy_file(cluster.nc, EXECUTORS, fuse=True)
    fused_version = next(s.version for s in specs if s.name == "double")
    # The split workers drain; the fused ones start on demand.
    await wait_workers(
        cluster.nc, "double", lambda e: all(w["version"] == fused_version for w in e.values())
    )
    fused = await call_many(client, "double", events)
    assert split == fused == [2 * i for i in range(10)]
    served = await wait_workers(cluster.nc, "double", lambda e: len(e) >= 1)
    assert {w["version"] for w in served.values()} == {fused_version}


async def test_bad_item_gets_typed_error_and_its_batch_neighbours_succeed(
    cluster: Cluster,
) -> None:
    await cluster.deploy(EXECUTORS)
    client = Client(cluster.nc)
    events = [{"n": i, "poison": i == 3} for i in range(12)]
    results = await call_many(client, "batchinfo", events)
    assert isinstance(results[3], FunctionError) and "poisoned item" in str(results[3])
    assert [r["value"] for i, r in enumerate(results) if i != 3] == [  # type: ignore[index]
        2 * i for i in range(12) if i != 3
    ]
    assert await client.call("batchinfo", {"n": 50}, timeout=30) == {"value": 100, "batch": 1}


async def test_executor_killed_mid_batch_every_request_answered(cluster: Cluster) -> None:
    await cluster.deploy(EXECUTORS)
    nc = cluster.nc
    answers = await nc.subscribe("held.answers")
    n = 6
    for i in range(n):
        await nc.jetstream().publish(
            "fn.batchinfo",
            json.dumps({"n": i, "hold": True}).encode(),
            headers={"Shoal-Reply-To": "held.answers", "Nats-Msg-Id": f"held-{i}"},
        )
    busy = await wait_workers(nc, "doubler", lambda e: any(w["inflight"] >= 2 for w in e.values()))
    (victim,) = busy.values()
    os.kill(victim["pid"], signal.SIGKILL)

    got = {}
    for _ in range(n):
        reply = await answers.next_msg(timeout=60)
        got[reply.headers["Shoal-Request-Id"]] = json.loads(reply.data)
    assert {k: v["value"] for k, v in got.items()} == {f"held-{i}": 2 * i for i in range(n)}
    replacement = await wait_workers(nc, "doubler", lambda e: len(e) >= 1)
    assert victim["id"] not in {w["id"] for w in replacement.values()}


async def test_map_fans_out_through_the_pool_in_order_and_fails_with_a_typed_error(
    cluster: Cluster,
) -> None:
    await cluster.deploy(EXECUTORS)
    client = Client(cluster.nc)
    assert await client.call("doublemany", {"ns": list(range(12))}, timeout=30) == [
        2 * n for n in range(12)
    ]
    with pytest.raises(FunctionError, match="poisoned item"):  # the item's error, no group
        await client.call("doublemany", {"ns": [1, -1, 2]}, timeout=30)


async def send_items(nc: NATS, items: list[object], **headers: str) -> Msg:
    """One batch request to the doubler pool, as RemoteExecutor.map sends it."""
    body = batch_wire.request_body([codec.encode(i, "msgpack") for i in items])
    hdrs = batch_wire.request_headers(headers)
    return await nc.request(protocol.executor_subject("doubler"), body, timeout=60, headers=hdrs)


async def test_items_in_one_message_answered_in_order_within_max_batch(cluster: Cluster) -> None:
    await cluster.deploy(EXECUTORS)
    nc = cluster.nc
    items = [{"n": i, "poison": i == 5} for i in range(20)]
    reply = await send_items(nc, items)
    assert batch_wire.is_batch(reply.headers)
    outcomes = batch_wire.decode_answer(reply.data, reply.headers, len(items))
    assert [o["value"] for i, o in enumerate(outcomes) if i != 5] == [  # type: ignore[index]
        2 * i for i in range(20) if i != 5
    ]
    # The poisoned item fails alone, with its own typed error.
    assert isinstance(outcomes[5], FunctionError) and "poisoned item" in str(outcomes[5])
    sizes = [o["batch"] for i, o in enumerate(outcomes) if i != 5]  # type: ignore[index]
    assert max(sizes) > 1 and max(sizes) <= 8  # batched as items, doubler's max_batch is 8

    # A single-item request, as before batches, is still answered as one.
    single = await nc.request(
        protocol.executor_subject("doubler"),
        codec.encode({"n": 4}, "msgpack"),
        timeout=30,
        headers={protocol.CONTENT_TYPE: protocol.MSGPACK},
    )
    assert not batch_wire.is_batch(single.headers)
    assert answer.decode(single.data, single.headers)["value"] == 8


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (codec.encode({"n": 1}, "msgpack"), {}, "must be a msgpack array"),
        (b"\xc1 not msgpack", {}, "invalid msgpack"),
        (batch_wire.request_body([b"\x01"]), {protocol.ITEMS: "99"}, "batch format"),
    ],
)
async def test_a_malformed_batch_gets_a_typed_error_and_loses_nothing_else(
    cluster: Cluster, body: bytes, headers: dict[str, str], message: str
) -> None:
    await cluster.deploy(EXECUTORS)
    nc = cluster.nc
    subject = protocol.executor_subject("doubler")
    hdrs = {**batch_wire.request_headers({}), **headers}
    bad = nc.request(subject, body, timeout=60, headers=hdrs)
    good = send_items(nc, [{"n": 1}, {"n": 2}])
    bad_reply, good_reply = await bad, await good
    assert batch_wire.is_batch(bad_reply.headers)  # answered by an executor that reads batches
    with pytest.raises(InvalidPayload, match=message):
        answer.decode(bad_reply.data, bad_reply.headers)
    outcomes = batch_wire.decode_answer(good_reply.data, good_reply.headers, 2)
    assert [o["value"] for o in outcomes] == [2, 4]  # type: ignore[index]


async def test_map_sends_max_batch_items_per_message(cluster: Cluster) -> None:
    await cluster.deploy(EXECUTORS)
    nc = cluster.nc
    seen = await nc.subscribe(protocol.executor_subject("doubler"))  # a copy of every message
    client = Client(nc)
    assert await client.call("doublemany", {"ns": list(range(12))}, timeout=60) == [
        2 * n for n in range(12)
    ]
    counts = []
    while len(counts) < 2 or sum(counts) < 12:
        msg = await seen.next_msg(timeout=30)
        if batch_wire.is_batch(msg.headers):
            counts.append(len(batch_wire.decode_request(msg.data, msg.headers)))
    assert sorted(counts) == [4, 8]  # doubler's max_batch is 8: two messages, not twelve
    # Each item's error on its own, the others' results kept.
    got = await client.call("doubleall", {"ns": [1, -1, 2]}, timeout=60)
    assert got[0] == 2 and got[2] == 4 and "poisoned item" in got[1]["error"]


class Tens:
    """A light model: each item times ten, and the size of the batch it ran in."""

    def __call__(self, batch: list[int]) -> list[list[int]]:
        return [[x * 10, len(batch)] for x in batch]


async def test_concurrent_single_calls_from_one_worker_share_a_message(nc: NATS) -> None:
    """Calls made in the same turn of a handler's event loop go in one request (up to
    max_batch); a call alone goes alone, as a single item."""
    spec = FunctionSpec(name="tens", kind="executor", max_batch=16, max_wait_ms=20, timeout=30)
    batcher = Batcher(Tens(), max_batch=16, max_wait=0.02)
    settings = WorkerSettings(function="tens", worker_id="tens-1", nats_url="", heartbeat=60)
    worker = ExecutorWorker(nc, spec, settings, batcher)
    seen = await nc.subscribe(protocol.executor_subject("tens"))  # a copy of every message
    handle = RemoteExecutor(nc, spec)
    results: list[object] = [None] * 20

    async def one(i: int) -> None:
        results[i] = await handle(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.run)
        await tg.start(worker.run)
        async with anyio.create_task_group() as calls:
            for i in range(20):
                calls.start_soon(one, i)
        assert [r[0] for r in results] == [10 * i for i in range(20)]  # type: ignore[index]
        assert await handle(7) == [70, 1]  # alone
        worker.stop()
        tg.cancel_scope.cancel()
    batcher.close()
    sizes = []
    while len(sizes) < 3:
        msg = await seen.next_msg(timeout=10)
        if msg.headers and msg.headers.get(protocol.PREWARM):
            continue
        sizes.append(
            len(batch_wire.decode_request(msg.data, msg.headers))
            if batch_wire.is_batch(msg.headers)
            else 1
        )
    assert sizes == [16, 4, 1]  # two requests for 20 calls (max_batch 16), then the lone one


async def test_an_executor_that_predates_batches_gets_one_item_per_request(nc: NATS) -> None:
    """An older executor reads a batch request as one item (here: a list it cannot double)
    and answers without Shoal-Items; the handle then sends those items, and later ones,
    one per request."""
    bodies: list[object] = []

    async def old_executor(msg: Msg) -> None:
        item, _ = codec.decode(msg.data, (msg.headers or {}).get(protocol.CONTENT_TYPE))
        bodies.append(item)
        if isinstance(item, int):
            reply = answer.ok(item * 2, "msgpack")
        else:
            reply = answer.error(FunctionError(f"cannot double {item!r}"), "msgpack")
        await nc.publish(msg.reply, reply.body, headers=reply.headers)

    await nc.subscribe(protocol.executor_subject("old"), cb=old_executor)
    handle = RemoteExecutor(nc, FunctionSpec(name="old", kind="executor", max_batch=8, timeout=10))
    assert await handle.map([1, 2, 3]) == [2, 4, 6]
    assert bodies[0] == [1, 2, 3] and sorted(bodies[1:]) == [1, 2, 3]  # type: ignore[type-var]
    bodies.clear()
    assert await handle.map([4, 5]) == [8, 10]
    assert sorted(bodies) == [4, 5]  # type: ignore[type-var]  # no batch request any more
