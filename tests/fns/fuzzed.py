"""Functions the fuzz run (tests/test_fuzz.py) deploys: ones that fail, stall or misbehave.

Each takes an event that says what to do; anything else is answered as plain data, so the
fuzzer's random payloads reach them as well.
"""

import time

import anyio

from runtime import InvalidPayload, function


class Unprintable(Exception):
    """An exception whose message cannot be rendered (its __str__ raises)."""

    def __str__(self):
        raise RuntimeError("no message for you")


def _what(event):
    return event.get("do") if isinstance(event, dict) else None


@function(name="raiser", timeout=5, max_workers=2)
def raiser(event):
    do = _what(event)
    if do == "invalid":
        raise InvalidPayload("raiser was told to reject this")
    if do == "key":
        return {}["missing"]
    if do == "zero":
        return 1 / 0
    if do == "type":
        return len(event) + "x"
    if do == "unprintable":
        raise Unprintable()
    if do == "unserializable":
        return {"obj": object()}
    if do == "set":
        return {1, 2, 3}
    if do == "nan":
        return float("nan")
    if do == "big_message":
        raise ValueError("x" * int(event.get("size", 100)))
    if do == "big_result":
        return "y" * int(event.get("size", 100))
    if do == "ok":
        return {"fine": True}
    # Data the fuzzer made up: a plain failure whose message is safe to carry.
    raise ValueError(f"raiser got {ascii(event)[:200]}")


@function(name="sleepy", timeout=0.3, max_workers=2, concurrency=16)
async def sleepy(event):
    seconds = event.get("seconds", 0) if isinstance(event, dict) else 0
    if not isinstance(seconds, int | float) or seconds != seconds:
        seconds = 0
    await anyio.sleep(min(max(seconds, 0), 2))
    return "awake"


@function(name="blocker", timeout=0.2, max_workers=1, concurrency=4)
async def blocker(event):
    # Blocks its worker's event loop: nothing else in this worker runs meanwhile, and the
    # timeout cannot fire before the sleep returns. Other functions are other processes.
    seconds = event.get("seconds", 0.5) if isinstance(event, dict) else 0.5
    time.sleep(min(max(float(seconds), 0.0), 2.0))  # noqa: ASYNC251 (the point)
    return {"blocked": seconds}


@function(name="exiter", timeout=5, max_workers=1)
def exiter(event):
    # A handler that raises SystemExit (sys.exit in library code) instead of an Exception.
    raise SystemExit(3)
