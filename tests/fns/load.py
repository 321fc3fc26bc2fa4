"""A function for load and fault runs: a little asynchronous work per event."""

import anyio

from runtime import function


@function(name="work", concurrency=16, max_workers=3, ack_wait=2.0, max_deliver=20)
async def work(event):
    await anyio.sleep(0.005)
    return event
