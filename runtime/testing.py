"""Test functions in one process, with no servers, encoding every message as deployed.

::

    from runtime.testing import TestApp

    async def test_embed() -> None:
        async with TestApp(embed) as app:      # the handler and its executors, set up once
            out = await app.call({"text": "a cat"})

:class:`TestApp` runs a ``@function``'s handler with the executors it uses, each set up
once as a worker would (``setup()``, the device, the batcher). Nothing is short-cut that a
deployment would check: the event, every executor item and every answer are encoded and
decoded with the wire codec, so a value that cannot cross the wire fails here as it would
deployed; errors surface as the typed errors a :class:`~runtime.Client` gets
(``FunctionError``, ``FunctionTimeout``, ``InvalidPayload``, ``ExecutorUnavailable``...).

A partitioned model (``@partitioned``) runs on a pool of ``max_partitions`` workers in this
process, each with its own instance of the class (``setup()`` once) and the partition
modules a deployed worker runs, unchanged (:mod:`runtime.partition.local`): ``plan()`` and
``combine()`` where the request lands, every partition's ``shard()`` concurrently on a worker
of its own, each hand-out, intermediate and part through the data plane's encoding. Only
NATS is replaced, by an in-memory stand-in. A shard that raises is a ``FunctionError`` (a
``ShoalError`` it raises, as is), an intermediate that cannot cross the wire a
``ResultNotSerializable``, a plan over the memory budget ``ModelTooLarge``::

    async with TestApp(AllSum) as app:         # 4 workers, each its own AllSum, set up
        out = await app.call({"partitions": 3, "n": 64})
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio

from runtime.context import Context
from runtime.define.decorator import Definition, definition_of
from runtime.define.handles import Executor
from runtime.errors import DefinitionError, ExecutorUnavailable, ShoalError
from runtime.partition.local import LocalPool
from runtime.wire import answer, codec, protocol
from runtime.worker.executors import start_executor
from runtime.worker.invoker import Invoker

if TYPE_CHECKING:
    from types import TracebackType

    from anyio.abc import TaskGroup

    from runtime.wire.codec import Encoding
    from runtime.wire.spec import FunctionSpec
    from runtime.worker.batching import Batcher

__all__ = ["TestApp"]


class _WireExecutor(Executor[Any, Any]):
    """An executor handle that sends each item and its result through the wire codec, as a
    handler's call to an executor pool does, and times out as one does."""

    def __init__(self, spec: FunctionSpec, batcher: Batcher) -> None:
        self.spec = spec
        self._batcher = batcher

    async def __call__(self, item: Any) -> Any:
        body = codec.encode(item, "msgpack")  # as the handler sends it
        try:
            with anyio.fail_after(self.spec.timeout):
                decoded, _ = codec.decode(body, protocol.MSGPACK)  # as the executor reads it
                reply = answer.ok(await self._batcher.submit(decoded), "msgpack")
        except TimeoutError:
            raise ExecutorUnavailable(
                f"executor {self.spec.name!r} did not answer within {self.spec.timeout:g}s"
            ) from None
        except ShoalError as e:
            reply = answer.error(e, "msgpack")
        return answer.decode(reply.body, reply.headers)  # as the handler reads it


async def _start_executors(
    definition: Definition, tg: TaskGroup, batchers: list[Batcher]
) -> dict[str, Executor[Any, Any]]:
    """Each executor ``definition`` uses, set up once and batching in ``tg``, by parameter."""
    handles: dict[str, Executor[Any, Any]] = {}
    started: dict[str, _WireExecutor] = {}
    for param, ex in definition.executors:
        if ex.spec.name not in started:
            batcher = await start_executor(ex)
            batchers.append(batcher)
            tg.start_soon(batcher.run)
            started[ex.spec.name] = _WireExecutor(ex.spec, batcher)
        handles[param] = started[ex.spec.name]
    return handles


def _close_all(batchers: list[Batcher]) -> None:
    for batcher in batchers:
        batcher.close()


class TestApp:
    """One function started in this process: a handler and its executors, or a partitioned
    model's pool of workers (``self.pool``); see the module doc.

    ``encoding`` is how events and answers are encoded ("json", as ``Client.call``'s default,
    or "msgpack" for bytes and numpy arrays).
    """

    __test__ = False  # not a test class, whatever pytest makes of its name

    def __init__(self, target: Any, *, encoding: Encoding = "json") -> None:
        d = definition_of(target)
        if d is None:
            raise DefinitionError(
                "TestApp runs a function decorated with @function or a model decorated with "
                f"@partitioned, got {target!r}"
            )
        if d.spec.kind == "executor":
            raise DefinitionError(
                f"{d.spec.name} is an executor: TestApp runs a handler, so test one that uses "
                "it (its executors run with it)"
            )
        self.definition: Definition = d
        self.encoding: Encoding = encoding
        self.pool: LocalPool | None = None  # a partitioned model's workers, once started
        self._invoker: Invoker | None = None
        self._stack = AsyncExitStack()

    @property
    def spec(self) -> FunctionSpec:
        return self.definition.spec

    async def __aenter__(self) -> TestApp:
        async with AsyncExitStack() as stack:
            batchers: list[Batcher] = []
            stack.callback(_close_all, batchers)  # last, once their tasks have ended
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)  # on the way out, before the group ends
            if self.definition.partitioned:
                invoker = await self._start_pool(tg)
            else:
                invoker = Invoker(
                    self.definition, await _start_executors(self.definition, tg, batchers)
                )
            await invoker.start()
            stack.push_async_callback(invoker.stop)
            self._invoker = invoker
            self._stack = stack.pop_all()  # started: kept until __aexit__
        return self

    async def _start_pool(self, tg: TaskGroup) -> Invoker:
        """A partitioned model's workers, each set up; the handler is worker 0's coordinator,
        as a deployed worker's (runtime/worker/assembly.py)."""
        pool = LocalPool(self.definition)
        await pool.set_up()
        await tg.start(pool.run)
        self.pool = pool
        return Invoker(
            replace(self.definition, target=pool.coordinate, is_class=False, wants_ctx=True)
        )

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._invoker = None
        await self._stack.__aexit__(et, e, tb)

    async def call(
        self,
        event: Any,
        *,
        encoding: Encoding | None = None,
        request_id: str | None = None,
        attempt: int = 1,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Invoke the function on ``event`` as ``Client.call`` does; its answer, or its error.

        ``attempt`` and ``headers`` are what the handler's ``ctx`` reports (a redelivery is
        ``attempt=2``).
        """
        if self._invoker is None:
            raise RuntimeError("use TestApp as 'async with TestApp(fn) as app: ...'")
        enc = encoding or self.encoding
        request_id = request_id or answer.new_request_id()
        body = codec.encode(event, enc)  # as the client sends it (unencodable: raises here)
        content_type = codec.CONTENT_TYPES[enc]
        ctx = Context(
            request_id=request_id,
            function=self.spec.name,
            subject=protocol.call_subject(self.spec.name),
            headers={protocol.CONTENT_TYPE: content_type, **(headers or {})},
            attempt=attempt,
            durable=False,
        )
        try:
            decoded, enc = codec.decode(body, content_type)  # as the worker reads it
            value = await self._invoker.invoke(decoded, ctx)
            reply = answer.ok(value, enc, request_id)
        except ShoalError as e:
            e.request_id = request_id
            reply = answer.error(e, enc, request_id)
        return answer.decode(reply.body, reply.headers)  # as the client reads it
