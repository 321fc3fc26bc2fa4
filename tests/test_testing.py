"""runtime.testing.TestApp: a function and its executors in one process, no servers, every
message through the wire codec, errors typed as a Client gets them."""

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
    ResultNotSerializable,
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

    @partitioned(max_partitions=2)
    class Model:
        def plan(self, request: Any) -> Any: ...

        async def shard(self, request: Any, shard: Any) -> Any: ...

        def combine(self, request: Any, parts: Any) -> Any: ...

    with pytest.raises(DefinitionError, match="partitioned"):
        TestApp(Model)
    with pytest.raises(RuntimeError, match="async with"):
        await TestApp(context).call({})
