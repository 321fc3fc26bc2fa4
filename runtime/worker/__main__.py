"""``python -m runtime.worker``: the one entry point of every worker process."""

from runtime.worker.handler import main

main()
