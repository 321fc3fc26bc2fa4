"""The template process (a "zygote"): Python with Shoal, the NATS client and numpy imported once,
from which a process launcher forks workers instead of starting ``python -m runtime.worker``.

``python -m runtime.worker.template FD [MODULE...]`` imports what every worker imports, then
the modules named (an engine's, :class:`runtime.launch.Preload`: a template for executors), then
serves fork requests on ``FD``, its end of a ``SOCK_SEQPACKET`` socket pair with the launcher.
It runs no event loop and no thread of its own (an engine's import may leave one waiting),
so forking it is safe. One msgpack map per
message (:mod:`runtime.launch` names the keys):

- to the launcher, once imported: ``{"ready": pid, "threads": n, "added": k}`` (the native
  threads the imports left running, ``k`` of them started by importing the modules named;
  forking is safe with none but the main one, with OpenBLAS's pool, which stops itself
  around a fork, and with threads known to wait idle, which the launcher judges); or, if one
  of the modules named cannot be imported, ``{"unusable": "why"}``, and this process exits;
- from the launcher: ``{"fork": n, "env": {...}}``; the answer: ``{"forked": n, "pid": pid}``
  with the child's pidfd attached (``SCM_RIGHTS``), so the launcher can signal that very
  process and never another that reused its pid; or ``{"failed": n, "error": "..."}``;
- to the launcher, when a child exits (this process reaps it): ``{"exited": pid, "code": c}``,
  ``c`` negative for a signal, as :attr:`subprocess.Popen.returncode`.

A forked child starts a session of its own, takes the request's environment as its whole
environment, and runs :func:`runtime.worker.main.main`, the code path of
``python -m runtime.worker``; it inherits stdin, stdout and stderr from this process, which
inherits them from the launcher, as a spawned worker would. When the launcher's end closes
(it stopped, or died) this process exits; its workers then see their parent gone and drain.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import importlib
import os
import selectors
import signal
import socket
import sys
import traceback
from typing import Any, NoReturn

# What every worker imports, imported once here. No module here starts a thread at import.
import anyio._backends._asyncio
import anyio._core._signals
import anyio.to_thread  # noqa: F401
import msgpack
import numpy  # noqa: F401

from runtime.launch import TEMPLATE_MESSAGE_MAX as MESSAGE_MAX
from runtime.worker import main as worker

__all__ = ["main"]

PR_SET_NAME = 15  # prctl(2)


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.setblocking(True)
    modules, sys.argv = sys.argv[2:], sys.argv[:1]
    before = _threads()
    try:
        for name in modules:
            importlib.import_module(name)
    except Exception as e:  # not installed, or broken: the launcher spawns those workers
        sock.send(msgpack.packb({"unusable": f"cannot import {name}: {e!r}"}))
        return
    gc.freeze()  # what is imported stays out of the children's collections: shared pages stay
    Template(sock).run(added=_threads() - before)


def _threads() -> int:
    return len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1


class Template:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.selector = selectors.EpollSelector()  # Linux: pidfds are Linux's too
        self.selector.register(sock, selectors.EVENT_READ)
        self.children: dict[int, int] = {}  # pid -> pidfd

    def run(self, added: int = 0) -> None:
        if not self._send({"ready": os.getpid(), "threads": _threads(), "added": added}):
            return
        while True:
            for key, _ in self.selector.select():
                if key.fileobj is self.sock:
                    if not self._request():
                        return  # the launcher closed its end: stop forking
                elif not self._reap(key.data):
                    return

    def _send(self, message: dict[str, Any], fds: list[int] | None = None) -> bool:
        try:
            if fds:
                socket.send_fds(self.sock, [msgpack.packb(message)], fds)
            else:
                self.sock.send(msgpack.packb(message))
        except OSError:  # the launcher is gone
            return False
        return True

    def _request(self) -> bool:
        try:
            data = self.sock.recv(MESSAGE_MAX)
        except OSError:
            return False
        if not data:
            return False
        request = msgpack.unpackb(data)
        try:
            pid = self._fork(request["env"])
        except OSError as e:
            return self._send({"failed": request["fork"], "error": str(e)})
        return self._send({"forked": request["fork"], "pid": pid}, [self.children[pid]])

    def _fork(self, env: dict[str, str]) -> int:
        # Fds the child must not keep: the launcher's socket, the selector, other children.
        inherited = [self.sock.fileno(), self.selector.fileno(), *self.children.values()]
        pid = os.fork()
        if pid == 0:
            _child(env, inherited)
        pidfd = os.pidfd_open(pid)  # before any reaping: it is this very child
        self.children[pid] = pidfd
        self.selector.register(pidfd, selectors.EVENT_READ, pid)
        return pid

    def _reap(self, pid: int) -> bool:
        pidfd = self.children.pop(pid)
        self.selector.unregister(pidfd)
        _, status = os.waitpid(pid, 0)
        os.close(pidfd)  # after the report is ready: the pid is free from here
        return self._send({"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def _child(env: dict[str, str], inherited: list[int]) -> NoReturn:
    code = 1
    try:
        for fd in inherited:
            os.close(fd)
        os.setsid()  # as a spawned worker's start_new_session: Ctrl-C reaches the launcher only
        _name_process(b"shoal-worker")
        os.environ.clear()
        os.environ.update(env)
        if "numpy.random" in sys.modules:  # numpy does not reseed its global state at fork
            sys.modules["numpy.random"].seed()
        code = _run_worker()
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def _name_process(name: bytes) -> None:
    """The name ``ps -o comm`` and ``top`` show (its command line stays the template's)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _run_worker() -> int:
    """:func:`runtime.worker.main.main` and what the interpreter does after it: the exit
    status, a traceback for an uncaught error, atexit handlers, flushing."""
    code = 0
    try:
        worker.main()
    except SystemExit as e:
        code = _exit_status(e.code)
    except KeyboardInterrupt:
        _flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)  # as the interpreter exits on one
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    _flush()
    return code


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    main()
