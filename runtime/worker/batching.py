"""Adaptive batching: items from many callers, run together up to a size or a wait.

With a latency target, the batch cap follows a service-time model fitted to recent batches
(time = fixed + per_item * size, as in the BATCH paper), so that waiting plus running a
batch stays within the target.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from runtime.errors import FunctionError, ShoalError
from runtime.wire import tracing
from runtime.wire.failure import function_error, with_user_frames
from runtime.wire.figures import BATCH_BOUNDS, Histogram

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from runtime.wire.tracing import SpanContext

log = logging.getLogger("shoal.batching")


@dataclass
class _Pending:
    item: Any
    trace: SpanContext | None = None  # the span that submitted it: the batch links to it
    arrived: float = 0.0  # anyio.current_time() when submitted: its batch waits from then
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Any = None
    error: ShoalError | None = None


@dataclass
class BatchStats:
    """What a batcher has done, for heartbeats, scaling and tests."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    queued: int = 0
    running: int = 0
    cap: int = 0
    first_batch: float | None = None  # seconds the very first batch took (a cold model)
    busy: float = 0.0  # seconds spent running batches
    idle_waiting: float = 0.0  # seconds the engine sat idle while an item waited (to batch)
    sizes: Histogram = field(default_factory=lambda: Histogram(BATCH_BOUNDS))  # for metrics

    @property
    def mean(self) -> float:
        return self.items / self.batches if self.batches else 0.0


class ServiceModel:
    """Least-squares fit of batch time against batch size over recent batches."""

    def __init__(self, window: int = 64) -> None:
        self.samples: deque[tuple[int, float]] = deque(maxlen=window)

    def add(self, size: int, seconds: float) -> None:
        self.samples.append((size, seconds))

    def predict(self, size: int) -> float | None:
        if not self.samples:
            return None
        n = len(self.samples)
        mx = sum(s for s, _ in self.samples) / n
        my = sum(t for _, t in self.samples) / n
        var = sum((s - mx) ** 2 for s, _ in self.samples)
        if var == 0:  # one size seen so far: assume cost proportional to size
            return my * size / mx
        slope = max(0.0, sum((s - mx) * (t - my) for s, t in self.samples) / var)
        return max(0.0, my - slope * mx) + slope * size


