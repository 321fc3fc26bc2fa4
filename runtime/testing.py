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

Partitioned models (``@partitioned``) are not run by it yet: test their ``plan``, ``shard``
and ``combine`` against a real cluster, as tests/test_partitioned.py does.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio

from runtime.context import Context
from runtime.define.decorator import Definition, definition_of
from runtime.define.handles import Executor
from runtime.errors import DefinitionError, ExecutorUnavailable, ShoalError
from runtime.wire import answer, codec, protocol
from runtime.worker.executors import start_executor
from runtime.worker.invoker import Invoker

if TYPE_CHECKING:
    from types import TracebackType

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


def _close_all(batchers: list[Batcher]) -> None:
    for batcher in batchers:
        batcher.close()


class TestApp:
    """One function, its handler and executors started in this process; see the module doc.

    ``encoding`` is how events and answers are encoded ("json", as ``Client.call``'s default,
    or "msgpack" for bytes and numpy arrays).
    """

    __test__ = False  # not a test class, whatever pytest makes of its name

    def __init__(self, target: Any, *, encoding: Encoding = "json") -> None:
        d = definition_of(target)
        if d is None:
            raise DefinitionError(
                f"TestApp runs a function decorated with @function, got {target!r}"
            )
        if d.spec.kind == "executor":
            raise DefinitionError(
                f"{d.spec.name} is an executor: TestApp runs a handler, so test one that uses "
                "it (its executors run with it)"
            )
        if d.partitioned:
            raise DefinitionError(f"TestApp does not run partitioned models ({d.spec.name}) yet")
        self.definition: Definition = d
        self.encoding: Encoding = encoding
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
            handles: dict[str, Executor[Any, Any]] = {}
            started: dict[str, _WireExecutor] = {}
            for param, ex in self.definition.executors:
                if ex.spec.name not in started:
                    batcher = await start_executor(ex)
                    batchers.append(batcher)
                    tg.start_soon(batcher.run)
                    started[ex.spec.name] = _WireExecutor(ex.spec, batcher)
                handles[param] = started[ex.spec.name]
            invoker = Invoker(self.definition, handles)
            await invoker.start()
            stack.push_async_callback(invoker.stop)
            self._invoker = invoker
            self._stack = stack.pop_all()  # started: kept until __aexit__
        return self

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
