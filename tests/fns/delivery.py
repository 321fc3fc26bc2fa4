"""Functions for the delivery-semantics tests."""

import os

import anyio

from runtime import function


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
