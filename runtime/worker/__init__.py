"""Inside a worker process: the entry point (`python -m runtime.worker`), assembly of the three
worker kinds, pulling events, invoking handlers, settling events (ack, redelivery, dead
letter: :mod:`runtime.worker.settle`), batching and serving executors."""
