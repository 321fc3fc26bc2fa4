"""``shoal up``: a one-host cluster (NATS, an S3 server, a controller) that always cleans up.

Every server and worker it starts is registered for stopping *before* it is started, so a
failure half-way through start-up, an error later, Ctrl-C or SIGTERM all stop everything:
workers first (they drain), then the object store, then NATS.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import anyio

from runtime import config
from runtime.client import Client
from runtime.errors import ShoalError
from runtime.wire import protocol
from runtime.wire.connection import connect, kv, redact, servers

from .controller import Controller, ControllerSettings
from .deploy import deploy_file
from .embedded import INSTALL_LOCAL, EmbeddedNats
from .embedded_s3 import EmbeddedS3, weed_binary
from .launcher import ProcessLauncher

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from nats.aio.client import Client as NATS

    from runtime.wire.spec import FunctionSpec

log = logging.getLogger("shoal")

LOCAL_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0", "::1")
SERVING = "serving; Ctrl-C stops everything"  # scripts wait for this line


class StartError(ShoalError):
    """A server ``shoal up`` embeds did not start (what it said is in the message)."""

    code = "start_error"


def say(line: str) -> None:
    print(line, flush=True)


async def up(
    *, url: str | None, data: Path, functions: Path, once: bool, settings: ControllerSettings
) -> None:
    """Run until Ctrl-C/SIGTERM (or, with ``once``, until the demo invocation answered).

    ``data`` and ``functions`` are absolute (``resolved``): servers and workers run in other
    working directories.
    """
    url = url or config.nats_url()

    async def serve() -> None:
        async with AsyncExitStack() as stack:
            nc = await _nats(stack, url, data)
            await _object_store(stack, data / "s3")
            launcher = await stack.enter_async_context(ProcessLauncher(code_dir=data / "code"))
            controller = Controller(nc, launcher, settings)
            async with anyio.create_task_group() as inner:
                await inner.start(controller.run)
                await deploy_folder(nc, functions)
                await _demo(nc)
                if not once:
                    if controller.metrics is not None and controller.metrics.url:
                        say(f"status page on {controller.metrics.url} (Prometheus: /metrics)")
                    say(SERVING)
                    await anyio.sleep_forever()
                inner.cancel_scope.cancel()

    await until_signalled(serve)


async def until_signalled(run: Callable[[], Awaitable[None]]) -> None:
    """Run ``run`` until it returns or SIGINT/SIGTERM cancels it. The signals stay caught
    until it has cleaned up: a second Ctrl-C while workers drain does not cut the stopping
    short (nothing would stop the servers then)."""
    work = anyio.CancelScope()

    async def on_signals(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for _ in signals:
                if work.cancel_called:
                    say("still stopping: workers are draining")
                else:
                    say("stopping...")
                    work.cancel()

    async with anyio.create_task_group() as tg:
        await tg.start(on_signals)
        with work:
            await run()
        tg.cancel_scope.cancel()


def _shielded(stop: Any) -> Any:
    """An exit callback that runs to the end even while the task is being cancelled."""

    async def run() -> None:
        with anyio.CancelScope(shield=True):
            await stop()

    return run


async def _nats(stack: AsyncExitStack, url: str, data: Path) -> NATS:
    """Connect to the server(s) at ``url``; when it is one local address nothing answers on,
    start an embedded server there. Several URLs name a cluster: any one that answers will
    do (nats-py moves to another when it goes), and none is ever started here."""
    addresses = [urlparse(u) for u in servers(url)]
    first = addresses[0]
    local = len(addresses) == 1 and first.hostname in LOCAL_HOSTS
    # A remote server may still be starting (compose); a local one that is not there, we start.
    hosts = [(a.hostname or "127.0.0.1", a.port or 4222) for a in addresses]
    if not await _answers(hosts, 0 if local else 60):
        if not local:
            raise ShoalError(f"no NATS server answers at {redact(url)}")
        server = EmbeddedNats(
            data / "nats", host=first.hostname or "127.0.0.1", port=first.port or 4222
        )
        stack.push_async_callback(_shielded(lambda: anyio.to_thread.run_sync(server.stop)))
        try:
            await anyio.to_thread.run_sync(server.start)
        except (OSError, RuntimeError) as e:
            raise StartError(f"{e}") from e
        url = server.url
        say(f"started nats-server with JetStream on {server.url} (data in {server.data_dir})")
    else:
        say(f"using the NATS server at {redact(url)}")
    nc = await connect(url, name="shoal-up")
    stack.push_async_callback(_shielded(nc.drain))
    return nc


async def _answers(hosts: list[tuple[str, int]], wait: float) -> bool:
    """Whether something accepts TCP connections at one of ``hosts`` (host, port), trying
    for ``wait`` seconds (one round, when ``wait`` is 0). A bare TCP probe: nats-py would
    keep retrying a refused connection."""
    deadline = anyio.current_time() + wait
    while True:
        for host, port in hosts:
            try:
                with anyio.fail_after(2):
                    stream = await anyio.connect_tcp(host, port)
                await stream.aclose()
                return True
            except (OSError, TimeoutError):
                pass
        if anyio.current_time() >= deadline:
            return False
        await anyio.sleep(0.5)  # a server that is still starting gets time


async def _object_store(stack: AsyncExitStack, data: Path) -> None:
    """Start an embedded S3 server for large intermediates, unless one is configured."""
    endpoint = config.S3_ENDPOINT.get()
    if endpoint:
        say(f"using the object store at {endpoint}")
        return
    if weed_binary() is None:
        say(f"no object store ({INSTALL_LOCAL} or set SHOAL_S3_ENDPOINT): intermediates go inline")
        return
    s3 = EmbeddedS3(data)
    stack.push_async_callback(_shielded(lambda: anyio.to_thread.run_sync(s3.stop)))
    try:
        await anyio.to_thread.run_sync(s3.start)
    except (OSError, RuntimeError) as e:
        raise StartError(f"the S3 server did not start: {e}") from e
    os.environ.update(s3.env())  # for the controller, and the workers it spawns inherit it
    say(f"started an S3 server (SeaweedFS) on {s3.endpoint} (data in {s3.data_dir})")


async def deploy_folder(nc: NATS, folder: Path) -> list[FunctionSpec]:
    """Deploy every ``*.py`` in ``folder`` (not ``_*.py``), one line per function."""
    files = await anyio.to_thread.run_sync(python_files, folder)
    if not files:
        say(f"no functions to deploy in {folder}")
    deployed: list[FunctionSpec] = []
    for f in files:
        for spec in await deploy_file(nc, f):
            say(f"deployed {spec.name:<12} {where(spec)}")
            deployed.append(spec)
    return deployed


def python_files(folder: Path) -> list[Path]:
    """The files ``shoal up`` deploys from ``folder``, in order."""
    if folder.exists() and not folder.is_dir():
        raise ShoalError(f"--functions {folder} is not a folder")
    return sorted(f for f in folder.glob("*.py") if not f.name.startswith("_"))


def resolved(path: str) -> Path:
    """A command-line path made absolute once, where it is parsed."""
    return Path(path).expanduser().resolve()


def where(spec: FunctionSpec) -> str:
    if spec.kind == "executor":
        return f"executor ({spec.engine}, max_batch {spec.max_batch})"
    return "on " + ", ".join(spec.event_subjects)


async def _demo(nc: NATS) -> None:
    functions = await kv(nc.jetstream(), protocol.FUNCTIONS_BUCKET)
    try:
        await functions.get("echo")
    except Exception:
        return
    event = {"text": "hello from shoal"}
    say(f"$ shoal invoke echo '{json.dumps(event)}'    # cold start: a worker spawns")
    say(json.dumps(await Client(nc).call("echo", event, timeout=60)))
