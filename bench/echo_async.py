"""aecho: echo as an ``async def``, the same handler FastStream's echo in bench_invoke.py is.

Shoal runs a plain ``def`` handler in a thread of its own and an ``async def`` one on the
worker's event loop, as FastStream does (a sync subscriber runs in anyio's thread pool), so
the benchmark measures each kind against its like.
"""

from typing import Any

from runtime import function


@function
async def aecho(event: Any) -> Any:
    return event
