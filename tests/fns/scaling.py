"""Functions for the scaling tests."""

import anyio

from runtime import function


@function(name="chunky", concurrency=1, max_workers=3, idle_timeout=0.5)
async def chunky(event):
    # Holds its only slot for a while, so a backlog builds up and asks for more workers.
    await anyio.sleep(event.get("seconds", 0.3))
    return event["i"]
