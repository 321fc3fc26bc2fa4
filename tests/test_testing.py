"""runtime.testing.TestApp: a function and its executors, or a partitioned model's workers, in
one process, no servers, every message through the wire codec, errors typed as a Client gets
them. The examples' in-process tests sit beside their real-server tests (test_radixnet.py,
test_embed.py, ...); the partitioned models of tests/fns in test_partitioned.py."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from runtime import (
    Context,
    DefinitionError,
    Executor,
    FunctionError,
    FunctionTimeout,
    InvalidPayload,
    ModelTooLarge,
    Plan,
    ResultNotSerializable,
    Shard,
    executor,
    function,
    partitioned,
    uses,
)
from runtime.testing import TestApp
from tests.fns import executors as fns

pytestmark = pytest.mark.anyio


async def test_a_handler_and_its_executor_batch_in_process() -> None:
    async with TestApp(fns.batchinfo) as app:
        answers: list[Any] = [None] * 12

        async def one(i: int) -> None:
            answers[i] = await app.call({"n": i})

        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(one, i)
    assert [a["value"] for a in answers] == [2 * i for i in range(12)]
    assert max(a["batch"] for a in answers) > 1  # items from concurrent calls batched together


async def test_map_and_the_older_uses_form() -> None:
    async with TestApp(fns.doublemany) as app:
        assert await app.call({"ns": [3, 1, 2]}) == [6, 2, 4]
        with pytest.raises(FunctionError, match="poisoned item"):
            await app.call({"ns": [1, -1]})
    async with TestApp(fns.double) as app:  # uses=[Doubler], parameter annotated Doubler
        assert await app.call({"n": 21}) == 42


@executor(name="echoer", max_batch=4, max_wait_ms=1)
class Echoer:
    def __call__(self, batch: list[Any]) -> list[Any]:
        return [{"kind": type(item).__name__, "item": item} for item in batch]


@function
async def passes(event: Any, echoer: Executor[Any, Any] = uses(Echoer)) -> Any:
    if event == "set":
        return await echoer({1, 2})  # a set cannot cross the wire
    if event == "tuple":
        return await echoer((1, 2))  # crosses as a list
    return await echoer(event)


@function
def unencodable(event: Any) -> Any:
    return object()


@function(timeout=0.2)
async def slow(event: Any) -> None:
    await anyio.sleep_forever()


@function
def context(event: Any, ctx: Context) -> dict[str, Any]:
    return {"attempt": ctx.attempt, "id": ctx.request_id, "subject": ctx.subject}


@function
def refuses(event: Any) -> None:
    raise InvalidPayload("no thanks")


async def test_values_cross_the_wire_codec_as_deployed() -> None:
    async with TestApp(passes) as app:
        assert await app.call("tuple") == {"kind": "list", "item": [1, 2]}
        with pytest.raises(ResultNotSerializable):
            await app.call("set")
        b = await app.call(b"\x00\x01", encoding="msgpack")
        assert b == {"kind": "bytes", "item": b"\x00\x01"}
    async with TestApp(unencodable) as app:
        with pytest.raises(ResultNotSerializable, match="cannot be encoded as json"):
            await app.call({})
    async with TestApp(context) as app:
        with pytest.raises(ResultNotSerializable):  # the event itself, as Client.call does
            await app.call(object())


async def test_errors_are_the_typed_errors_a_client_gets() -> None:
    async with TestApp(slow) as app:
        with pytest.raises(FunctionTimeout, match=r"timeout of 0\.2s") as e:
            await app.call({}, request_id="r-1")
        assert e.value.request_id == "r-1"
    async with TestApp(refuses) as app:
        with pytest.raises(InvalidPayload, match="no thanks"):
            await app.call({})


async def test_ctx_reports_the_call() -> None:
    async with TestApp(context) as app:
        got = await app.call({}, request_id="abc", attempt=2)
    assert got == {"attempt": 2, "id": "abc", "subject": "fn.context.call"}


async def test_what_it_does_not_run_is_refused_clearly() -> None:
    with pytest.raises(DefinitionError, match="decorated with @function"):
        TestApp(lambda e: e)
    with pytest.raises(DefinitionError, match="is an executor"):
        TestApp(Echoer)
    with pytest.raises(RuntimeError, match="async with"):
        await TestApp(context).call({})


# -- partitioned models -------------------------------------------------------------------------


@partitioned(name="rows", max_partitions=3, timeout=10.0)
class Rows:
    """Every partition tells the others its index; partition 1 misbehaves as asked."""

    setups = 0

    def setup(self) -> None:
        Rows.setups += 1
        self.ready = True

    def plan(self, request: dict[str, Any]) -> Plan:
        if request.get("fail") == "plan":
            raise InvalidPayload("no plan for that")
        return Plan(partitions=request.get("partitions", 3), model_bytes=request.get("bytes", 0))

    async def shard(self, request: dict[str, Any], shard: Shard) -> Any:
        assert self.ready  # set up before any request
        if shard.index == 1:
            await self.misbehave(request.get("fail"), shard)
        others = {q: shard.index for q in range(shard.count) if q != shard.index}
        got = await shard.exchange(0, others)
        if request.get("fail") == "part" and shard.index == 1:
            return {"a set"}  # the part itself cannot cross the wire
        return {"heard": sorted(got.values()), "worker": id(self), "index": shard.index}

    async def misbehave(self, how: str | None, shard: Shard) -> None:
        if how == "raise":
            raise ValueError("row 1 is broken")
        if how == "refuse":
            raise InvalidPayload("row 1 refuses")
        if how == "set":
            await shard.send(0, 0, {1, 2})  # a set cannot cross the wire
        if how == "hang":
            await anyio.sleep_forever()

    def combine(self, request: Any, parts: list[Any]) -> Any:
        return parts


async def test_a_partitioned_model_runs_its_partitions_on_workers_of_their_own() -> None:
    Rows.setups = 0
    async with TestApp(Rows) as app:
        assert Rows.setups == 3  # one instance per worker, each set up once, before any call
        parts = await app.call({"partitions": 3})
        assert [p["heard"] for p in parts] == [[1, 2], [0, 2], [0, 1]]
        assert [p["index"] for p in parts] == [0, 1, 2]  # combined in partition order
        assert len({p["worker"] for p in parts}) == 3
        assert [p["heard"] for p in await app.call({"partitions": 1})] == [[]]
        assert app.pool is not None and len(app.pool.workers) == 3
    assert Rows.setups == 3


async def test_a_partition_that_raises_is_a_typed_error() -> None:
    async with TestApp(Rows) as app:
        with pytest.raises(FunctionError, match="partition 1 of 3: ValueError: row 1 is broken"):
            await app.call({"fail": "raise"})
        with pytest.raises(InvalidPayload, match="row 1 refuses"):
            await app.call({"fail": "refuse"})
        with pytest.raises(InvalidPayload, match="no plan for that"):
            await app.call({"fail": "plan"})
        with pytest.raises(InvalidPayload, match="1 to 3 partitions"):
            await app.call({"partitions": 4})
        assert len(await app.call({})) == 3  # a failed run leaves the workers serving


async def test_what_cannot_cross_the_data_plane_fails_as_deployed() -> None:
    async with TestApp(Rows) as app:
        with pytest.raises(ResultNotSerializable):
            await app.call({"fail": "set"})  # an intermediate
        with pytest.raises(ResultNotSerializable):
            await app.call({"fail": "part"})  # a partition's part, on its way to combine
        assert len(await app.call({})) == 3


async def test_a_partitioned_run_keeps_to_the_timeout_and_the_memory_budget() -> None:
    @partitioned(name="tight", max_partitions=2, timeout=0.3, worker_memory_mb=1)
    class Tight(Rows):
        pass

    async with TestApp(Tight) as app:
        with pytest.raises(FunctionTimeout, match=r"timeout of 0\.3s"):
            await app.call({"partitions": 2, "fail": "hang"})
        with pytest.raises(ModelTooLarge, match="use partitions=2"):
            await app.call({"partitions": 1, "bytes": 2 << 20})
        assert len(await app.call({"partitions": 2, "bytes": 2 << 20})) == 2
