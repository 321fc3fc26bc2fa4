"""echo: returns its event unchanged. The smallest function, and the latency baseline."""

from typing import Any

from runtime import function


@function
def echo(event: Any) -> Any:
    return event
