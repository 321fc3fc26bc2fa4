"""compose.yaml + compose.test.yaml (locally built nats and SeaweedFS images) serve an event
published from the host, end to end."""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from runtime import Client
from runtime.errors import FunctionNotFound
from runtime.nats_util import connect

from .conftest import REPO

pytestmark = pytest.mark.anyio

IMAGES = ("shoal-nats", "shoal-weed", "shoal-controller")
PORTS = (4222, 8222, 9000, 9001)


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def compose_stack(docker_client: Any) -> Iterator[str]:
    exe = shutil.which("docker-compose")
    base = [exe] if exe else ["docker", "compose"]
    if subprocess.run([*base, "version"], capture_output=True).returncode != 0:
        pytest.skip("neither docker-compose nor the compose plugin is installed")
    for image in IMAGES:
        try:
            docker_client.images.get(image)
        except Exception:
            pytest.skip(f"image {image} missing: run docker/build.sh")
    busy = [p for p in PORTS if _port_busy(p)]
    if busy:
        pytest.skip(f"ports {busy} are taken (another compose stack running?)")
    project = "shoaltest" + uuid.uuid4().hex[:6]
    cmd = [*base, "-p", project, "-f", "compose.yaml", "-f", "compose.test.yaml"]
    subprocess.run([*cmd, "up", "-d"], cwd=REPO, check=True, capture_output=True)
    try:
        yield "nats://127.0.0.1:4222"
    finally:
        subprocess.run([*cmd, "down", "-v", "-t", "5"], cwd=REPO, capture_output=True)


async def test_compose_serves_an_event_from_the_host(compose_stack: str) -> None:
    with anyio.fail_after(20):
        nc = await connect(compose_stack, name="compose-test")  # retries while NATS starts
    try:
        client = Client(nc)
        # The controller (`shoal up`) deploys ./functions once NATS answers it.
        with anyio.fail_after(60):
            while True:
                try:
                    answer = await client.call("echo", {"text": "hi"}, timeout=30)
                    break
                except FunctionNotFound:
                    await anyio.sleep(0.5)
        assert answer == {"text": "hi"}
        rid = await client.publish("echo", {"durable": True}, request_id="compose-1")
        assert (await client.wait_result(rid, timeout=30)).unwrap() == {"durable": True}
    finally:
        await nc.close()
