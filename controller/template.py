"""The launcher's side of the template process (``runtime.worker.template``): workers forked from
an interpreter that has already imported Shoal start in milliseconds instead of starting Python.

:class:`Template` starts the template process, asks it to fork workers and follows their
exits; each worker is a :class:`ForkedWorker`, which a process launcher treats as it treats a
spawned :class:`anyio.abc.Process`: ``pid``, ``returncode``, ``send_signal``, ``kill`` and
``wait``. Signals go through the worker's pidfd, which names that process even after its pid
is reused. The exit status comes from the template, which reaps its children; if the template
itself dies, the launcher still sees each worker exit through its pidfd (status unknown:
None), and later workers are spawned as before.

A template started with a :class:`~runtime.launch.Preload` also imports an engine (a template
for executors). If the engine cannot be imported, or its import leaves more native threads
running than it is known to leave idle (forking would copy whatever lock such a thread
holds), the template is not used: those workers are spawned, with one warning.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

import anyio
import msgpack

from runtime import config
from runtime.launch import TEMPLATE_MESSAGE_MAX, TEMPLATE_MODULE, LaunchEnv, Preload

if TYPE_CHECKING:
    from collections.abc import Mapping

    from anyio.abc import Process, TaskGroup

log = logging.getLogger("shoal.launcher")

READY_PATIENCE = 60.0  # seconds a launch waits for the template to finish importing
FORK_PATIENCE = 10.0  # seconds a fork request may take before the template counts as broken
# Variables read when the template imported its modules (the interpreter's, native thread
# pools', the dynamic linker's): a worker whose environment sets them otherwise is spawned.
IMPORT_TIME = ("PYTHON", "LD_", "OMP_", "OPENBLAS_", "MKL_", "MALLOC_", "GOTO_")
# What the template's environment leaves out: credentials (the controller's, the workers').
SECRETS = frozenset(
    [
        *config.NATS_AUTH_VARS,
        *(v.name for v in config.WORKER_NATS.values()),
        *(name for name, v in config.VARIABLES.items() if v.secret),
    ]
)


class ForkedWorker:
    """A worker process forked by the template: the part of a Process a launcher uses."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd: int | None = pidfd  # None once it exited
        self._exited = anyio.Event()

    def send_signal(self, sig: int) -> None:
        if self._exited.is_set():
            return
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
        except ProcessLookupError:
            pass  # exited; its report is on its way

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    async def wait(self) -> int | None:
        await self._exited.wait()
        return self.returncode

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    def _exit(self, code: int | None) -> None:
        if self._exited.is_set():
            return
        self.returncode = code
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._exited.set()

    async def _watch_pidfd(self) -> None:
        """Without the template's reports: the pidfd turns readable when the process ends.
        Shielded, as the template's reader."""
        with anyio.CancelScope(shield=True):
            if self._pidfd is not None and not self._exited.is_set():
                await anyio.wait_readable(self._pidfd)
        self._exit(None)


