"""What every worker process shares: identity, liveness reports, and being asked to stop."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import msgpack

from runtime import config
from runtime.launch import LaunchEnv
from runtime.wire import protocol
from runtime.wire.connection import kv
from runtime.wire.figures import WorkerFigures

if TYPE_CHECKING:
    from pathlib import Path

    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg
    from nats.js.kv import KeyValue

    from runtime.wire.spec import FunctionSpec

log = logging.getLogger("shoal.worker")


@dataclass(frozen=True)
class WorkerSettings:
    """A worker's identity and wiring, given by its launcher (:class:`runtime.launch.LaunchEnv`)."""

    function: str
    worker_id: str
    nats_url: str
    controller_id: str = ""
    host: str = ""  # the host its controller names (SHOAL_HOST_NAME); else the machine's
    code_dir: Path = config.CODE_DIR.default
    heartbeat: float = config.HEARTBEAT.default  # seconds between liveness reports
    parent_pid: int | None = None  # drain when this process goes away
    error_tracebacks: bool = config.ERROR_TRACEBACKS.default  # in answers and results

    @classmethod
    def from_launch(cls, launch: LaunchEnv) -> WorkerSettings:
        """The settings a launcher gave; the defaults where it gave none."""
        if launch.function is None:
            name = config.FUNCTION.name
            raise config.ConfigError(name, f"{name} is not set: a launcher names the function")
        return cls(
            function=launch.function,
            worker_id=launch.worker_id or uuid.uuid4().hex[:12],
            nats_url=launch.nats_url or config.NATS_URL.default,
            controller_id=launch.controller_id or "",
            host=launch.host or socket.gethostname(),
            code_dir=launch.code_dir or config.CODE_DIR.default,
            heartbeat=config.HEARTBEAT.default if launch.heartbeat is None else launch.heartbeat,
            parent_pid=launch.parent_pid,
            error_tracebacks=(
                config.ERROR_TRACEBACKS.default
                if launch.error_tracebacks is None
                else launch.error_tracebacks
            ),
        )

    @classmethod
    def from_env(cls, env: config.Env | None = None) -> WorkerSettings:
        return cls.from_launch(LaunchEnv.from_env(env))


def worker_key(function: str, worker_id: str) -> str:
    return f"{function}.{worker_id}"


class Serving:
    """Base of the handler and executor workers: registry entry, heartbeats, stop requests."""

    def __init__(self, nc: NATS, spec: FunctionSpec, settings: WorkerSettings) -> None:
        self.nc = nc
        self.spec = spec
        self.settings = settings
        self.served = 0
        self.startup: dict[str, float] = {}  # cold-start phases, seconds
        self.figures = WorkerFigures()  # counted here, sent in heartbeats (controller.figures)
        self._stop = anyio.Event()
        self._registry: KeyValue | None = None
        self._key = worker_key(spec.name, settings.worker_id)

    def stop(self) -> None:
        """Begin a graceful drain: take no new work, finish what is running, then return."""
        self._stop.set()

    def load(self) -> dict[str, Any]:
        """Per-kind figures for the heartbeat: at least ``inflight`` and ``idle_for``."""
        raise NotImplementedError

    def _info(self, state: str) -> bytes:
        return msgpack.packb(  # type: ignore[no-any-return]
            {
                "id": self.settings.worker_id,
                "function": self.spec.name,
                "kind": self.spec.kind,
                "version": self.spec.version,
                "controller": self.settings.controller_id,
                "host": self.settings.host or socket.gethostname(),
                "pid": os.getpid(),
                "state": state,
                "served": self.served,
                "startup": {k: round(v, 4) for k, v in self.startup.items()},
                **self.load(),
                "figures": self.figures.snapshot(),
            }
        )

    async def announce(self, state: str) -> None:
        if self._registry is None:
            self._registry = await kv(self.nc.jetstream(), protocol.WORKERS_BUCKET)
        await self._registry.put(self._key, self._info(state))

    async def withdraw(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                if self._registry is not None:
                    # The last figures first (heartbeats stop while draining): the
                    # controller keeps them in its totals once the entry is gone.
                    await self._registry.put(self._key, self._info("draining"))
                    await self._registry.delete(self._key)
            except Exception as e:  # the entry expires on its own anyway
                log.debug("deregistering %s: %s", self._key, e)

    async def heartbeats(self) -> None:
        while True:
            await anyio.sleep(self.settings.heartbeat)
            if self.settings.parent_pid and os.getppid() != self.settings.parent_pid:
                if not self.nc.is_connected:
                    # Orphaned and cut off: nothing can be acknowledged any more, and
                    # whatever is unacknowledged is redelivered to other workers.
                    log.warning("launcher gone and NATS unreachable; exiting")
                    os._exit(0)
                if not self._stop.is_set():
                    log.warning("launcher process went away; draining")
                self.stop()
            if not self._stop.is_set():
                try:
                    await self.announce("ready")
                except Exception as e:
                    log.warning("heartbeat failed: %s", e)

    async def listen_for_stop(self) -> Any:
        async def on_stop(msg: Msg) -> None:
            self.stop()
            if msg.reply:
                await self.nc.publish(msg.reply, b"draining")

        return await self.nc.subscribe(
            protocol.worker_stop_subject(self.settings.worker_id), cb=on_stop
        )


def idle_for(busy: int, idle_since: float) -> float:
    return 0.0 if busy else time.monotonic() - idle_since