class Batcher:
    """Runs ``fn(batch) -> results`` on batches of submitted items, one batch at a time.

    One batch runs while the next one fills. A batch waits for more items at most
    ``max_wait`` after its first item arrived, so when the items waiting came while the
    previous batch ran, it starts at once: under load the engine does not idle between
    batches.
    """

    def __init__(
        self,
        fn: Callable[[list[Any]], Any],
        *,
        name: str = "executor",
        max_batch: int,
        max_wait: float,  # seconds
        latency_target: float | None = None,  # seconds
        queue_limit: int = 10_000,
    ) -> None:
        self._fn = fn
        self.name = name
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            type(fn).__call__
        )
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.latency_target = latency_target
        self.model = ServiceModel()
        self.stats = BatchStats(cap=max_batch)
        self._send: MemoryObjectSendStream[_Pending]
        self._recv: MemoryObjectReceiveStream[_Pending]
        self._send, self._recv = anyio.create_memory_object_stream[_Pending](queue_limit)
        self._last_arrival: float | None = None
        self._last_end = 0.0  # anyio.current_time() when the last batch ended
        self._gap: float | None = None  # smoothed time between arrivals, seconds

    def wait(self) -> float:
        """How long a new batch waits to fill: not at all when no second item is expected
        within ``max_wait`` (light load pays no batching delay)."""
        if self._gap is not None and self._gap > self.max_wait:
            return 0.0
        return self.max_wait

    async def submit(self, item: Any) -> Any:
        """Queue one item and wait for its result (or its batch's error)."""
        (pending,) = await self._queue([item])
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result

    async def submit_many(self, items: list[Any]) -> list[Any]:
        """Queue items (each joins a batch on its own) and wait for all of them: each one's
        result, or the :class:`ShoalError` it failed with, in order."""
        queued = await self._queue(items)
        for pending in queued:
            await pending.done.wait()
        return [p.result if p.error is None else p.error for p in queued]

    async def _queue(self, items: list[Any]) -> list[_Pending]:
        now = time.monotonic()
        if self._last_arrival is not None:
            gap = now - self._last_arrival
            self._gap = gap if self._gap is None else 0.8 * self._gap + 0.2 * gap
        if len(items) > 1:  # the rest of a message arrived with its first
            self._gap = (self._gap or 0.0) * 0.8 ** (len(items) - 1)
        self._last_arrival = now
        span = tracing.current()
        trace = span.context if span is not None else None
        arrived = anyio.current_time()
        queued = [_Pending(item, trace, arrived) for item in items]
        self.stats.queued += len(queued)
        for pending in queued:
            await self._send.send(pending)
        return queued

    def cap(self) -> int:
        """The batch size to aim for now."""
        if self.latency_target is None:
            return self.max_batch
        budget = self.latency_target - self.max_wait
        best = 1
        for size in range(1, self.max_batch + 1):
            predicted = self.model.predict(size)
            if predicted is None:
                return self.max_batch  # nothing measured yet: learn from a full batch
            if predicted <= budget:
                best = size
        return best

    def close(self) -> None:
        """Release the queue; submitting afterwards fails."""
        self._send.close()
        self._recv.close()

    async def run(self) -> None:
        """Form and run batches until cancelled."""
        while True:
            first = await self._recv.receive()
            batch = [first]
            cap = self.cap()
            self.stats.cap = cap
            # From the first item's arrival: items that waited while the last batch ran
            # have waited already.
            deadline = first.arrived + self.wait()
            while len(batch) < cap:
                try:
                    batch.append(self._recv.receive_nowait())
                    continue
                except anyio.WouldBlock:
                    pass
                remaining = deadline - anyio.current_time()
                if remaining <= 0:
                    break
                with anyio.move_on_after(remaining):
                    batch.append(await self._recv.receive())
            now = anyio.current_time()
            self.stats.idle_waiting += max(0.0, now - max(self._last_end, first.arrived))
            await self._run_batch(batch)
            self._last_end = anyio.current_time()

    async def _call(self, items: list[Any]) -> list[Any]:
        if self._is_async:
            results = await self._fn(items)
        else:
            results = await anyio.to_thread.run_sync(self._fn, items)
        if not isinstance(results, list | tuple) or len(results) != len(items):
            raise FunctionError(
                f"the executor returned {type(results).__name__} of length "
                f"{len(results) if hasattr(results, '__len__') else '?'} for a batch of "
                f"{len(items)}: return one result per item, in order"
            )
        return list(results)

    async def _run_batch(self, batch: list[_Pending]) -> None:
        self.stats.queued -= len(batch)
        self.stats.running = len(batch)
        started = time.perf_counter()
        # One span per batch, in the trace of its first item, linked to every item's span.
        traces = [p.trace for p in batch if p.trace is not None]
        try:
            with tracing.span(
                f"{self.name} batch",
                parent=traces[0] if traces else None,
                links=traces,
                attributes={"shoal.executor": self.name, "shoal.batch_size": len(batch)},
            ):
                await self._settle(batch)
        finally:
            elapsed = time.perf_counter() - started
            self.model.add(len(batch), elapsed)
            self.stats.busy += elapsed
            if self.stats.first_batch is None:
                self.stats.first_batch = elapsed
            self.stats.batches += 1
            self.stats.items += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
            self.stats.sizes.observe(len(batch))
            self.stats.running = 0
            for p in batch:
                p.done.set()

    async def _settle(self, batch: list[_Pending]) -> None:
        try:
            results = await self._call([p.item for p in batch])
        except Exception as e:
            if len(batch) > 1:
                # One bad item must not fail its neighbours: run them one by one.
                for p in batch:
                    await self._settle([p])
                return
            batch[0].error = _as_shoal_error(e)
            return
        for p, r in zip(batch, results, strict=True):
            p.result = r


def _as_shoal_error(e: Exception) -> ShoalError:
    if isinstance(e, ShoalError):
        return with_user_frames(e)
    err = function_error(e)
    log.warning("executor item failed: %s\n%s", err.message, err.traceback)
    return err
