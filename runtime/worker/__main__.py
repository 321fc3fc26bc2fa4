"""``python -m runtime.worker``: the one entry point of every worker process."""

from runtime.worker.main import main

main()
