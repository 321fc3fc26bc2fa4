"""An object store in a container that the test owns, started with testcontainers: storage/
and a partitioned model's object channel against it, and a clear error once it stops.

The container is the SeaweedFS image compose.yaml names (its S3 API; where no registry can be
reached, the stand-in `docker/build.sh standins` tags under that name, with the upstream
entrypoint); any S3 image works the same way.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np
import pytest

from runtime.partition.dataplane import DataPlane
from runtime.wire import connection
from storage import AsyncObjectStore, ObjectStore, S3Settings, StorageUnavailable

from .conftest import compose_image, ensure_images

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.anyio

testcontainers = pytest.importorskip(
    "testcontainers.core.container", reason="testcontainers is not installed (test extra)"
)
S3_PORT = 8333
IMAGE = compose_image("s3")


@pytest.fixture
def s3_container(
    docker_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[S3Settings, Any]]:
    ensure_images(docker_client, IMAGE)
    # Ryuk, testcontainers' reaper, is an image from a registry: the fixture cleans up itself.
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.core.network import Network

    key, secret = "shoal-tc", secrets.token_hex(16)
    config = tmp_path / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "shoal",
                        "credentials": [{"accessKey": key, "secretKey": secret}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    config.chmod(0o644)
    with Network() as network:  # a user-defined bridge: published ports work without docker0
        container = (
            testcontainers.DockerContainer(IMAGE)
            .with_command(
                "server -dir=/tmp -ip.bind=0.0.0.0 -s3 -s3.port=8333 -s3.config=/etc/s3.json "
                "-master.volumeSizeLimitMB=64 -volume.max=100"
            )
            .with_volume_mapping(str(config), "/etc/s3.json", "ro")
            .with_network(network)
            .with_exposed_ports(S3_PORT)
        )
        container.start()
        try:
            endpoint = f"127.0.0.1:{container.get_exposed_port(S3_PORT)}"
            settings = S3Settings(
                endpoint=endpoint,
                access_key=key,
                secret_key=secret,
                bucket="tc-bucket",
                connect_timeout=1.0,
                read_timeout=10.0,
                max_retries=0,
            )
            _wait_ready(ObjectStore(settings))
            yield settings, container
        finally:
            container.stop()


def _wait_ready(store: ObjectStore, timeout: float = 60.0) -> None:
    """A real write proves the server is up (its S3 port opens before it can store)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            store.ensure_bucket()
            store.put_bytes("probe", b"ok")
            store.delete("probe")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_storage_round_trip_against_a_container(s3_container: tuple[S3Settings, Any]) -> None:
    settings, _ = s3_container
    store = ObjectStore(settings)
    data = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    ref = store.put_bytes(store.intermediate_key("tc", "run", "0", "1_0"), data)
    assert store.get_bytes(ref) == data  # checksum verified on read
    assert store.delete_prefix(store.intermediate_key("tc") + "/") == 1
    assert not store.exists(ref.key)


async def test_object_channel_through_the_container_then_it_stops(
    s3_container: tuple[S3Settings, Any], nats_server: Any
) -> None:
    settings, container = s3_container
    store = AsyncObjectStore.from_settings(settings)
    nc = await connection.connect(nats_server.url, name="tc-test")
    try:
        a, b = DataPlane(nc, "tc", "a", store), DataPlane(nc, "tc", "b", store)
        await a.start()
        await b.start()
        value = np.arange(500_000, dtype=np.float32)
        assert (await a.send("b", "r1", 0, 0, 1, value, channel="object")).objects == 1
        with anyio.fail_after(20):
            got = await b.receive(b.mailbox("r1", 1), 0, 0)
        assert np.array_equal(got, value)
        assert not await store.exists(a.object_prefix("r1") + "0/1_0")  # read, then deleted

        await anyio.to_thread.run_sync(container.get_wrapped_container().kill)
        with anyio.fail_after(20), pytest.raises(Exception, match="object store") as failed:
            await a.send("b", "r2", 0, 0, 1, value, channel="object")
        assert isinstance(failed.value.__cause__, StorageUnavailable)
    finally:
        await nc.close()
