"""Where a worker keeps what has arrived for one partition of one run, until it asks.

Intermediates can arrive before their partition has started, or for a later step than the
one it is at; a :class:`Mailbox` files each by (step, source partition) and hands it over when
the partition takes it. A failed run fails its mailboxes: whoever waits there, or comes to
take later, gets the run's error.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from runtime.errors import ShoalError

log = logging.getLogger("shoal.dataplane")

Key = tuple[int, int]  # (step, source partition)


@dataclass
class Delivery:
    kind: str  # data | none | ref | error
    data: bytes
    compressed: bool


@dataclass
class Mailbox:
    """What has arrived for one partition of one run, by (step, source)."""

    ready: dict[Key, Delivery] = field(default_factory=dict)
    waiting: dict[Key, anyio.Event] = field(default_factory=dict)
    error: ShoalError | None = None
    touched: float = field(default_factory=time.monotonic)

    def put(self, key: Key, delivery: Delivery) -> None:
        if key in self.ready:
            log.warning("duplicate intermediate for step %s from %s ignored", *key)
            return
        self.ready[key] = delivery
        event = self.waiting.pop(key, None)
        if event is not None:
            event.set()

    def fail(self, error: ShoalError) -> None:
        if self.error is None:
            self.error = error
        for event in self.waiting.values():
            event.set()
        self.waiting.clear()

    async def take(self, key: Key) -> Delivery:
        while True:
            delivery = self.ready.pop(key, None)
            if delivery is not None:
                return delivery
            if self.error is not None:
                raise self.error
            event = self.waiting.setdefault(key, anyio.Event())
            await event.wait()

    async def settle(self, key: Key) -> None:
        """Wait until ``key`` has arrived, even in a failed box: a stopping run's partitions
        still answer (with an error) once they have stopped."""
        while key not in self.ready:
            await self.waiting.setdefault(key, anyio.Event()).wait()
