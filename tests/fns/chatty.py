"""Functions that log and print, for tests/test_logs.py."""

import logging
import sys

from runtime import function

log = logging.getLogger("user.chatty")


@function(name="chatty")
def chatty(event):
    log.info("handling %s", event["n"])
    print(f"printed {event['n']}")
    sys.stderr.write(f"to stderr {event['n']}\n")
    if event.get("fail"):
        raise RuntimeError(f"failing on {event['n']}")
    return event["n"]


@function(name="chatter")
async def chatter(event):
    print(f"async print {event['n']}")
    log.warning("async warning %s", event["n"])
    return event["n"]
