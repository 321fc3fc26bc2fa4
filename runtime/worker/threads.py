"""The threads sync handlers run in: an idle one takes each call, a new one starts when none is.

anyio's ``to_thread.run_sync`` does the same with more around it (a capacity limiter, a few
checkpoints, a cancel scope), which costs every invocation of a sync handler several passes of
the event loop. Here a call is one hand-off each way: a queue put to the thread, and the
result back with ``call_soon_threadsafe``. The caller's context variables go along, so log
lines and spans inside the handler know their invocation.

Cancelling the caller (a timeout, a cancellation) abandons the call at once: a thread cannot
be killed, so it finishes the handler on its own and is idle again after. A thread idle for
``idle_timeout`` seconds ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeAlias

    # A call for a thread: the caller's context, the function, its arguments, and the
    # future its outcome goes to; None tells the thread to end.
    _Call: TypeAlias = tuple[
        contextvars.Context, Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]
    ]
    _Inbox: TypeAlias = queue.SimpleQueue[_Call | None]


class HandlerThreads:
    """Runs sync callables in threads of their own, one call per thread at a time."""

    def __init__(self, idle_timeout: float = 10.0) -> None:
        self.idle_timeout = idle_timeout
        self._idle: list[_Inbox] = []  # touched on the event loop's thread only
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a thread; its result, or what it raised."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # threads report to the loop they were started for
            self.close()
            self._loop = loop
        future: asyncio.Future[Any] = loop.create_future()
        inbox = self._idle.pop() if self._idle else self._start(loop)
        inbox.put((contextvars.copy_context(), fn, args, future))
        return await future

    def close(self) -> None:
        """End the idle threads (busy ones end once idle for ``idle_timeout``)."""
        for inbox in self._idle:
            inbox.put(None)
        self._idle.clear()

    def _start(self, loop: asyncio.AbstractEventLoop) -> _Inbox:
        inbox: _Inbox = queue.SimpleQueue()
        thread = threading.Thread(
            target=self._serve, args=(loop, inbox), name="shoal-handler", daemon=True
        )
        thread.start()
        return inbox

    def _serve(self, loop: asyncio.AbstractEventLoop, inbox: _Inbox) -> None:
        timeout: float | None = self.idle_timeout
        while True:
            try:
                call = inbox.get(timeout=timeout)
            except queue.Empty:
                # Ask the loop to retire this thread; a call it handed over meanwhile
                # still comes first.
                if not _report(loop, self._retire, inbox):
                    return
                timeout = None
                continue
            if call is None:
                return
            timeout = self.idle_timeout
            context, fn, args, future = call
            result: Any = None
            error: BaseException | None = None
            try:
                result = context.run(fn, *args)
            except BaseException as e:  # handed to the caller, whatever it is
                error = e
            del call, context, fn, args  # nothing of the call outlives it here
            if not _report(loop, self._done, inbox, future, result, error):
                return

    def _done(
        self, inbox: _Inbox, future: asyncio.Future[Any], result: Any, error: BaseException | None
    ) -> None:
        if future.get_loop() is self._loop:
            self._idle.append(inbox)
        else:
            inbox.put(None)  # started for a loop that is gone
        if future.cancelled():
            return  # abandoned: nobody waits for it
        if isinstance(error, StopIteration):  # a future cannot carry StopIteration
            error = RuntimeError(f"the handler raised StopIteration: {error!r}")
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def _retire(self, inbox: _Inbox) -> None:
        if inbox in self._idle:
            self._idle.remove(inbox)
            inbox.put(None)


def _report(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> bool:
    """Run ``callback(*args)`` on ``loop``; False when the loop is closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True
