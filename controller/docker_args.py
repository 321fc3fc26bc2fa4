"""What :class:`~controller.docker_launcher.DockerLauncher` asks the engine for, per worker.

A worker's container: its kind's image (``shoal-handler`` or ``shoal-executor``), the launch
contract as its environment (:class:`runtime.launch.LaunchEnv`), labels, network, mounts and
limits (memory from the spec's ``memory_mb``, GPUs from its ``gpu``).

Containers carry labels (``shoal.worker-id``, ``shoal.function``, ``shoal.controller``), so a
controller that restarts *adopts* the workers that are still running instead of orphaning or
duplicating them: with a stable controller id (``SHOAL_CONTROLLER_ID``) it adopts its own,
with ``adopt="all"`` every Shoal worker container on the engine.

Under Docker Compose (``compose_project``) every worker also carries the project's labels
(``com.docker.compose.project``, ``com.docker.compose.oneoff=False``) and no service label:
compose counts it as an orphan of the project, so ``docker compose down --remove-orphans``
removes it with the project's network and volumes. ``"auto"`` for the network, the project
or a volume takes it from the controller's own container (the one the launcher runs in).
"""

from __future__ import annotations

import importlib
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from runtime import config
from runtime.launch import LaunchEnv

from .hosts import CUDA_VISIBLE_DEVICES

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from runtime.wire.spec import FunctionSpec

    from .launcher import LaunchRequest

log = logging.getLogger("shoal.launcher.docker")

LABEL_WORKER = "shoal.worker-id"
LABEL_FUNCTION = "shoal.function"
LABEL_CONTROLLER = "shoal.controller"
LABEL_KIND = "shoal.kind"
LABEL_COMPOSE_PROJECT = "com.docker.compose.project"
LABEL_COMPOSE_ONEOFF = "com.docker.compose.oneoff"
AUTO = "auto"  # a setting taken from the controller's own container

DEFAULT_IMAGES: Mapping[str, str] = {"function": "shoal-handler", "executor": "shoal-executor"}


