"""The worker process: settings from the environment, connect, assemble, serve until SIGTERM or
SIGINT, then drain. ``python -m runtime.worker`` runs :func:`main`."""

from __future__ import annotations

import logging
import os
import signal
import time

import anyio

from runtime.wire.connection import connect
from runtime.worker.assembly import serve
from runtime.worker.handler import Worker
from runtime.worker.serving import WorkerSettings


async def _main() -> None:
    # Cold-start phases, reported in heartbeats: process start to here (interpreter and
    # runtime imports), connecting, loading the function's code, and its setup.
    phases: dict[str, float] = {}
    spawned = os.environ.get("SHOAL_SPAWNED_AT")
    if spawned:
        phases["spawn"] = time.time() - float(spawned)
    settings = WorkerSettings.from_env()
    mark = time.perf_counter()
    nc = await connect(settings.nats_url, name=f"shoal-worker-{settings.function}")
    phases["connect"] = time.perf_counter() - mark
    try:
        async with anyio.create_task_group() as tg:
            serving = await serve(nc, settings, tg, phases)

            async def on_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        serving.stop()

            tg.start_soon(on_signals)
            await serving.run()  # type: ignore[attr-defined]
            partitions = getattr(serving, "partitions", None)
            if partitions is not None:  # partitions other coordinators handed this worker
                await partitions.drain(serving.spec.timeout)
            tg.cancel_scope.cancel()
        if isinstance(serving, Worker):
            await serving.invoker.stop()
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await nc.drain()
            except Exception:
                await nc.close()


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("SHOAL_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    anyio.run(_main)
