"""The worker process: its launch settings from the environment, connect, assemble, serve until
SIGTERM or SIGINT, then drain. ``python -m runtime.worker`` runs :func:`main`."""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any

import anyio
import anyio.to_thread

try:  # a faster event loop where it is installed (Linux and macOS: a dependency there)
    import uvloop  # noqa: F401  (imported here, so a template process has it loaded)

    UVLOOP = True
except ImportError:  # pragma: no cover - Windows
    UVLOOP = False

from runtime import config
from runtime.config import ConfigError
from runtime.launch import LaunchEnv
from runtime.wire import tracing
from runtime.wire.connection import connect
from runtime.worker import logs
from runtime.worker.assembly import serve
from runtime.worker.handler import Worker
from runtime.worker.serving import WorkerSettings

USAGE = 2  # the exit status for launch settings that cannot be used


def start_tracing(launch: LaunchEnv, settings: WorkerSettings) -> threading.Thread | None:
    """With an OTLP endpoint, load OpenTelemetry in a thread while the worker connects and
    loads its code (its import takes longer than the rest of a cold start); None without."""
    if not launch.otlp_endpoint:
        return None
    service = config.OTEL_SERVICE_NAME.get() or f"shoal-{settings.function}"
    attributes = {"service.instance.id": settings.worker_id, "shoal.function": settings.function}
    thread = threading.Thread(
        target=tracing.configure,
        args=(launch.otlp_endpoint, service, attributes),
        name="shoal-tracing",
        daemon=True,
    )
    thread.start()
    return thread


async def _main(
    launch: LaunchEnv,
    settings: WorkerSettings,
    tracing_up: threading.Thread | None = None,
    publisher: logs.Publisher | None = None,
) -> None:
    # Cold-start phases, reported in heartbeats: process start to here (interpreter and
    # runtime imports), connecting, loading the function's code, and its setup.
    phases: dict[str, float] = {}
    if launch.spawned_at is not None:
        phases["spawn"] = time.time() - launch.spawned_at
    mark = time.perf_counter()
    nc = await connect(settings.nats_url, name=f"shoal-worker-{settings.function}")
    phases["connect"] = time.perf_counter() - mark
    try:
        async with anyio.create_task_group() as tg:
            if publisher is not None:
                tg.start_soon(publisher.run, nc)
            serving = await serve(nc, settings, tg, phases)
            if tracing_up is not None:  # spans from the first request on
                await anyio.to_thread.run_sync(tracing_up.join)

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
            if publisher is not None:  # the last lines, before the connection goes
                with anyio.move_on_after(2):
                    await publisher.flush_to(nc)
            try:
                await nc.drain()
            except Exception:
                await nc.close()


def loop_options() -> dict[str, Any]:
    """anyio's backend options for a worker: uvloop's event loop when it is installed (it
    halves the loop's own share of each message), asyncio's own otherwise."""
    return {"use_uvloop": UVLOOP}


def main() -> None:
    try:
        launch = LaunchEnv.from_env()
        settings = WorkerSettings.from_launch(launch)
    except ConfigError as e:  # one line for the launcher's log, not a traceback
        print(f"shoal worker: error: {e.message}", file=sys.stderr)
        sys.exit(USAGE)
    run(launch, settings)


def run(launch: LaunchEnv, settings: WorkerSettings) -> None:
    """Serve as the worker ``settings`` names, in this process: its logging (tagged, printed,
    published) and tracing are set up here, so a process forked from a template that calls
    this once it knows its function gets them alike."""
    publisher = logs.setup(
        settings.function,
        settings.worker_id,
        level=launch.log_level or "INFO",
        fmt=launch.log_format or "text",
        publish=launch.publish_logs is not False,
    )
    tracing_up = start_tracing(launch, settings)
    try:
        anyio.run(_main, launch, settings, tracing_up, publisher, backend_options=loop_options())
    finally:
        tracing.shutdown()  # what is still buffered is exported
