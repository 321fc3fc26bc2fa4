"""Inside a worker process: the entry point (`python -m runtime.worker`), assembly of the three
worker kinds, pulling events, invoking handlers, batching and serving executors."""
