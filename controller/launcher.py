"""Launchers start and stop workers; the controller above them does not care how.

A launcher reports every worker exit on its ``exits`` stream so the controller can replace
workers that died. The process launcher runs workers as local OS processes; a container
launcher implements the same protocol.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import anyio

from runtime import config
from runtime.config import NATS_AUTH_VARS
from runtime.launch import LaunchEnv, Preload

from .template import ForkedWorker, Template

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path
    from types import TracebackType

    from anyio.abc import Process, TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

log = logging.getLogger("shoal.launcher")


@dataclass(frozen=True)
class LaunchRequest:
    """One worker to start."""

    function: str
    worker_id: str
    version: str
    env: Mapping[str, str] = field(default_factory=dict)  # its variables (runtime.launch)
    preload: Preload | None = None  # its engine, for a launcher that can have it imported


@dataclass(frozen=True)
class WorkerExit:
    worker_id: str
    function: str
    returncode: int | None


class Launcher(Protocol):
    """What the controller needs from a way of running workers."""

    exits: MemoryObjectReceiveStream[WorkerExit]

    async def start(self, request: LaunchRequest) -> None:
        """Start a worker; return once it is launched (not necessarily serving)."""

    async def prepare(self, preload: Preload | None) -> None:
        """Workers with ``preload`` will be started: get ready for them, if there is a way
        (a template process that imports that engine), without waiting for it."""

    async def kill(self, worker_id: str) -> None:
        """Stop a worker at once (it is expected to have been asked to drain first)."""

    def running(self) -> set[str]:
        """Ids of the workers this launcher started that have not exited."""


class ProcessLauncher:
    """Runs each worker as a process on this host: forked from a template process that has
    imported Shoal already (``template``, by default ``SHOAL_WORKER_TEMPLATE``), or started
    as ``python -m runtime.worker``.

    One template process per preload: the plain one, started with the launcher, and one per
    engine (:data:`runtime.launch.PRELOADS`) that also imports it, started when the controller
    prepares for such an executor, or at the first launch of one at the latest (``engines``:
    False forks executors from the plain one, as benchmarks compare)."""

    def __init__(
        self,
        *,
        code_dir: Path,
        stop_grace: float = 10.0,
        template: bool | None = None,
        engines: bool = True,
    ) -> None:
        self.code_dir = code_dir
        self.stop_grace = stop_grace  # seconds a worker gets to drain at shutdown
        self.use_template = config.WORKER_TEMPLATE.get() if template is None else template
        self.engines = engines  # engine templates; False: executors fork from the plain one
        self._templates: dict[Preload | None, Template] = {}  # preload -> its template
        self._procs: dict[str, tuple[LaunchRequest, Process | ForkedWorker]] = {}
        self._all_exited = anyio.Event()
        self._send: MemoryObjectSendStream[WorkerExit]
        self._send, self.exits = anyio.create_memory_object_stream[WorkerExit](1000)
        self._tg: TaskGroup | None = None

    async def __aenter__(self) -> ProcessLauncher:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        await self.prepare(None)  # it imports meanwhile; the first launch waits for it
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        with anyio.CancelScope(shield=True):
            await self.shutdown()
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        try:
            return await self._tg.__aexit__(et, e, tb)
        finally:
            self._send.close()
            self.exits.close()

    async def start(self, request: LaunchRequest) -> None:
        assert self._tg is not None, "use 'async with ProcessLauncher(...)'"
        inherited = dict(os.environ)  # a process worker inherits this process's environment
        if any(k in request.env for k in NATS_AUTH_VARS):
            # The worker has credentials of its own: none of the controller's may leak in.
            for k in NATS_AUTH_VARS:
                inherited.pop(k, None)
        launched = LaunchEnv(
            function=request.function,
            worker_id=request.worker_id,
            code_dir=self.code_dir,
            parent_pid=os.getpid(),
            spawned_at=time.time(),  # for the worker's cold-start phases
        )
        env = {**inherited, **request.env, **launched.to_env()}
        proc: Process | ForkedWorker | None = None
        template = await self._template(request.preload)
        if template is not None and template.usable(env):
            proc = await template.fork(env)
        if proc is None:
            # A session of its own: a Ctrl-C in the terminal reaches the controller, which
            # drains workers in order, instead of hitting every worker at once.
            proc = await anyio.open_process(
                [sys.executable, "-m", "runtime.worker"],
                env=env,
                stdin=None,
                stdout=None,
                stderr=None,
                start_new_session=True,
            )
        self._procs[request.worker_id] = (request, proc)
        how = ", forked" if isinstance(proc, ForkedWorker) else ""
        log.info(
            "started worker %s for %s (pid %d%s)",
            request.worker_id,
            request.function,
            proc.pid,
            how,
        )
        self._tg.start_soon(self._watch, request, proc)

    async def _watch(self, request: LaunchRequest, proc: Process | ForkedWorker) -> None:
        code = await proc.wait()
        self._procs.pop(request.worker_id, None)
        if not self._procs:
            self._all_exited.set()
            self._all_exited = anyio.Event()
        await self._send.send(WorkerExit(request.worker_id, request.function, code))

    async def kill(self, worker_id: str) -> None:
        entry = self._procs.get(worker_id)
        if entry is not None:
            entry[1].kill()

    def running(self) -> set[str]:
        return set(self._procs)

    async def prepare(self, preload: Preload | None) -> None:
        """Start the template process for ``preload`` if there is none yet (once: one that
        failed is not started again)."""
        await self._template(preload)

    async def _template(self, preload: Preload | None) -> Template | None:
        if not self.use_template:
            return None
        if not self.engines:
            preload = None
        template = self._templates.get(preload)
        if template is None:
            assert self._tg is not None, "use 'async with ProcessLauncher(...)'"
            template = self._templates[preload] = Template(preload)
            try:
                await template.start(self._tg)
            except OSError as e:
                log.warning("no template process (%s): workers start as new interpreters", e)
        return template

    def template(self, preload: Preload | None = None) -> Template | None:
        """The template process for ``preload`` (None: the plain one), once started."""
        return self._templates.get(preload)

    @property
    def template_pid(self) -> int | None:
        """The plain template process's pid, while there is one."""
        template = self._templates.get(None)
        return template.pid if template is not None else None

    async def ready(self, preload: Preload | None = None) -> bool:
        """Wait until the template process for ``preload`` (started now if need be) can fork
        workers; False without one."""
        template = await self._template(preload)
        return template is not None and await template.ready()

    async def wait_all_exited(self) -> None:
        """Return once no worker of this launcher is running."""
        if self._procs:
            await self._all_exited.wait()

    def pid(self, worker_id: str) -> int | None:
        entry = self._procs.get(worker_id)
        return entry[1].pid if entry else None

    async def shutdown(self) -> None:
        """SIGTERM every worker (they drain), then SIGKILL what is left after the grace."""
        procs = [p for _, p in self._procs.values()]
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        with anyio.move_on_after(self.stop_grace):
            for p in procs:
                await p.wait()
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        for template in self._templates.values():
            await template.aclose()
