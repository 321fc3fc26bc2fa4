"""Fixtures: a real nats-server with JetStream per test, and a controller with process workers."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import msgpack
import pytest

from controller import Controller, ControllerSettings, EmbeddedNats, ProcessLauncher, deploy_file
from runtime.wire import protocol
from runtime.wire.connection import connect, kv
from runtime.wire.kvwatch import Change, Follower, listing
from tests.storage.conftest import S3Server, s3_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from nats.aio.client import Client as NATS

__all__ = ["S3Server", "s3_server"]  # the real S3 server fixture, for tests outside storage/

FNS = Path(__file__).parent / "fns"
FUNCTIONS = Path(__file__).parent.parent / "functions"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # nats-py is asyncio-only


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A fresh nats-server with JetStream on a free port, storing under tmp_path."""
    server = EmbeddedNats(tmp_path / "nats", port=0).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[NATS]:
    conn = await connect(nats_server.url, name="test")
    yield conn
    await conn.close()


# Short heartbeats and ticks keep the tests quick; the behaviour is the production code's.
FAST = {"SHOAL_HEARTBEAT": "0.2"}


@dataclass
class Cluster:
    url: str
    nc: NATS
    controller: Controller
    launcher: ProcessLauncher

    async def deploy(self, path: Path) -> list[str]:
        return [s.name for s in await deploy_file(self.nc, path)]


def controller_settings(**overrides: Any) -> ControllerSettings:
    defaults: dict[str, Any] = {
        "tick": 0.1,
        "heartbeat": 0.2,
        "stale_after": 1.5,
        "worker_env": FAST,
        "calibrate": False,  # the data-plane tests calibrate where they need it
    }
    defaults.update(overrides)
    return ControllerSettings(**defaults)


@pytest.fixture
async def cluster(
    nats_server: EmbeddedNats, nc: NATS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Cluster]:
    monkeypatch.setenv("SHOAL_NATS_URL", nats_server.url)
    async with ProcessLauncher(code_dir=tmp_path / "code", stop_grace=15) as launcher:
        controller = Controller(nc, launcher, controller_settings())
        async with anyio.create_task_group() as tg:
            await tg.start(controller.run)
            yield Cluster(nats_server.url, nc, controller, launcher)
            tg.cancel_scope.cancel()


async def workers_of(nc: NATS, function: str) -> dict[str, dict[str, Any]]:
    """The registry's current entries for a function's workers."""
    bucket = await kv(nc.jetstream(), protocol.WORKERS_BUCKET)
    found = await listing(bucket, f"{function}.*")
    return {key: msgpack.unpackb(change.value) for key, change in found.items()}


async def wait_workers(
    nc: NATS, function: str, predicate: Any, timeout: float = 20.0
) -> dict[str, dict[str, Any]]:
    """Follow the registry until ``predicate(entries)`` holds; entries map key -> info.

    The predicate sees every state from the first complete listing on, one change at a time.
    """
    bucket = await kv(nc.jetstream(), protocol.WORKERS_BUCKET)
    entries: dict[str, dict[str, Any]] = {}
    held: list[dict[str, dict[str, Any]]] = []
    done = anyio.Event()

    def check() -> None:
        if not done.is_set() and predicate(entries):
            held.append(dict(entries))
            done.set()

    def on_change(change: Change) -> None:
        if change.deleted:
            entries.pop(change.key, None)
        else:
            entries[change.key] = msgpack.unpackb(change.value)
        if follower.caught_up:
            check()

    follower = Follower(bucket, on_change, keys=f"{function}.*")
    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            await tg.start(follower.run)
            check()
            await done.wait()
            tg.cancel_scope.cancel()
    return held[0]


__all__ += [
    "FNS",
    "FUNCTIONS",
    "Cluster",
    "controller_settings",
    "os",
    "wait_workers",
    "workers_of",
]


REPO = Path(__file__).parent.parent


def shoal(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    """The ``shoal`` command, as a subprocess of this checkout, against NATS at ``url``."""
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", *args],
        env={**os.environ, "PYTHONPATH": str(REPO), "SHOAL_NATS_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
