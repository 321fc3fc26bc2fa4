"""The messages between a coordinator and the workers of its run (runtime.partition.messages):
round trips, the bytes on the wire, malformed messages, and a worker answering them."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio
import msgpack
import pytest

from runtime.partition.dataplane import DataPlane
from runtime.partition.messages import (
    MalformedMessage,
    Ping,
    Reply,
    RunPartition,
    read_task,
    task_subject,
)
from runtime.partition.peers import Peers
from runtime.partition.server import PartitionServer
from runtime.wire.spec import FunctionSpec

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

TASK = RunPartition(
    run="r1",
    index=1,
    count=2,
    roster=("w-a", "w-b"),
    coordinator="w-a",
    request={"n": 3, "blob": b"\x00\x01", "xs": [1.5, None]},
    request_id="req-1",
    channel="inline",
    deadline=12.5,
)


def test_a_task_round_trips() -> None:
    assert RunPartition.from_bytes(TASK.to_bytes()) == TASK
    assert read_task(TASK.to_bytes()) == TASK
    assert read_task(Ping().to_bytes()) == Ping()
    assert Ping.from_bytes(Ping().to_bytes()) == Ping()


def test_the_bytes_are_those_of_the_map_workers_already_read() -> None:
    """A worker of the previous release reads these, and these readers read its maps."""
    legacy = {
        "op": "run",
        "run": "r1",
        "index": 1,
        "count": 2,
        "roster": ["w-a", "w-b"],
        "coordinator": "w-a",
        "request": {"n": 3, "blob": b"\x00\x01", "xs": [1.5, None]},
        "request_id": "req-1",
        "channel": "inline",
        "deadline": 12.5,
    }
    assert TASK.to_bytes() == msgpack.packb(legacy, use_bin_type=True)
    assert Ping().to_bytes() == msgpack.packb({"op": "ping"})
    assert Reply().to_bytes() == msgpack.packb({"ok": True})
    assert Reply(error="draining").to_bytes() == msgpack.packb({"error": "draining"})
    assert read_task(msgpack.packb({**legacy, "deadline": 7})) == RunPartition(
        **{**TASK.__dict__, "deadline": 7.0}
    )


def test_replies_round_trip() -> None:
    assert Reply.from_bytes(Reply().to_bytes()).ok
    refused = Reply.from_bytes(Reply(error="draining").to_bytes())
    assert not refused.ok and refused.error == "draining"


def _task(**changes: Any) -> bytes:
    fields = {**msgpack.unpackb(TASK.to_bytes()), **changes}
    return msgpack.packb({k: v for k, v in fields.items() if v is not ...})


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"\xc1", "not msgpack"),
        (msgpack.packb([1, 2]), "not a map"),
        (msgpack.packb({"op": "explode"}), "unknown op 'explode'"),
        (msgpack.packb({"run": "r1"}), "unknown op None"),
        (_task(index=...), "index"),
        (_task(index="1"), "index"),
        (_task(count=True), "count"),
        (_task(index=2), "partition 2 of 2"),
        (_task(roster=["w-a"]), "1 workers for 2 partitions"),
        (_task(roster=["w-a", 7]), "roster"),
        (_task(deadline="soon"), "deadline"),
        (_task(request_id=None), "request_id"),
    ],
)
def test_a_malformed_task_is_a_typed_error(data: bytes, says: str) -> None:
    with pytest.raises(MalformedMessage, match=says.replace("(", r"\(")):
        read_task(data)


def test_a_message_of_the_other_kind_is_malformed() -> None:
    with pytest.raises(MalformedMessage, match="expected a 'run' task"):
        RunPartition.from_bytes(Ping().to_bytes())
    with pytest.raises(MalformedMessage, match="expected a 'ping' task"):
        Ping.from_bytes(TASK.to_bytes())
    with pytest.raises(MalformedMessage):
        Reply.from_bytes(msgpack.packb({"fine": True}))


@pytest.mark.anyio
async def test_a_worker_answers_pings_and_refuses_malformed_tasks(nc: NATS) -> None:
    spec = FunctionSpec(name="px", partitions=2)
    plane = DataPlane(nc, spec.name, "w-a")
    server = PartitionServer(nc, spec, "w-a", object(), plane, Peers(nc, spec))
    subject = task_subject(spec.name, "w-a")
    async with anyio.create_task_group() as tg:
        await tg.start(server.run)
        with anyio.fail_after(10):
            assert Reply.from_bytes((await nc.request(subject, Ping().to_bytes())).data).ok
            answer = Reply.from_bytes((await nc.request(subject, b"\x93\x01\x02\x03")).data)
            assert answer.error == "malformed task: not a map but list"
            server.draining = True
            answer = Reply.from_bytes((await nc.request(subject, TASK.to_bytes())).data)
            assert answer.error == "draining" and server.inflight == 0
        tg.cancel_scope.cancel()


def test_a_task_carries_what_a_msgpack_event_decodes_to() -> None:
    """A msgpack event may hold numpy arrays (the codec's extension type): the task that hands
    it to the partitions carries them, as the codec encodes them."""
    np = pytest.importorskip("numpy")
    request = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "name": "a"}
    got = RunPartition.from_bytes(replace(TASK, request=request).to_bytes())
    assert got.request["name"] == "a"
    assert got.request["x"].dtype == np.float32
    assert (got.request["x"] == request["x"]).all()