class WorkerContainers:
    """The container side of :class:`~controller.docker_launcher.DockerLauncher`: the
    arguments of each worker's container, and the ``auto`` settings resolved from the
    controller's own. Its settings are the launcher's, set by the launcher's ``__init__``."""

    controller_id: str
    images: dict[str, str]
    network: str
    spec_of: Callable[[str], FunctionSpec | None] | None
    adopt: config.Adopt
    memory_headroom_mb: int
    nano_cpus: int | None
    env: dict[str, str]
    volumes: dict[str, dict[str, str]]
    auto_remove: bool
    compose_project: str | None
    volumes_from_self: dict[str, str]
    self_container: str | None
    _client: Any

    def image_for(self, request: LaunchRequest) -> str:
        image = config.IMAGE.get(request.env)
        if image:
            return image
        return self.images.get(self._kind(request), self.images["function"])

    def run_kwargs(self, request: LaunchRequest) -> dict[str, Any]:
        """The ``containers.run`` arguments for a request (no ``SHOAL_PARENT_PID``: a container
        outlives no process of ours, and adoption needs it to survive a controller). A
        request's ``SHOAL_IMAGE``, ``SHOAL_KIND``, ``SHOAL_GPUS``, ``SHOAL_MEMORY_MB`` and
        ``SHOAL_NANO_CPUS`` override the launcher's settings and the spec."""
        spec = self.spec_of(request.function) if self.spec_of else None
        launched = LaunchEnv(
            function=request.function,
            worker_id=request.worker_id,
            spawned_at=time.time(),  # for the worker's cold-start phases
        )
        env = {**self.env, **request.env, **launched.to_env()}
        env.pop(config.PARENT_PID.name, None)
        kind = self._kind(request)
        labels = {
            LABEL_WORKER: request.worker_id,
            LABEL_FUNCTION: request.function,
            LABEL_CONTROLLER: self.controller_id,
            LABEL_KIND: kind,
            "shoal.version": request.version,
        }
        if self.compose_project:
            # A container of the project that belongs to none of its services: an orphan,
            # which `down --remove-orphans` kills and removes (compose v1 lists a project's
            # containers by these two labels; v2 likewise).
            labels[LABEL_COMPOSE_PROJECT] = self.compose_project
            labels[LABEL_COMPOSE_ONEOFF] = "False"
        kwargs: dict[str, Any] = {
            "image": self.image_for(request),
            "name": f"shoal-{_safe(request.function)}-{request.worker_id}",
            "detach": True,
            "environment": env,
            "labels": labels,
            "auto_remove": self._engine_removes,
            "stop_signal": "SIGTERM",
            "init": True,  # reap the worker's children; forward signals
        }
        if self.network == "host":
            kwargs["network_mode"] = "host"
        else:
            kwargs["network"] = self.network
        if self.volumes:
            kwargs["volumes"] = {k: dict(v) for k, v in self.volumes.items()}
        memory_mb = config.MEMORY_MB.get(request.env)
        # An executor's model size, or what a partitioned model lets one worker hold.
        model_mb = (spec.memory_mb or spec.worker_memory_mb) if spec is not None else 0
        if memory_mb is None and model_mb > 0:
            memory_mb = model_mb + self.memory_headroom_mb
        if memory_mb:
            kwargs["mem_limit"] = f"{memory_mb}m"
        nano_cpus = config.NANO_CPUS.get(request.env) or self.nano_cpus
        if nano_cpus:
            kwargs["nano_cpus"] = nano_cpus
        gpus = config.GPUS.get(request.env)
        if gpus is None and spec is not None:
            gpus = spec.gpu
        # The host's GPUs the controller gave this worker: the container gets those devices,
        # which it sees as its own 0..n-1, so the variable itself stays outside.
        given = env.pop(CUDA_VISIBLE_DEVICES, "")
        if gpus:
            device = _sdk("docker.types").DeviceRequest
            ids = {"device_ids": given.split(",")} if given else {"count": gpus}
            kwargs["device_requests"] = [device(**ids, capabilities=[["gpu"]])]
        return kwargs

    @property
    def _engine_removes(self) -> bool:
        """Whether the engine removes exited workers (else this launcher does, if asked to)."""
        return self.auto_remove and not self.compose_project

    def _resolve_auto(self) -> None:
        """Replace the "auto" settings with the controller's own container's."""
        wanted = AUTO in (self.network, self.compose_project) or bool(self.volumes_from_self)
        if not wanted:
            return
        ref = self.self_container or own_container_id()
        errors = _sdk("docker.errors")
        try:
            if not ref:
                raise errors.NotFound("no container id")
            info = self._client.api.inspect_container(ref)
        except errors.NotFound:
            raise RuntimeError(
                "SHOAL_DOCKER_* 'auto' settings (network, compose project, volumes) come from "
                "the controller's own container, but this process runs in no container of this "
                f"engine (looked for {ref or 'an id in /proc/self/mountinfo or HOSTNAME'}): "
                "name the network, project and volumes instead"
            ) from None
        labels = info.get("Config", {}).get("Labels") or {}
        if self.compose_project == AUTO:
            project = labels.get(LABEL_COMPOSE_PROJECT)
            if not project:
                raise RuntimeError(
                    f"SHOAL_DOCKER_COMPOSE_PROJECT=auto: container {info['Name'].lstrip('/')} "
                    "was not started by Docker Compose (no com.docker.compose.project label)"
                )
            self.compose_project = project
        if self.network == AUTO:
            self.network = _network_of(info, self.compose_project)
        for target, mode in self.volumes_from_self.items():
            mounts = [m for m in info.get("Mounts", []) if m.get("Destination") == target]
            if not mounts:
                raise RuntimeError(
                    f"SHOAL_DOCKER_VOLUMES auto:{target}: nothing is mounted at {target} in "
                    f"the controller's container {info['Name'].lstrip('/')}"
                )
            m = mounts[0]
            source = m.get("Name") if m.get("Type") == "volume" else m.get("Source")
            self.volumes[source] = {"bind": target, "mode": mode}
        log.info(
            "from container %s: network %s, compose project %s, volumes %s",
            info["Name"].lstrip("/"),
            self.network,
            self.compose_project,
            self.volumes,
        )

    def _kind(self, request: LaunchRequest) -> str:
        kind = config.KIND.get(request.env)
        if kind:
            return kind
        spec = self.spec_of(request.function) if self.spec_of else None
        if spec is not None and spec.partitions:
            return "executor"  # a partitioned model is a model: numpy, torch, a GPU maybe
        return spec.kind if spec is not None else "function"

    def _labels_filter(self) -> list[str]:
        labels = [LABEL_WORKER]
        if self.adopt != "all":
            labels.append(f"{LABEL_CONTROLLER}={self.controller_id}")
        if self.compose_project:  # another project's workers are never ours
            labels.append(f"{LABEL_COMPOSE_PROJECT}={self.compose_project}")
        return labels


def _sdk(module: str) -> Any:
    """A module of the docker SDK (``pip install docker``), imported where containers are
    used only; by name, so that type checkers never take the repository's ``docker/`` folder
    (build scripts) for it."""
    sdk = importlib.import_module(module)
    if getattr(sdk, "__file__", None) is None:  # a bare folder named docker/, not the SDK
        raise ModuleNotFoundError("the docker SDK is not installed: pip install 'docker>=7'")
    return sdk


def own_container_id() -> str | None:
    """The id of the container this process runs in, if any: from the engine's per-container
    files mounted into it (/proc/self/mountinfo), else ``HOSTNAME`` (a container's short id
    unless compose or ``docker run --hostname`` set another name)."""
    try:
        mounts = open("/proc/self/mountinfo").read()
    except OSError:
        mounts = ""
    found = re.search(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)", mounts)
    return found.group(1) if found else config.HOSTNAME.get()


def _network_of(info: Mapping[str, Any], project: str | None) -> str:
    """The network a container is on: ``host``, or its one network (its compose project's
    default network when it has several)."""
    mode = info.get("HostConfig", {}).get("NetworkMode", "")
    if mode == "host":
        return "host"
    networks = list(info.get("NetworkSettings", {}).get("Networks") or {})
    if project and f"{project}_default" in networks:
        return f"{project}_default"
    if len(networks) == 1:
        return str(networks[0])
    name = info.get("Name", "").lstrip("/")
    raise RuntimeError(
        f"SHOAL_DOCKER_NETWORK=auto: container {name} is on "
        f"{', '.join(networks) or 'no network'}: name the one workers should join"
    )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "-" for c in name)[:40]
