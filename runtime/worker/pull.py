"""A continuous pull from a durable JetStream consumer that asks for exactly its free slots.

nats-py's ``fetch`` waits for a whole batch or the timeout; a worker wants each event the moment
it is stored, and never more events than it can run. So this keeps pull requests outstanding
for at most the free slots and re-issues them as slots free up or requests expire: at once
when none is outstanding, else once half the slots are unrequested (one pull request per
few events, not per event).
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable

    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

log = logging.getLogger("shoal.pull")

_STATUS = "Status"
_PENDING = "Nats-Pending-Messages"


class Slots:
    """A worker's concurrency slots, shared by the durable and request/reply paths."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._sem = anyio.Semaphore(total)
        self.idle_since = time.monotonic()
        self.on_release: Callable[[], None] = lambda: None

    @property
    def free(self) -> int:
        return self._sem.value

    @property
    def busy(self) -> int:
        return self.total - self._sem.value

    async def acquire(self) -> None:
        try:
            self._sem.acquire_nowait()  # a free slot is taken without a pass of the loop
        except anyio.WouldBlock:
            await self._sem.acquire()

    def release(self) -> None:
        self._sem.release()
        if self._sem.value == self.total:
            self.idle_since = time.monotonic()
        self.on_release()


class Puller:
    """Keeps ``slots.free`` events requested from a consumer; hands each to ``deliver``."""

    def __init__(
        self,
        nc: NATS,
        stream: str,
        consumer: str,
        slots: Slots,
        deliver: Callable[[Msg], None],
        *,
        expires: float = 2.0,  # seconds a pull request waits on the server
        heartbeat: float = 0.5,  # seconds between the server's idle heartbeats
    ) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._slots = slots
        self._deliver = deliver
        self._expires = expires
        self._heartbeat = heartbeat
        self._outstanding = 0
        self._top_up = max(1, slots.total // 2)
        self._last_seen = time.monotonic()
        self._changed = anyio.Event()
        self._stopping = False
        slots.on_release = self._wake_if_wanted

    def _wake(self) -> None:
        self._changed.set()

    def _wanted(self) -> int:
        """Events to ask for now: the free slots not yet requested, once there are enough of
        them (with requests still outstanding, the next event goes to one of them: ask for
        more once half the slots are unrequested, not one request per event); else 0."""
        want = self._slots.free - self._outstanding
        return want if want > 0 and (self._outstanding == 0 or want >= self._top_up) else 0

    def _wake_if_wanted(self) -> None:
        # A slot freed or an event came: the loop has something to do only when a request
        # is due, so most events and releases cost no pass of it.
        if self._wanted():
            self._changed.set()

    async def run(self) -> None:
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox, cb=self._on_msg)
        request = {
            "expires": int(self._expires * 1e9),
            "idle_heartbeat": int(self._heartbeat * 1e9),
        }
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._tick)
                await self._pull(inbox, request)
                tg.cancel_scope.cancel()
            # Draining: requests already on the server may still deliver until they expire.
            # Those events are served here as usual. Handing them back (nak) would bounce
            # them between draining workers and burn their deliveries (max_deliver).
            with anyio.move_on_after(self._expires + self._heartbeat):
                while self._outstanding > 0:
                    await self._changed.wait()
                    self._changed = anyio.Event()
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()

    async def _pull(self, inbox: str, request: dict[str, int]) -> None:
        while not self._stopping:
            want = self._wanted()
            if want:
                request["batch"] = want
                await self._nc.publish(self._subject, json.dumps(request).encode(), inbox)
                self._outstanding += want
                self._last_seen = time.monotonic()
            await self._changed.wait()  # a request is due, a status came, or a tick
            self._changed = anyio.Event()
            if time.monotonic() - self._last_seen > self._expires + self._heartbeat * 3:
                # Neither events nor heartbeats: the requests died with a connection or a
                # server restart. Ask again rather than wait forever.
                self._outstanding = 0

    async def _tick(self) -> None:
        # Silence is noticed even when nothing wakes the loop (no timeout per wait).
        while True:
            await anyio.sleep(self._heartbeat * 3)
            self._wake()

    def stop(self) -> None:
        self._stopping = True
        self._wake()

    async def _on_msg(self, msg: Msg) -> None:
        self._last_seen = time.monotonic()
        # An event always has an ack subject; a status message never does (an event may
        # carry a header named Status of its own).
        is_event = msg.reply.startswith("$JS.ACK.")
        status = None if is_event else (msg.headers or {}).get(_STATUS)
        if is_event:
            self._outstanding = max(0, self._outstanding - 1)
            self._deliver(msg)
            if self._stopping:
                self._wake()  # a draining puller counts its outstanding requests down
            else:
                self._wake_if_wanted()
        elif status == "100":
            return  # idle heartbeat: the request is alive
        else:
            # 408 (expired), 409 (e.g. leadership change): that request is over. The server
            # says how many of it were never delivered; without that, assume all of them.
            pending = msg.headers.get(_PENDING) if msg.headers else None
            if pending is not None and pending.isdigit():
                self._outstanding = max(0, self._outstanding - int(pending))
            else:
                self._outstanding = 0
            if status not in ("408", "404"):
                log.info("pull request ended: %s %s", status, msg.headers)
            self._wake()
