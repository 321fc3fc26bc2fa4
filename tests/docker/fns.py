"""Functions the container tests deploy."""

import os

from runtime import function


@function(name="whoami")
def whoami(event):
    return {
        "echo": event,
        "worker": os.environ.get("SHOAL_WORKER_ID"),
        "in_container": os.path.exists("/.dockerenv"),
    }


@function(name="brief", idle_timeout=0.5)
def brief(event):
    return event
