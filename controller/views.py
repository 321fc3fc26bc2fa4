"""In-memory views of Shoal's buckets, kept current by KV watches (no polling)."""

from __future__ import annotations

import logging
import time
from typing import Any, Generic, TypeVar

import anyio
import msgpack
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from runtime.wire.spec import FunctionSpec

log = logging.getLogger("shoal.views")

T = TypeVar("T")


class BucketView(Generic[T]):
    """The latest value of every key in a bucket; ``changed`` fires on each update."""

    def __init__(self, bucket: KeyValue) -> None:
        self._bucket = bucket
        self._items: dict[str, tuple[T, float]] = {}
        self.changed = anyio.Event()
        self._scope = anyio.CancelScope()
        self._started = False  # whether run() has reported its initial snapshot

    def decode(self, data: bytes) -> T:
        raise NotImplementedError

    def refresh(self) -> None:
        """Re-read the bucket from a new watch (after a reconnect, a watch may be dead)."""
        self._scope.cancel()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        while True:
            with anyio.CancelScope() as self._scope:
                try:
                    await self._follow(task_status)
                except Exception as e:
                    log.warning("watch of %s failed, watching anew: %s", self._bucket._name, e)
                    await anyio.sleep(1)  # the server is away: do not spin

    async def _follow(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        watcher = await self._bucket.watchall()
        initial = True
        try:
            async for entry in watcher:
                if entry is None:  # the initial values are all in
                    initial = False
                    if not self._started:
                        self._started = True
                        task_status.started()
                    continue
                if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                    self._items.pop(entry.key, None)
                else:
                    seen = time.monotonic()
                    if initial and entry.created is not None:
                        # Backdate the initial snapshot by its age, so entries of processes
                        # that died before we started are not taken for live ones.
                        seen -= max(0.0, time.time() - entry.created.timestamp())
                    try:
                        self._items[entry.key] = (self.decode(entry.value), seen)
                    except Exception as e:  # one bad entry must not blind the controller
                        log.warning("ignoring undecodable %s: %s", entry.key, e)
                if self._started:
                    self.changed.set()
                    self.changed = anyio.Event()
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await watcher.stop()  # type: ignore[no-untyped-call]
                except Exception as e:
                    log.debug("stopping a watch: %s", e)

    def items(self, max_age: float | None = None) -> dict[str, T]:
        """Current entries; with ``max_age``, only those refreshed within that many seconds."""
        if max_age is None:
            return {k: v for k, (v, _) in self._items.items()}
        cutoff = time.monotonic() - max_age
        return {k: v for k, (v, seen) in self._items.items() if seen >= cutoff}

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
