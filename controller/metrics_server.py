"""The controller's HTTP address (``SHOAL_METRICS_ADDR``): Prometheus text at ``/metrics``, the
live status page at ``/`` (plain files from ``controller/web``, no build step, nothing from a
CDN) and its data at ``/api/status``.

A small HTTP/1.1 server on the controller's own event loop: every answer is computed where the
figures live, without threads or locks, and the connection is closed after it. An address that
cannot be bound (in use, say) costs one warning line; the controller runs on without it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import SocketAttribute

from . import metrics
from .figures import SAMPLE_EVERY

if TYPE_CHECKING:
    from anyio.abc import SocketStream

    from .controller import Controller

log = logging.getLogger("shoal.metrics")

WEB = Path(__file__).parent / "web"
PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/status.js": ("status.js", "text/javascript; charset=utf-8"),
    "/status.css": ("status.css", "text/css; charset=utf-8"),
}
REQUEST_LIMIT = 16 << 10  # bytes of request line and headers
READ_TIMEOUT = 10.0
DEAD_LETTERS_EVERY = 5.0  # seconds the page's list of dead letters is reused


def parse_addr(addr: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as a host and a port."""
    m = re.fullmatch(r"\[?([^\[\]]*?)\]?:(\d{1,5})", addr.strip())
    if m is None or int(m.group(2)) > 65535:
        raise ValueError(f"not host:port: {addr!r}")
    return m.group(1) or "0.0.0.0", int(m.group(2))


class MetricsServer:
    """Serves one controller's figures until cancelled."""

    def __init__(self, controller: Controller, addr: str) -> None:
        self.controller = controller
        self.addr = addr
        self.url: str | None = None  # once listening
        self._dead: dict[str, Any] = {"kept": 0, "recent": []}
        self._dead_at = -DEAD_LETTERS_EVERY
        self._no_client_warned = False

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        host, port = parse_addr(self.addr)
        try:
            listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        except OSError as e:
            log.warning(
                "metrics and status page not served: cannot listen on %s (%s); the cluster runs "
                "on (set SHOAL_METRICS_ADDR to another host:port, or off)",
                self.addr,
                e.strerror or e,
            )
            task_status.started()
            return
        bound = listener.listeners[0].extra(SocketAttribute.local_port)
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound}/"
        log.info("metrics on %smetrics, status page on %s", self.url, self.url)
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(self._sample)
            task_status.started()
            await listener.serve(self._handle, task_group=tg)

    async def _sample(self) -> None:
        figures = self.controller.figures
        while True:
            figures.forget_silent()
            figures.sample()
            await anyio.sleep(SAMPLE_EVERY)

    async def _handle(self, stream: SocketStream) -> None:
        # Nothing a client does (hanging up, sending garbage) may reach the controller.
        async with stream:
            try:
                with anyio.fail_after(READ_TIMEOUT):
                    head = await _read_head(stream)
                method, _, rest = head.partition(" ")
                path = rest.split(" ", 1)[0].split("?", 1)[0]
                try:
                    status, ctype, body = await self._answer(method, path)
                except Exception:
                    log.exception("answering %s %s failed", method, path)
                    status, ctype, body = "500 Internal Server Error", "text/plain", b"error\n"
                await _respond(stream, status, ctype, b"" if method == "HEAD" else body, len(body))
            except Exception as e:
                log.debug("metrics request dropped: %r", e)

    async def _answer(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if path == "/metrics":
            snap = await metrics.snapshot(self.controller)
            try:
                # Off the event loop: writing the text is the one part that takes CPU time
                # (about a millisecond for a few functions); the snapshot is a copy.
                body, ctype = await anyio.to_thread.run_sync(metrics.prometheus_text, snap)
            except ImportError:
                return self._no_client()
            return "200 OK", ctype, body
        if path == "/api/status":
            return "200 OK", "application/json", json.dumps(await self._status()).encode()
        page = PAGES.get(path)
        if page is None:
            return "404 Not Found", "text/plain", b"not found\n"
        data = await anyio.Path(WEB / page[0]).read_bytes()
        return "200 OK", page[1], data

    async def _status(self) -> Any:
        snap = await metrics.snapshot(self.controller)
        if time.monotonic() - self._dead_at >= DEAD_LETTERS_EVERY:
            self._dead = await metrics.recent_dead_letters(self.controller)
            self._dead_at = time.monotonic()
        figures = self.controller.figures
        history = {name: figures.series(name) for name in snap.kinds}
        return metrics.status(snap, history, self._dead)

    def _no_client(self) -> tuple[str, str, bytes]:
        if not self._no_client_warned:
            self._no_client_warned = True
            log.warning("/metrics needs prometheus-client: pip install 'shoal[observability]'")
        return (
            "503 Service Unavailable",
            "text/plain",
            b"prometheus-client is not installed: pip install 'shoal[observability]'\n",
        )


async def _read_head(stream: SocketStream) -> str:
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        data += await stream.receive()
        if len(data) > REQUEST_LIMIT:
            raise ValueError("request too large")
    return data.split(b"\r\n", 1)[0].decode("latin-1")


async def _respond(
    stream: SocketStream, status: str, ctype: str, body: bytes, length: int | None = None
) -> None:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n"
        "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
    await stream.send(head.encode("latin-1") + body)