class Template:
    """A template process, started with the launcher's environment, and the workers it forked;
    with ``preload``, one that has imported that engine too."""

    def __init__(self, preload: Preload | None = None) -> None:
        self.preload = preload
        self.pid: int | None = None
        self.threads: int | None = None  # native threads it runs, once ready
        self._proc: Process | None = None
        self._sock: socket.socket | None = None
        self._base: dict[str, str] = {}  # the environment it was started with
        self._ready = anyio.Event()
        self._alive = False
        self._ids = itertools.count(1)
        self._waiting: dict[int, Any] = {}  # request id -> its reply's stream
        self._workers: dict[int, ForkedWorker] = {}
        self._lock = anyio.Lock()
        self._tg: TaskGroup | None = None

    async def start(self, tg: TaskGroup) -> None:
        """Start the process; it reports ready once its imports are done (fork waits for it)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # No secret: every worker's memory starts as a copy of the template's, and a worker
        # that has credentials of its own must not find the controller's there.
        inherited = dict(os.environ)  # as a spawned worker inherits it, less the secrets
        self._base = {k: v for k, v in inherited.items() if k not in SECRETS}
        try:
            self._proc = await anyio.open_process(
                [sys.executable, "-m", TEMPLATE_MODULE, str(theirs.fileno()), *self._modules],
                env=self._base,
                stdin=None,
                stdout=None,
                stderr=None,
                pass_fds=[theirs.fileno()],
                start_new_session=True,  # as a spawned worker: Ctrl-C reaches the launcher only
            )
        except BaseException:
            ours.close()
            self._ready.set()  # not alive: nothing waits for it
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock, self._tg, self._alive = ours, tg, True
        self.pid = self._proc.pid
        tg.start_soon(self._read)

    async def ready(self) -> bool:
        """Wait until it has imported what workers need; False if it failed instead."""
        with anyio.move_on_after(READY_PATIENCE):
            await self._ready.wait()
        return self._alive and self._ready.is_set()

    def usable(self, env: Mapping[str, str]) -> bool:
        """Whether a worker with ``env`` can be forked from it: it runs, and ``env`` agrees
        with its own on what was read at import time."""
        if not self._alive:
            return False
        keys = {k for k in (*env, *self._base) if k.startswith(IMPORT_TIME)}
        return all(env.get(k) == self._base.get(k) for k in keys)

    async def fork(self, env: Mapping[str, str]) -> ForkedWorker | None:
        """Fork a worker with ``env`` as its environment; None if the template cannot."""
        if not await self.ready():
            return None
        env = {**env, **LaunchEnv(parent_pid=self.pid).to_env()}  # it drains without us
        async with self._lock:
            n = next(self._ids)
            send, receive = anyio.create_memory_object_stream[Any](1)
            self._waiting[n] = send
            reply: Any = None
            with send, receive, anyio.move_on_after(FORK_PATIENCE) as waited:
                try:
                    await self._send({"fork": n, "env": env})
                    reply = await receive.receive()
                except (OSError, anyio.EndOfStream) as e:
                    log.warning("%s cannot fork: %s", self._name, e)
            self._waiting.pop(n, None)
        if waited.cancelled_caught:
            log.warning("%s did not fork within %gs", self._name, FORK_PATIENCE)
            self._stop()
        if isinstance(reply, str):  # the fork itself failed (no memory, pid limit)
            log.warning("%s could not fork: %s", self._name, reply)
        return reply if isinstance(reply, ForkedWorker) else None

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._sock is not None
        data = msgpack.packb(message)
        while True:
            try:
                self._sock.send(data)
                return
            except BlockingIOError:
                await anyio.wait_writable(self._sock)

    async def _read(self) -> None:
        # Shielded: a launcher being cancelled (Ctrl-C) still stops its workers, and waiting
        # for a forked one is waiting for this to read its exit. It ends when the template
        # exits, which the launcher's shutdown sees to (it kills a template that lingers).
        with anyio.CancelScope(shield=True):
            await self._read_messages()

    async def _read_messages(self) -> None:
        assert self._sock is not None
        try:
            while True:
                await anyio.wait_readable(self._sock)
                try:
                    data, fds, _, _ = socket.recv_fds(self._sock, TEMPLATE_MESSAGE_MAX, 1)
                except BlockingIOError:
                    continue
                except OSError:
                    data, fds = b"", []
                if not data:
                    break
                self._dispatch(msgpack.unpackb(data), fds)
        finally:
            self._lost()
            self._sock.close()

    def _dispatch(self, message: dict[str, Any], fds: list[int]) -> None:
        if "exited" in message:
            worker = self._workers.pop(message["exited"], None)
            if worker is not None:
                worker._exit(message["code"])
        elif "forked" in message:
            if not fds:  # its pidfd did not come (out of file descriptors): not one of ours
                os.kill(message["pid"], signal.SIGKILL)  # just forked: still that child
                self._reply(message["forked"], "no pidfd came with the fork")
                return
            worker = ForkedWorker(message["pid"], fds[0])
            self._workers[worker.pid] = worker
            if not self._reply(message["forked"], worker):
                worker.kill()  # its launch gave up meanwhile: nobody would stop it
        elif "failed" in message:
            self._reply(message["failed"], message["error"])
        elif "ready" in message:
            self._on_ready(message.get("threads", 1), message.get("added", 0))
        elif "unusable" in message:
            log.warning("%s: its workers start as new interpreters", message["unusable"])
            self._stop()
            self._ready.set()

    @property
    def _modules(self) -> tuple[str, ...]:
        return self.preload.modules if self.preload is not None else ()

    @property
    def _name(self) -> str:
        engine = f" with {self.preload.engine}" if self.preload is not None else ""
        return f"the template process{engine}"

    def _on_ready(self, threads: int, added: int) -> None:
        self.threads = threads
        if threads > 1:
            log.debug("%s runs %d native threads", self._name, threads)
        known = self.preload.idle_threads if self.preload is not None else 0
        if added > known:
            log.warning(
                "importing %s started %d native threads (%d known idle): forking is not safe;"
                " its workers start as new interpreters",
                ", ".join(self._modules),
                added,
                known,
            )
            self._stop()
        self._ready.set()

    def _reply(self, n: int, reply: object) -> bool:
        waiter = self._waiting.pop(n, None)
        try:
            if waiter is not None:
                waiter.send_nowait(reply)
                return True
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.WouldBlock):
            pass
        return False

    def _lost(self) -> None:
        """The template is gone (or stopping): pending forks fail, and the workers it leaves
        are followed through their pidfds."""
        self._alive = False
        self._ready.set()
        for waiter in self._waiting.values():
            waiter.close()
        self._waiting.clear()
        if self._workers and self._tg is not None:
            log.warning("%s exited; following %d workers", self._name, len(self._workers))
            for worker in self._workers.values():
                self._tg.start_soon(worker._watch_pidfd)
        self._workers.clear()

    def _stop(self) -> None:
        self._alive = False
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()

    async def aclose(self, grace: float = 5.0) -> None:
        """Stop the template (its workers should have exited already): its socket closes, it
        exits; killed after ``grace`` seconds if it does not."""
        self._alive = False
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_WR)  # the template reads end of file
            except OSError:
                pass
        if self._proc is not None:
            with anyio.move_on_after(grace):
                await self._proc.wait()
            if self._proc.returncode is None:
                self._proc.kill()
                await self._proc.wait()
