"""The batcher on its own: size and wait limits, and a latency target it adapts to."""

from __future__ import annotations

import time

import anyio
import pytest

from runtime import FunctionError
from runtime.worker.batching import Batcher, ServiceModel

pytestmark = pytest.mark.anyio


class Linear:
    """A stand-in model whose batch costs 2 ms + 1 ms per item, really spent."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, batch: list[int]) -> list[int]:
        self.sizes.append(len(batch))
        time.sleep(0.002 + 0.001 * len(batch))
        return [x * 10 for x in batch]


async def submit_all(batcher: Batcher, items: list[int]) -> list[object]:
    """Submit concurrently; each slot holds a result or the exception it raised."""
    out: list[object] = [None] * len(items)

    async def one(i: int) -> None:
        try:
            out[i] = await batcher.submit(items[i])
        except Exception as e:
            out[i] = e

    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.run)
        async with anyio.create_task_group() as calls:
            for i in range(len(items)):
                calls.start_soon(one, i)
        tg.cancel_scope.cancel()
    return out


async def test_batches_fill_up_to_max_batch() -> None:
    model = Linear()
    batcher = Batcher(model, max_batch=16, max_wait=0.05)
    assert await submit_all(batcher, list(range(64))) == [x * 10 for x in range(64)]
    assert max(model.sizes) == 16 and sum(model.sizes) == 64
    assert batcher.stats.batches == len(model.sizes) and batcher.stats.mean > 1
    batcher.close()


async def test_no_waiting_for_a_batch_of_one_when_max_wait_is_zero() -> None:
    model = Linear()
    batcher = Batcher(model, max_batch=16, max_wait=0)
    assert await submit_all(batcher, [1]) == [10]
    assert model.sizes == [1]
    batcher.close()


async def test_latency_target_caps_the_batch_size() -> None:
    model = Linear()
    # 2 ms + 1 ms/item with no wait: a 10 ms target leaves room for about 8 items.
    batcher = Batcher(model, max_batch=64, max_wait=0, latency_target=0.010)
    await submit_all(batcher, list(range(64)))  # the first batches teach the model
    model.sizes.clear()
    await submit_all(batcher, list(range(256)))
    assert 2 <= max(model.sizes[1:]) <= 12, model.sizes
    assert batcher.cap() < 64
    batcher.close()


def test_service_model_fits_fixed_and_per_item_cost() -> None:
    m = ServiceModel()
    for size in (1, 2, 4, 8, 16):
        m.add(size, 0.002 + 0.001 * size)
    predicted = m.predict(32)
    assert predicted is not None and abs(predicted - 0.034) < 1e-9


async def test_an_async_executor_and_a_wrong_result_length() -> None:
    async def short(batch: list[int]) -> list[int]:
        return batch[:-1]

    batcher = Batcher(short, max_batch=4, max_wait=0.01)
    (err,) = await submit_all(batcher, [1])
    assert isinstance(err, FunctionError) and "one result per item" in str(err)
    batcher.close()


async def test_sparse_arrivals_do_not_wait_for_a_batch() -> None:
    model = Linear()
    batcher = Batcher(model, max_batch=16, max_wait=0.2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.run)
        for i in range(3):  # one at a time, farther apart than max_wait
            await batcher.submit(i)
            await anyio.sleep(0.25)  # the load itself: sparse arrivals
        assert batcher.wait() == 0.0  # no second item expected within max_wait
        tg.cancel_scope.cancel()
    await submit_all(batcher, list(range(32)))  # a burst: batching pays again
    assert batcher.wait() == 0.2
    batcher.close()


class Poisoned(Linear):
    """Fails any batch holding a negative item."""

    def __call__(self, batch: list[int]) -> list[int]:
        if any(x < 0 for x in batch):
            raise ValueError("negative item")
        return super().__call__(batch)


async def test_submit_many_items_join_batches_one_by_one() -> None:
    model = Poisoned()
    batcher = Batcher(model, max_batch=4, max_wait=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.run)
        outcomes = await batcher.submit_many([0, 1, -2, 3, 4, 5, 6, 7, 8, 9])
        tg.cancel_scope.cancel()
    assert [o for i, o in enumerate(outcomes) if i != 2] == [x * 10 for x in range(10) if x != 2]
    assert isinstance(outcomes[2], FunctionError) and "negative item" in str(outcomes[2])
    assert max(model.sizes) == 4  # max_batch bounds a batch, whatever a message brought
    assert batcher.stats.items >= 10
    batcher.close()


async def test_items_that_waited_during_a_batch_do_not_wait_again() -> None:
    """A batch waits max_wait from its first item's arrival: items queued while the engine
    ran have waited already, so the next batch starts at once."""
    model = Linear()
    batcher = Batcher(model, max_batch=64, max_wait=0.2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(batcher.run)
        async with anyio.create_task_group() as calls:
            calls.start_soon(batcher.submit_many, list(range(3)))
            # Arrivals that keep coming, each within max_wait of the last: the first batch
            # waits its 0.2 s, the items behind it arrive during that batch.
            for i in range(3):
                await anyio.sleep(0.05)  # the load itself: spaced arrivals
                calls.start_soon(batcher.submit, 100 + i)
        tg.cancel_scope.cancel()
    # Everything came within the first batch's wait, or while it ran: two batches at most,
    # and the engine never sat idle with an item waiting longer than one max_wait.
    assert len(model.sizes) <= 2 and sum(model.sizes) == 6
    assert batcher.stats.idle_waiting < 0.2 + 0.1
    batcher.close()
