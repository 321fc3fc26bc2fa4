"""A function kept warm: the controller replaces its worker when it dies."""

import os

from runtime import function


@function(name="steady", min_workers=1)
def steady(event):
    return os.environ.get("SHOAL_WORKER_ID")
