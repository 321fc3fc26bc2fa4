"""Functions that fail in the user's own code, a few frames deep (tests/test_failures.py)."""

import anyio

from runtime import Executor, executor, function, uses


def _parse(event):
    return int(event["n"])  # a ValueError for {"n": "x"}


def _scale(event):
    return _parse(event) * 2


@function(name="parse")
def parse(event):
    return _scale(event)


@executor(name="fragile", max_batch=4, max_wait_ms=10, timeout=5, max_workers=1)
class Fragile:
    def __call__(self, batch):
        return [self._one(item) for item in batch]

    def _one(self, item):
        return 10 // item["d"]  # a ZeroDivisionError for d = 0


@function(name="divide")
async def divide(event, fragile: Executor[dict, int] = uses(Fragile)):
    return await fragile({"d": event["d"]})


@function(name="snooze", timeout=60, ack_wait=30, concurrency=4)
async def snooze(event):
    await anyio.sleep(event.get("seconds", 60))
    return "awake"
