"""What DockerLauncher asks the engine for (no engine needed): image, env, labels, limits."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from controller.docker_args import _network_of
from controller.docker_launcher import DockerLauncher, from_env
from controller.launcher import LaunchRequest
from runtime.wire.spec import FunctionSpec

from .conftest import NO_SDK, docker

if TYPE_CHECKING:
    from collections.abc import Iterator

needs_sdk = pytest.mark.skipif(docker is None, reason=NO_SDK)  # for DeviceRequest


@contextmanager
def made(**options: Any) -> Iterator[DockerLauncher]:
    """A launcher never entered (no engine): its exit streams are closed after use."""
    launcher = DockerLauncher(**options)
    try:
        yield launcher
    finally:
        launcher.exits.close()
        launcher._send.close()


def request(name: str = "embed", **env: str) -> LaunchRequest:
    return LaunchRequest(name, "w1", "v1", {"SHOAL_NATS_URL": "nats://nats:4222", **env})


def test_handler_container_on_the_host_network() -> None:
    with made(controller_id="c1") as launcher:
        args = launcher.run_kwargs(request(SHOAL_PARENT_PID="7"))
    assert args["image"] == "shoal-handler"
    assert args["network_mode"] == "host"
    assert args["labels"] == {
        "shoal.worker-id": "w1",
        "shoal.function": "embed",
        "shoal.controller": "c1",
        "shoal.kind": "function",
        "shoal.version": "v1",
    }
    env = args["environment"]
    assert env["SHOAL_FUNCTION"] == "embed" and env["SHOAL_WORKER_ID"] == "w1"
    assert env["SHOAL_NATS_URL"] == "nats://nats:4222"
    assert "SHOAL_PARENT_PID" not in env
    assert "device_requests" not in args and "mem_limit" not in args


@needs_sdk
def test_executor_image_gpus_and_memory_from_the_spec() -> None:
    spec = FunctionSpec(name="minilm", kind="executor", gpu=1, memory_mb=1024)
    with made(controller_id="c1", network="shoal-net", spec_of={"minilm": spec}.get) as launcher:
        args = launcher.run_kwargs(request("minilm"))
    assert args["image"] == "shoal-executor"
    assert args["network"] == "shoal-net" and "network_mode" not in args
    assert args["mem_limit"] == f"{1024 + launcher.memory_headroom_mb}m"
    [gpus] = args["device_requests"]
    assert gpus["Count"] == 1 and gpus["Capabilities"] == [["gpu"]]


@needs_sdk
def test_the_gpus_the_controller_gave_become_the_containers_devices() -> None:
    spec = FunctionSpec(name="minilm", kind="executor", gpu=1)
    with made(controller_id="c1", spec_of={"minilm": spec}.get) as launcher:
        args = launcher.run_kwargs(request("minilm", CUDA_VISIBLE_DEVICES="3"))
    [gpus] = args["device_requests"]
    assert gpus["DeviceIDs"] == ["3"] and not gpus.get("Count")
    assert "CUDA_VISIBLE_DEVICES" not in args["environment"]  # it sees that one as its 0


@needs_sdk
def test_request_env_overrides() -> None:
    with made(controller_id="c1", images={"executor": "my/exec:1"}) as launcher:
        args = launcher.run_kwargs(
            request(
                SHOAL_KIND="executor",
                SHOAL_GPUS="2",
                SHOAL_MEMORY_MB="300",
                SHOAL_NANO_CPUS="500000000",
            )
        )
        custom = launcher.run_kwargs(request(SHOAL_IMAGE="custom:tag"))["image"]
    assert args["image"] == "my/exec:1"
    assert args["mem_limit"] == "300m" and args["nano_cpus"] == 500_000_000
    assert args["device_requests"][0]["Count"] == 2
    assert custom == "custom:tag"


def test_partitioned_models_run_in_the_executor_image() -> None:
    spec = FunctionSpec(name="radixnet", partitions=8)
    plain = FunctionSpec(name="echo")
    specs = {"radixnet": spec, "echo": plain}
    with made(controller_id="c1", spec_of=specs.get) as launcher:
        assert launcher.run_kwargs(request("radixnet"))["image"] == "shoal-executor"
        assert launcher.run_kwargs(request("echo"))["image"] == "shoal-handler"


def test_a_partitioned_models_budget_limits_its_containers() -> None:
    spec = FunctionSpec(name="radixnet", partitions=8, worker_memory_mb=64)
    with made(controller_id="c1", spec_of={"radixnet": spec}.get) as launcher:
        args = launcher.run_kwargs(request("radixnet"))
        assert args["mem_limit"] == f"{64 + launcher.memory_headroom_mb}m"


def test_compose_project_labels_make_workers_orphans_of_the_project() -> None:
    """Under compose, a worker carries the project's labels and no service label: compose's
    `down --remove-orphans` then removes it. The engine must not auto-remove it (compose
    force-removes each orphan after killing it); the launcher removes exited ones itself."""
    with made(controller_id="c1", network="shoal_default", compose_project="shoal") as launcher:
        args = launcher.run_kwargs(request())
        adopt_filter = launcher._labels_filter()
    labels = args["labels"]
    assert labels["com.docker.compose.project"] == "shoal"
    assert labels["com.docker.compose.oneoff"] == "False"  # compose v1 lists by it
    assert "com.docker.compose.service" not in labels
    assert labels["shoal.controller"] == "c1" and labels["shoal.worker-id"] == "w1"
    assert args["auto_remove"] is False
    # Adoption never reaches into another project with the same controller id.
    assert "com.docker.compose.project=shoal" in adopt_filter
    assert "shoal.controller=c1" in adopt_filter


def test_without_compose_no_compose_labels_and_the_engine_removes() -> None:
    with made(controller_id="c1") as launcher:
        args = launcher.run_kwargs(request())
        adopt_filter = launcher._labels_filter()
    assert not any(k.startswith("com.docker.compose.") for k in args["labels"])
    assert args["auto_remove"] is True
    assert adopt_filter == ["shoal.worker-id", "shoal.controller=c1"]


def test_from_env_reads_the_compose_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "SHOAL_DOCKER_NETWORK": "auto",
        "SHOAL_DOCKER_COMPOSE_PROJECT": "auto",
        "SHOAL_DOCKER_VOLUMES": "auto:/var/cache/shoal,/srv/models:/models:ro",
        "SHOAL_S3_ENDPOINT": "s3:8333",
    }.items():
        monkeypatch.setenv(key, value)
    launcher = from_env("c1", lambda name: None)
    try:
        assert launcher.network == "auto" and launcher.compose_project == "auto"
        assert launcher.volumes_from_self == {"/var/cache/shoal": "rw"}
        assert launcher.volumes == {"/srv/models": {"bind": "/models", "mode": "ro"}}
        assert launcher.env["SHOAL_S3_ENDPOINT"] == "s3:8333"
    finally:
        launcher.exits.close()
        launcher._send.close()
    monkeypatch.setenv("SHOAL_DOCKER_VOLUMES", "models")
    with pytest.raises(ValueError, match="not source:/container/path"):
        from_env("c1", lambda name: None)


def test_auto_network_is_the_containers_own() -> None:
    def info(mode: str, *networks: str) -> dict[str, Any]:
        return {
            "Name": "/shoal-controller-1",
            "HostConfig": {"NetworkMode": mode},
            "NetworkSettings": {"Networks": {n: {} for n in networks}},
        }

    assert _network_of(info("host", "host"), None) == "host"
    assert _network_of(info("shoal_default", "shoal_default"), "shoal") == "shoal_default"
    assert _network_of(info("x", "x"), None) == "x"
    assert _network_of(info("a", "a", "shoal_default"), "shoal") == "shoal_default"
    with pytest.raises(RuntimeError, match="is on a, b: name the one"):
        _network_of(info("a", "a", "b"), "shoal")
