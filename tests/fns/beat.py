"""A function called on a regular beat (tests/test_adaptive.py); keep-alive is adaptive."""

import os

from runtime import function


@function(name="beat")
def beat(event):
    return {**event, "pid": os.getpid()}  # which worker served it
