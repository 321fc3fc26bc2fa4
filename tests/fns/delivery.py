"""Functions for the delivery-semantics tests."""

import itertools
import os
import time

import anyio

from runtime import Reject, Retry, function


@function(name="flaky", retries=2, backoff=[0.2], max_deliver=5)
def flaky(event, ctx=None):
    # Fails on the first two deliveries: the third (second retry) succeeds.
    if ctx.attempt < 3:
        raise RuntimeError(f"attempt {ctx.attempt} failed")
    return {"attempt": ctx.attempt}


@function(name="doomed", retries=1, backoff=[0.1])
def doomed(event, ctx=None):
    # Fails until its dead letter is re-driven.
    if "Shoal-Redrive" not in ctx.headers:
        raise RuntimeError("doomed to fail")
    return {"redriven": ctx.headers["Shoal-Redrive"]}


@function(name="crasher", ack_wait=1.0, max_deliver=2)
def crasher(event):
    os._exit(3)  # the worker dies every time; JetStream gives up after max_deliver


@function(name="long", ack_wait=1.0, timeout=30)
async def long(event, ctx=None):
    await anyio.sleep(event.get("seconds", 3))
    return {"attempt": ctx.attempt}


_attempted_at: dict[str, list[float]] = {}  # request id -> when each attempt started


@function(name="patient", max_deliver=5, max_workers=1, ack_wait=30)
def patient(event, ctx=None):
    # Asks to run again after `delay` until its third delivery; retries= is not needed.
    times = _attempted_at.setdefault(ctx.request_id, [])
    times.append(time.monotonic())
    if ctx.attempt < 3:
        raise Retry(f"not yet ({ctx.attempt})", delay=event["delay"])
    return {"attempt": ctx.attempt, "gaps": [b - a for a, b in itertools.pairwise(times)]}


@function(name="stubborn", max_deliver=2)
def stubborn(event):
    raise Retry(delay=0.1)  # never done: dead-lettered on the last delivery


@function(name="picky", retries=3, backoff=[0.1])
def picky(event):
    raise Reject(f"order {event['order']} does not exist")  # final: its retries are skipped
