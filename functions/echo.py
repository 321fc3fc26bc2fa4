"""echo: returns its event unchanged. The smallest function, and the latency baseline."""

from runtime import function


@function
def echo(event):
    return event
