"""Fixtures for the container launcher: a real Docker engine, the shoal-handler image, and a
controller whose workers are containers on the host network (so they reach the test's
nats-server on 127.0.0.1).

The tests skip only when no engine can be had, and say why and what to run. A missing image
is built (docker/build.sh); where .ci/run already tried to prepare Docker and failed, its
reason (``SHOAL_DOCKER_UNAVAILABLE``) is the skip's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from controller import Controller, DockerLauncher, EmbeddedNats, deploy_file
from controller.docker_args import LABEL_CONTROLLER, LABEL_WORKER, _sdk
from tests.conftest import controller_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from nats.aio.client import Client as NATS

NO_SDK = "the docker SDK is not installed: pip install 'docker>=7'"
docker: Any
try:  # by name: the repository's docker/ folder (build scripts) is not the SDK
    docker = _sdk("docker")
except ModuleNotFoundError:
    docker = None

REPO = Path(__file__).resolve().parents[2]
FNS = Path(__file__).parent / "fns.py"
IMAGE = "shoal-handler"
# Why .ci/run could not prepare Docker (no root, no engine in this sandbox, a failed build).
UNAVAILABLE = os.environ.get("SHOAL_DOCKER_UNAVAILABLE", "")
START_ENGINE = "run docker/ensure-engine.sh (installs docker.io and starts dockerd; needs root)"
BUILD_TIMEOUT = 1800.0


def engine_unreachable() -> str | None:
    """Why the engine cannot be reached, asked with a plain socket: the SDK leaks its socket
    when the connection is refused, which the warnings-as-errors setting turns into a failure."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return None  # a TCP engine: let the SDK try
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(host.removeprefix("unix://"))
        except OSError as e:
            return str(e)
    return None


def compose_image(service: str) -> str:
    """The image compose.yaml gives a service: for nats and s3, the upstream names that
    docker/build.sh also gives its stand-ins (`docker/build.sh standins`)."""
    lines = (REPO / "compose.yaml").read_text().splitlines()
    start = lines.index(f"  {service}:")
    for line in lines[start + 1 :]:
        if line.strip().startswith("image:"):
            return line.split("image:", 1)[1].split("#")[0].strip()
    raise AssertionError(f"compose.yaml gives {service} no image")


# docker/build.sh's name for an image: the stand-ins go by the upstream repository's.
BUILD_NAMES = {"nats": "nats", "chrislusf/seaweedfs": "weed", "prom/prometheus": "prometheus"}


def ensure_images(client: Any, *images: str) -> None:
    """Build the missing ``images`` with docker/build.sh (a failed build fails the test);
    skip instead where .ci/run already failed to prepare them, with its reason."""
    missing = []
    for image in images:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            missing.append(image)
    if not missing:
        return
    if UNAVAILABLE:
        pytest.skip(f"images {', '.join(missing)} missing: {UNAVAILABLE}")
    names = [BUILD_NAMES.get(i.split(":")[0], i.removeprefix("shoal-")) for i in missing]
    built = subprocess.run(
        [str(REPO / "docker" / "build.sh"), *names],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    if built.returncode != 0:
        output = (built.stdout + built.stderr)[-3000:]
        pytest.fail(f"docker/build.sh {' '.join(names)} failed ({built.returncode}):\n{output}")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    if docker is None:
        pytest.skip(NO_SDK)
    reason = engine_unreachable()
    if reason:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        why = f"; .ci/run: {UNAVAILABLE}" if UNAVAILABLE else ""
        pytest.skip(f"no Docker engine at {host} ({reason}{why}): {START_ENGINE}")
    client = docker.from_env()
    try:
        ensure_images(client, IMAGE)
        yield client
    finally:
        client.close()


# The working tree's code over the image's copy: the image supplies the dependencies, the
# tests exercise the code under test.
SOURCE = {str(REPO / d): {"bind": f"/app/{d}", "mode": "ro"} for d in ("runtime", "storage")}


@dataclass
class DockerCluster:
    nc: NATS
    controller: Controller
    launcher: DockerLauncher
    client: Any

    def containers(self) -> list[Any]:
        return list(
            self.client.containers.list(
                filters={"label": [LABEL_WORKER, f"{LABEL_CONTROLLER}={self.controller.id}"]}
            )
        )


@asynccontextmanager
async def docker_cluster(
    nc: NATS, client: Any, controller_id: str, **launcher_options: Any
) -> AsyncIterator[DockerCluster]:
    # Containers report exits as events; heartbeats only decide staleness, which under a
    # loaded machine (image builds beside the tests) can lag well past the 1.5 s default here.
    settings = controller_settings(controller_id=controller_id, stale_after=5.0)
    launcher = DockerLauncher(
        controller_id=controller_id,
        client=client,
        volumes=SOURCE,
        stop_grace=5,
        **launcher_options,
    )
    async with launcher:
        controller = Controller(nc, launcher, settings)
        async with anyio.create_task_group() as tg:
            await tg.start(controller.run)
            yield DockerCluster(nc, controller, launcher, client)
            tg.cancel_scope.cancel()


@pytest.fixture
def controller_id(docker_client: Any) -> Iterator[str]:
    cid = "test-" + uuid.uuid4().hex[:8]
    yield cid
    # sparse: no inspection of each, which fails for a container removed meanwhile.
    for c in docker_client.containers.list(
        all=True, sparse=True, filters={"label": f"{LABEL_CONTROLLER}={cid}"}
    ):
        try:
            c.remove(force=True)
        except docker.errors.APIError:
            pass


@pytest.fixture
async def dcluster(
    nats_server: EmbeddedNats,
    nc: NATS,
    docker_client: Any,
    controller_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[DockerCluster]:
    monkeypatch.setenv("SHOAL_NATS_URL", nats_server.url)
    async with docker_cluster(nc, docker_client, controller_id) as cluster:
        await deploy_file(nc, FNS)
        yield cluster
