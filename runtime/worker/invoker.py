"""Runs one function's handler: setup once, then each event under a timeout."""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from runtime.errors import Cancelled, FunctionTimeout, ShoalError
from runtime.wire.failure import function_error, with_user_frames
from runtime.worker.threads import HandlerThreads

if TYPE_CHECKING:
    from runtime.context import Context
    from runtime.define.decorator import Definition

log = logging.getLogger("shoal.invoker")


async def run_hook(hook: Any) -> None:
    """Run a lifecycle method (setup, teardown): awaited if async, in a thread if not."""
    if inspect.iscoroutinefunction(hook):
        await hook()
    else:
        await anyio.to_thread.run_sync(hook)


class Invoker:
    """Holds a started handler; ``await invoke(event, ctx)`` returns its result or raises."""

    def __init__(self, definition: Definition, executors: dict[str, Any] | None = None) -> None:
        self.definition = definition
        self._executors = executors or {}  # parameter name -> executor handle
        self.spec = definition.spec
        # Sync handlers run in threads so a slow one cannot stall the event loop.
        self._threads = HandlerThreads()
        self._handler: Any = None
        self._is_async = False

    async def start(self) -> None:
        d = self.definition
        if d.is_class:
            instance = d.target()
            setup = getattr(instance, "setup", None)
            if setup is not None:
                await run_hook(setup)
            self._handler = instance
            self._is_async = inspect.iscoroutinefunction(type(instance).__call__)
        else:
            self._handler = d.target
            self._is_async = inspect.iscoroutinefunction(d.target)

    async def stop(self) -> None:
        teardown = getattr(self._handler, "teardown", None) if self.definition.is_class else None
        if teardown is not None:
            try:
                await run_hook(teardown)
            except Exception:
                log.exception("teardown of %s failed", self.spec.name)
        self._threads.close()

    async def invoke(self, event: Any, ctx: Context, scope: anyio.CancelScope | None = None) -> Any:
        """The handler's result for ``event``, or the typed error it ended in.

        It runs in ``scope`` (by default a scope of its own), whose deadline is set to the
        function's timeout: ``FunctionTimeout`` past it. A caller that keeps the scope may
        cancel the run with it: ``Cancelled``.
        """
        kwargs: dict[str, Any] = {"ctx": ctx} if self.definition.wants_ctx else {}
        kwargs.update(self._executors)
        if scope is None:
            scope = anyio.CancelScope()
        elif scope.cancel_called:  # cancelled before it began: it does not begin
            raise Cancelled(f"{ctx.request_id} was cancelled", request_id=ctx.request_id)
        # One scope for the deadline and a cancellation: fail_after would add another.
        scope.deadline = anyio.current_time() + self.spec.timeout
        try:
            with scope:
                if self._is_async:
                    return await self._handler(event, **kwargs)
                # A thread cannot be killed: on timeout the caller gets its error at once,
                # and the thread is free again when the handler returns.
                return await self._threads.run(self._call_sync, event, kwargs)
        except TimeoutError:
            raise self._timeout(ctx) from None
        except ShoalError as e:
            e.request_id = e.request_id or ctx.request_id
            with_user_frames(e)
            raise
        except (Exception, SystemExit) as e:  # SystemExit too: a handler cannot end its worker
            err = function_error(e, request_id=ctx.request_id)
            name, rid = self.spec.name, ctx.request_id
            log.warning("%s raised on %s: %s\n%s", name, rid, err.message, err.traceback)
            raise err from e
        # Only a cancelled scope gets here: past the deadline, or cancelled by the caller.
        if anyio.current_time() >= scope.deadline:
            raise self._timeout(ctx)
        raise Cancelled(f"{ctx.request_id} was cancelled", request_id=ctx.request_id)

    def _timeout(self, ctx: Context) -> FunctionTimeout:
        return FunctionTimeout(
            f"{self.spec.name} ran past its timeout of {self.spec.timeout:g}s",
            request_id=ctx.request_id,
        )

    def _call_sync(self, event: Any, kwargs: dict[str, Any]) -> Any:
        return self._handler(event, **kwargs)
