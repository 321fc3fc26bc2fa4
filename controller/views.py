"""In-memory views of Shoal's buckets, kept current by KV watches (no polling)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
import msgpack

from runtime.wire.kvwatch import Change, Follower, OnChange
from runtime.wire.spec import FunctionSpec

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

log = logging.getLogger("shoal.views")

T = TypeVar("T")


class BucketView(Generic[T]):
    """The latest value of every key in a bucket; ``changed`` fires on each update.

    Kept by a :class:`~runtime.wire.kvwatch.Follower`, which watches anew after a reconnect:
    the values it delivers again overwrite the same entries.
    """

    def __init__(self, bucket: KeyValue, also: OnChange | None = None) -> None:
        self._items: dict[str, tuple[T, float]] = {}
        self.changed = anyio.Event()
        self._also = also  # told of every change too (each one, not just the latest value)
        self._follower = Follower(bucket, self._apply)

    def decode(self, data: bytes) -> T:
        raise NotImplementedError

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Follow the bucket; started once every entry present at the start is in."""
        await self._follower.run(task_status=task_status)

    def _apply(self, change: Change) -> None:
        if self._also is not None:
            self._also(change)
        if change.deleted:
            self._items.pop(change.key, None)
        else:
            seen = time.monotonic()
            if change.initial and change.created is not None:
                # Backdate the initial snapshot by its age, so entries of processes that
                # died before we (re)started watching are not taken for live ones.
                seen -= max(0.0, time.time() - change.created.timestamp())
            try:
                self._items[change.key] = (self.decode(change.value), seen)
            except Exception as e:  # one bad entry must not blind the controller
                log.warning("ignoring undecodable %s: %s", change.key, e)
        self.changed.set()
        self.changed = anyio.Event()

    def items(self, max_age: float | None = None) -> dict[str, T]:
        """Current entries; with ``max_age``, only those refreshed within that many seconds."""
        if max_age is None:
            return {k: v for k, (v, _) in self._items.items()}
        cutoff = time.monotonic() - max_age
        return {k: v for k, (v, seen) in self._items.items() if seen >= cutoff}

    def entries(self, max_age: float | None = None) -> dict[str, tuple[T, float]]:
        """As :meth:`items`, each with when it was last refreshed (``time.monotonic()``)."""
        cutoff = float("-inf") if max_age is None else time.monotonic() - max_age
        return {k: (v, seen) for k, (v, seen) in self._items.items() if seen >= cutoff}

    def get(self, key: str) -> T | None:
        """The latest value of ``key``, or None."""
        held = self._items.get(key)
        return None if held is None else held[0]

    def forget(self, key: str) -> None:
        self._items.pop(key, None)


class SpecView(BucketView[FunctionSpec]):
    def decode(self, data: bytes) -> FunctionSpec:
        return FunctionSpec.from_bytes(data)


class InfoView(BucketView[dict[str, Any]]):
    def decode(self, data: bytes) -> dict[str, Any]:
        value = msgpack.unpackb(data, raw=False)
        if not isinstance(value, dict):
            raise ValueError("not a map")
        return value
