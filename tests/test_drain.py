"""A subscription's drain that is cancelled leaves its connection working.

nats-py's drain flushes (a PING, then a wait for the PONG); cancelled during that wait, it
leaves the cancelled wait queued, and the PONG then kills the connection's read loop: every
later request times out. This is what broke a restarted controller's connection when the
controller before it was cancelled while closing a cold path. ``drain_shielded`` is not
interrupted by the cancellation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest

from runtime.wire.connection import drain_shielded

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

pytestmark = pytest.mark.anyio


async def test_a_cancelled_drain_leaves_the_connection_answering_requests(nc: NATS) -> None:
    for i in range(10):
        sub = await nc.subscribe(f"drained.{i}")
        async with anyio.create_task_group() as tg:
            tg.start_soon(drain_shielded, sub)
            await anyio.lowlevel.checkpoint()  # the drain is under way: its PING is sent
            tg.cancel_scope.cancel()
        # A request needs the connection's read loop alive (a flush alone does not).
        reply = await nc.request("$JS.API.INFO", b"", timeout=5)
        assert b"io.nats.jetstream.api.v1.account_info_response" in reply.data
        assert sub.subject not in {s.subject for s in nc._subs.values()}
