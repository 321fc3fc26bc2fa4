"""The cold path: what the controller does with traffic for a function that has no worker.

Requests to ``fn.<name>.call`` become durable events whose answers go to the requester's
inbox, so a cold call waits for its worker instead of failing. Items for a cold executor are
held here (bounded) and re-sent, with their reply inboxes, once an executor is serving.
Events on a function's own subjects are already durable; they only wake the controller.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from runtime.errors import ExecutorUnavailable, PayloadTooLarge, ShoalError, WorkerUnavailable
from runtime.wire import answer, codec, protocol
from runtime.wire.connection import drain_shielded

if TYPE_CHECKING:
    from collections.abc import Callable

    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

    from runtime.wire.spec import FunctionSpec

log = logging.getLogger("shoal.cold")

MAX_HELD = 10_000  # executor items held per cold executor


class ColdPath:
    """Subscriptions standing in for one function's or executor's absent workers."""

    def __init__(self, nc: NATS, spec: FunctionSpec, wake: Callable[[], None]) -> None:
        self.nc = nc
        self.spec = spec
        self._wake = wake
        self._subs: list[Subscription] = []
        self._held: list[Msg] = []
        self._prewarmed = False

    @property
    def demand(self) -> int:
        """Items waiting for a worker; a pre-warm request counts as one."""
        return len(self._held) or int(self._prewarmed)

    @property
    def held(self) -> int:
        """Items waiting for a worker (a pre-warm request is none)."""
        return len(self._held)

    async def open(self) -> None:
        name = self.spec.name
        if self.spec.kind == "executor":
            subject = protocol.executor_subject(name)
            self._subs.append(await self.nc.subscribe(subject, queue=subject, cb=self._hold))
            return
        self._subs.append(
            await self.nc.subscribe(
                protocol.call_subject(name), queue=protocol.queue_group(name), cb=self._forward
            )
        )
        for subject in self.spec.event_subjects:
            self._subs.append(await self.nc.subscribe(subject, cb=self._on_event))

    async def close(self) -> None:
        """Stop standing in; hand held executor items to the executors now serving.

        Draining, not unsubscribing: requests the server already routed here (this is one
        member of the workers' queue group) are still forwarded or held; an unsubscribe
        would drop them, and their callers would wait in vain."""
        for sub in self._subs:
            try:
                await drain_shielded(sub)
            except Exception as e:
                log.debug("drain: %s", e)
        self._subs.clear()
        held, self._held = self._held, []
        for msg in held:  # after unsubscribing, so these reach an executor, not us again
            await self.nc.publish(msg.subject, msg.data, reply=msg.reply, headers=msg.headers)

    async def _on_event(self, msg: Msg) -> None:
        self._wake()

    async def _hold(self, msg: Msg) -> None:
        if (msg.headers or {}).get(protocol.PREWARM):
            self._prewarmed = True
            self._wake()
            return
        if len(self._held) >= MAX_HELD:
            await self._refuse(
                msg, ExecutorUnavailable(f"executor {self.spec.name} is starting; too many waiting")
            )
            return
        self._held.append(msg)
        self._wake()

    async def _forward(self, msg: Msg) -> None:
        headers = dict(msg.headers or {})
        if msg.reply:
            headers[protocol.REPLY_TO] = msg.reply
        size = len(msg.data) + sum(len(k) + len(v) + 4 for k, v in headers.items()) + 64
        if size > self.nc.max_payload:
            # The server would drop the connection over it: refuse this one request instead.
            await self._refuse(
                msg, PayloadTooLarge(f"the request is too large to queue ({size} bytes)")
            )
            return
        try:
            js = self.nc.jetstream()
            await js.publish(protocol.event_subject(self.spec.name), msg.data, headers=headers)
        except Exception as e:
            await self._refuse(
                msg, WorkerUnavailable(f"{self.spec.name} is cold and could not be queued: {e}")
            )
        self._wake()

    async def _refuse(self, msg: Msg, err: ShoalError) -> None:
        if not msg.reply:
            return
        enc = codec.encoding_of((msg.headers or {}).get(protocol.CONTENT_TYPE))
        reply = answer.error(err, enc)
        await self.nc.publish(msg.reply, reply.body, headers=reply.headers)
