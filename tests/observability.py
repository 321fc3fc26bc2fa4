"""What the metrics and status-page tests share: a real Prometheus server, HTTP reads off the
event loop, a cluster whose controller serves its metrics, and skipping with a reason where
Prometheus or chromium are missing (.ci/run installs both, bounded, as it prepares Docker)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from controller import Controller, ProcessLauncher
from tests.conftest import controller_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from nats.aio.client import Client as NATS

CHROMIUM = "/usr/bin/chromium"
INSTALL = "Debian's `{}` package (.ci/run installs it: apt-get install -y prometheus chromium)"


def _why(tool: str) -> str:
    reason = os.environ.get("SHOAL_OBSERVABILITY_UNAVAILABLE")
    return f"no {tool}: {INSTALL.format(tool)}" + (f"; .ci/run: {reason}" if reason else "")


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip(_why("prometheus"))
    return found


def chromium_binary() -> str:
    found = shutil.which("chromium") or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if found is None:
        pytest.skip(_why("chromium"))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return bytes(r.read())


async def get(url: str) -> bytes:
    """GET off the event loop: the controller answering it runs on this loop."""
    return await anyio.to_thread.run_sync(_get, url)


async def poll(check: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Call ``check`` (async) until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await anyio.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


@dataclass
class Prometheus:
    """A Prometheus server scraping ``targets`` every second, with its own temp storage."""

    binary: str
    home: Path
    targets: list[str]
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: Any = None  # its stderr, a file

    def start(self) -> Prometheus:
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: shoal\n"
            f"    static_configs: [{{targets: {json.dumps(self.targets)}}}]\n"
        )
        self.port = free_port()
        self.log = open(self.home / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.home / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self, timeout: float = 30.0) -> None:
        async def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                log = (self.home / "prometheus.log").read_text()
                raise AssertionError(f"prometheus exited ({self.proc.returncode}):\n{log}")
            try:
                return b"Ready" in await get(f"{self.url}/-/ready")
            except OSError:
                return False

        await poll(up, timeout, "prometheus ready")

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (Prometheus's HTTP API)."""
        q = urllib.parse.urlencode({"query": expr})
        answer = json.loads(await get(f"{self.url}/api/v1/query?{q}"))
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    async def value(self, expr: str) -> float | None:
        """The single value of ``expr`` now, or None when it has no result."""
        result = await self.query(expr)
        return float(result[0]["value"][1]) if result else None

    async def fresh(self, selector: str, after: float) -> float | None:
        """The sum of ``selector``'s series once Prometheus holds samples of them scraped
        after the Unix time ``after``; None until then."""
        stamp = await self.value(f"min(timestamp({selector}))")
        return await self.value(f"sum({selector})") if stamp is not None and stamp > after else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log is not None:
            self.log.close()


@dataclass
class Observed:
    """A controller serving its metrics, with its process launcher."""

    nc: NATS
    controller: Controller
    launcher: ProcessLauncher

    @property
    def url(self) -> str:
        assert self.controller.metrics is not None and self.controller.metrics.url
        return self.controller.metrics.url

    @property
    def target(self) -> str:
        return urllib.parse.urlparse(self.url).netloc

    async def scrape(self) -> str:
        return (await get(self.url + "metrics")).decode()


@asynccontextmanager
async def observed_cluster(
    nc: NATS, tmp_path: Path, controller_id: str = "ctl-test", addr: str = "127.0.0.1:0"
) -> AsyncIterator[Observed]:
    """A controller with its metrics on ``addr`` (port 0: a free one), process workers."""
    settings = controller_settings(controller_id=controller_id, metrics_addr=addr)
    async with ProcessLauncher(code_dir=tmp_path / f"code-{controller_id}", stop_grace=15) as la:
        controller = Controller(nc, la, settings)
        async with anyio.create_task_group() as tg:
            await tg.start(controller.run)
            yield Observed(nc, controller, la)
            tg.cancel_scope.cancel()


def sample_value(text: str, name: str, **labels: str) -> float | None:
    """One sample's value in Prometheus text, by name and (some of its) labels."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None
