"""Assembling a worker: fetch the deployed function's spec and code, import it, and build the
serving object of its kind (a handler worker, an executor worker, or a partitioned model's
coordinator with its shards)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from runtime.bundles.bundle import Bundle
from runtime.bundles.loader import import_module, materialize
from runtime.bundles.store import get_code
from runtime.define.decorator import Definition, definition_of
from runtime.errors import DeployError
from runtime.partition.worker import start_partitions
from runtime.wire import protocol
from runtime.wire.connection import kv
from runtime.wire.spec import FunctionSpec
from runtime.worker.executor import ExecutorWorker
from runtime.worker.executors import LocalExecutor, RemoteExecutor, start_executor
from runtime.worker.handler import Worker
from runtime.worker.invoker import Invoker

if TYPE_CHECKING:
    from pathlib import Path

    from anyio.abc import TaskGroup
    from nats.aio.client import Client as NATS

    from runtime.worker.serving import Serving, WorkerSettings

log = logging.getLogger("shoal.worker")

STARTUP_PATIENCE = 60.0  # seconds a starting worker waits for NATS before giving up


async def deployed_spec(nc: NATS, name: str) -> FunctionSpec:
    functions = await kv(nc.jetstream(), protocol.FUNCTIONS_BUCKET)
    return FunctionSpec.from_bytes((await functions.get(name)).value or b"")


async def load_definition(nc: NATS, function: str, code_dir: Path) -> Definition:
    """Fetch a deployed function's spec and code from NATS and import it, privately.

    Code another worker on this host has written out already (its folder is named by the
    digest, checked when it was written, and renamed into place whole) is not fetched again.
    """
    spec = await deployed_spec(nc, function)
    root = code_dir / spec.code_sha
    if not root.is_dir():
        blob = await get_code(nc.jetstream(), spec.code_sha)
        bundle = Bundle.load(blob, spec.code_sha, spec.module)
        root = await anyio.to_thread.run_sync(materialize, code_dir, bundle, spec.code_sha)
    module = import_module(root, spec.code_sha, spec.module, label=f"the code of {function}")
    d = definition_of(getattr(module, spec.attr, None))
    if d is None:
        raise DeployError(f"{spec.module}.{spec.attr} is not deployable in the deployed code")
    # The deployed spec is authoritative (an operator may have changed options at deploy).
    return replace(d, spec=spec)


async def serve(
    nc: NATS, settings: WorkerSettings, tg: TaskGroup, phases: dict[str, float]
) -> Serving:
    mark = time.perf_counter()
    with anyio.fail_after(STARTUP_PATIENCE):
        while True:  # NATS may be restarting as this worker starts
            try:
                definition = await load_definition(nc, settings.function, settings.code_dir)
                break
            except NotFoundError:
                raise  # not deployed (any more): waiting will not help
            except (NatsError, TimeoutError) as e:
                log.warning("cannot load %s yet: %r", settings.function, e)
                await anyio.sleep(1)
    phases["load"] = time.perf_counter() - mark
    mark = time.perf_counter()
    serving: Serving
    if definition.spec.kind == "executor":
        batcher = await start_executor(definition)
        tg.start_soon(batcher.run)
        serving = ExecutorWorker(nc, definition.spec, settings, batcher)
        phases["setup"] = time.perf_counter() - mark
        serving.startup = phases
        return serving
    if definition.partitioned:
        partitions = await start_partitions(nc, definition, settings.worker_id, settings.heartbeat)
        await tg.start(partitions.run)
        # The coordinator is the function's handler; partitions are served beside it.
        coordinator = replace(
            definition, target=partitions.coordinate, is_class=False, wants_ctx=True
        )
        invoker = Invoker(coordinator)
        await invoker.start()
        serving = Worker(nc, invoker, settings)
        serving.partitions = partitions
        serving.figures.dataplane = partitions.plane.sent_bytes  # the same dict: always current
        phases["setup"] = time.perf_counter() - mark
        serving.startup = phases
        return serving
    handles: dict[str, Any] = {}
    for param, ex in definition.executors:
        if definition.spec.fuse:
            batcher = await start_executor(ex)
            tg.start_soon(batcher.run)
            handles[param] = LocalExecutor(batcher)
        else:
            handles[param] = RemoteExecutor(nc, await deployed_spec(nc, ex.spec.name))
    invoker = Invoker(definition, handles)
    await invoker.start()
    serving = Worker(nc, invoker, settings)
    phases["setup"] = time.perf_counter() - mark
    serving.startup = phases
    return serving
