"""The threads sync handlers run in (runtime.worker.threads): context, errors, abandoning."""

from __future__ import annotations

import contextvars
import threading
from typing import TYPE_CHECKING

import anyio
import pytest

from runtime.worker.threads import HandlerThreads
from tests.observability import poll

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

pytestmark = pytest.mark.anyio

where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="nowhere")


async def test_a_call_runs_in_a_thread_with_the_callers_context() -> None:
    threads = HandlerThreads()
    where.set("invocation r1")
    name, seen = await threads.run(lambda: (threading.current_thread().name, where.get()))
    assert name == "shoal-handler" and seen == "invocation r1"
    threads.close()


async def test_what_the_function_raises_reaches_the_caller() -> None:
    threads = HandlerThreads()

    def fails() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        await threads.run(fails)
    with pytest.raises(RuntimeError, match="StopIteration"):
        await threads.run(next, iter(()))
    threads.close()


async def test_an_abandoned_call_finishes_in_its_thread_which_serves_again() -> None:
    threads = HandlerThreads()
    release, finished = threading.Event(), threading.Event()
    idents: list[int] = []

    def blocks() -> None:
        idents.append(threading.get_ident())
        release.wait(10)
        finished.set()

    with anyio.move_on_after(0.05) as scope:
        await threads.run(blocks)
    assert scope.cancelled_caught and not finished.is_set()  # the caller did not wait
    # Meanwhile another call gets a thread of its own.
    assert await threads.run(threading.get_ident) != idents[0]
    release.set()
    await poll(idle_count(threads, 2), 5, "both threads idle again", every=0.01)
    assert finished.is_set()
    threads.close()


async def test_idle_threads_end() -> None:
    threads = HandlerThreads(idle_timeout=0.05)
    thread = await threads.run(threading.current_thread)
    await poll(ended(thread), 5, "the idle thread ended", every=0.01)
    assert not threads._idle
    # A call after that starts a new thread.
    assert await threads.run(threading.current_thread) is not thread
    threads.close()


def idle_count(threads: HandlerThreads, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(threads._idle) == n

    return check


def ended(thread: threading.Thread) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return not thread.is_alive()

    return check
