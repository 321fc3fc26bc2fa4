"""DockerLauncher against a real engine: workers are shoal-handler containers."""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from controller import deploy_file
from controller.docker_args import LABEL_CONTROLLER, LABEL_FUNCTION, LABEL_WORKER
from controller.docker_launcher import DockerLauncher
from controller.launcher import LaunchRequest
from runtime import Client
from runtime.bundles.store import kv_limit
from tests.conftest import wait_workers
from tests.test_bundles import BIG, write

from .conftest import FNS, DockerCluster, docker_cluster

if TYPE_CHECKING:
    from pathlib import Path

    from nats.aio.client import Client as NATS

pytestmark = pytest.mark.anyio


async def until(predicate: Any, timeout: float = 20.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 (the launcher's state, from outside)
            await anyio.sleep(0.05)


async def test_serves_from_a_container_and_reuses_it(dcluster: DockerCluster) -> None:
    client = Client(dcluster.nc)
    first = await client.call("whoami", {"n": 1}, timeout=60)
    assert first["echo"] == {"n": 1}
    assert first["in_container"] is True
    wid = first["worker"]
    assert dcluster.launcher.running() == {wid}
    [container] = dcluster.containers()
    assert container.labels[LABEL_WORKER] == wid
    assert container.labels[LABEL_FUNCTION] == "whoami"
    assert container.labels[LABEL_CONTROLLER] == dcluster.controller.id
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert env["SHOAL_FUNCTION"] == "whoami" and env["SHOAL_WORKER_ID"] == wid
    assert "SHOAL_PARENT_PID" not in env  # a container outlives no process of ours
    for n in range(2, 5):  # warm: the same container answers
        assert (await client.call("whoami", {"n": n}, timeout=10))["worker"] == wid
    assert len(dcluster.containers()) == 1


async def test_a_container_loads_a_bundle_from_the_object_store(
    dcluster: DockerCluster, tmp_path: Path
) -> None:
    """Containers load deployed code as process workers do: privately, any size."""
    weights = os.urandom(kv_limit(dcluster.nc) + 100_000)
    files = {"model.py": BIG, "helpers.py": "TAG = 'boxed'\n", "weights.bin": weights}
    files["storage.py"] = "LABEL = 'a helper that shares a name with Shoal storage'\n"
    await deploy_file(dcluster.nc, write(tmp_path / "big", files))
    got = await Client(dcluster.nc).call("weights", {}, timeout=90)
    assert got == {"sha": hashlib.sha256(weights).hexdigest(), "size": len(weights), "tag": "boxed"}
    [container] = dcluster.containers()
    assert container.labels[LABEL_FUNCTION] == "weights"


async def test_reaps_idle_container(dcluster: DockerCluster) -> None:
    assert await Client(dcluster.nc).call("brief", {"x": 1}, timeout=60) == {"x": 1}
    assert len(dcluster.launcher.running()) == 1
    await until(lambda: not dcluster.launcher.running())  # drained, exited, reported
    await until(lambda: dcluster.containers() == [], timeout=10)  # auto-removed


async def test_replaces_a_container_that_dies(dcluster: DockerCluster) -> None:
    nc = dcluster.nc
    await deploy_file(nc, FNS.with_name("fns_steady.py"))
    entries = await wait_workers(nc, "steady", lambda e: len(e) == 1, timeout=60)
    [old] = [e["id"] for e in entries.values()]
    dcluster.client.containers.get(dcluster.launcher.container_id(old)).kill()
    await until(lambda: old not in dcluster.launcher.running())
    entries = await wait_workers(
        nc, "steady", lambda e: len(e) == 1 and old not in {w["id"] for w in e.values()}, 60
    )
    [new] = [e["id"] for e in entries.values()]
    assert await Client(nc).call("steady", {}, timeout=10) == new


async def test_restarted_controller_adopts_its_containers(
    nats_server: Any, nc: NATS, docker_client: Any, controller_id: str, monkeypatch: Any
) -> None:
    monkeypatch.setenv("SHOAL_NATS_URL", nats_server.url)
    async with docker_cluster(nc, docker_client, controller_id, stop_on_exit=False) as cluster:
        await deploy_file(nc, FNS)
        wid = (await Client(nc).call("whoami", {}, timeout=60))["worker"]
        [container] = cluster.containers()
    # The controller is gone; its worker keeps running.
    container.reload()
    assert container.status == "running"
    async with docker_cluster(nc, docker_client, controller_id) as cluster:
        assert cluster.launcher.adopted == {wid}
        assert cluster.launcher.running() == {wid}
        for _ in range(3):
            assert (await Client(nc).call("whoami", {}, timeout=10))["worker"] == wid
        await anyio.sleep(1.0)  # a few reconcile passes: nothing duplicated
        assert [c.id for c in cluster.containers()] == [container.id]
        # An adopted worker's exit is reported like any other.
        docker_client.api.kill(container.id)
        await until(lambda: wid not in cluster.launcher.running())  # (the policy may start another)


async def test_auto_settings_need_the_controllers_own_container(docker_client: Any) -> None:
    """Settings "auto" (network, compose project, volumes) read the controller's own container: a
    process in no container of this engine is told so when the launcher starts."""
    launcher = DockerLauncher(
        controller_id="c-auto",
        client=docker_client,
        network="auto",
        compose_project="auto",
        self_container="shoal-no-such-container",
    )
    with pytest.raises(RuntimeError, match="runs in no container of this engine"):
        async with launcher:
            pass


async def test_a_missing_image_is_named_with_how_to_build_it(
    docker_client: Any, controller_id: str
) -> None:
    launcher = DockerLauncher(
        controller_id=controller_id,
        client=docker_client,
        images={"function": "shoal-test-no-such-image"},
    )
    async with launcher:
        with pytest.raises(RuntimeError, match="image shoal-test-no-such-image is not on"):
            await launcher.start(LaunchRequest("echo", "w-missing", "v1", {}))
        assert launcher.running() == set()
