"""Functions the tests deploy."""

import anyio

from runtime import function


@function(name="ping")
async def ping(event):
    return {"pong": event}


@function(name="boom")
def boom(event):
    raise ValueError(f"cannot handle {event!r}")


@function(name="info")
def info(event, ctx=None):
    return {
        "request_id": ctx.request_id,
        "attempt": ctx.attempt,
        "durable": ctx.durable,
        "subject": ctx.subject,
    }


@function(name="brief", idle_timeout=0.5)
def brief(event):
    return event


@function(name="stall", ack_wait=1.0, timeout=30)
async def stall(event, ctx=None):
    # The first delivery hangs (the test kills its worker); a redelivery answers.
    if ctx.attempt == 1:
        await anyio.sleep_forever()
    return {"attempt": ctx.attempt, "event": event}


@function(name="slowpoke", timeout=0.3)
async def slowpoke(event):
    await anyio.sleep(event.get("seconds", 5))
    return "finished"
