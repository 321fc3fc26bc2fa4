"""A launcher that runs each worker as a Docker container (``shoal-handler`` / ``shoal-executor``).

It implements the same :class:`~controller.launcher.Launcher` protocol as
:class:`~controller.launcher.ProcessLauncher`: ``start`` runs one container per worker,
``kill`` kills it, ``running`` lists the live ones, and ``exits`` reports every container that
stops (from the engine's event stream, container ``die`` events, never by polling).

Images hold the runtime and libraries only: a worker loads its function's code from NATS when
it starts, so deploying a function never builds an image.

Containers carry labels (``shoal.worker-id``, ``shoal.function``, ``shoal.controller``), so a
controller that restarts *adopts* the workers that are still running instead of orphaning or
duplicating them: with a stable controller id (``SHOAL_CONTROLLER_ID``) it adopts its own,
with ``adopt="all"`` every Shoal worker container on the engine.

Under Docker Compose (``compose_project``) every worker also carries the project's labels
(``com.docker.compose.project``, ``com.docker.compose.oneoff=False``) and no service label:
compose counts it as an orphan of the project, so ``docker compose down --remove-orphans``
removes it with the project's network and volumes. ``"auto"`` for the network, the project
or a volume takes it from the controller's own container (the one the launcher runs in).

Blocking Docker SDK calls run in worker threads (``anyio.to_thread``).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.streams.memory import MemoryObjectSendStream

from runtime.wire.spec import FunctionSpec

from .launcher import LaunchRequest, WorkerExit

log = logging.getLogger("shoal.launcher.docker")

LABEL_WORKER = "shoal.worker-id"
LABEL_FUNCTION = "shoal.function"
LABEL_CONTROLLER = "shoal.controller"
LABEL_KIND = "shoal.kind"
LABEL_COMPOSE_PROJECT = "com.docker.compose.project"
LABEL_COMPOSE_ONEOFF = "com.docker.compose.oneoff"
AUTO = "auto"  # a setting taken from the controller's own container

DEFAULT_IMAGES: Mapping[str, str] = {"function": "shoal-handler", "executor": "shoal-executor"}

# Request env settings this launcher reads (the controller's worker_env, or per request).
ENV_IMAGE = "SHOAL_IMAGE"  # an image for this worker, overriding the mapping by kind
ENV_KIND = "SHOAL_KIND"  # "function" or "executor", when no spec lookup is given
ENV_GPUS = "SHOAL_GPUS"  # GPUs to request (device_requests), 0 or unset for none; -1 all
ENV_MEMORY_MB = "SHOAL_MEMORY_MB"  # the container's memory limit in MiB
ENV_NANO_CPUS = "SHOAL_NANO_CPUS"  # CPU limit in units of 1e-9 CPUs


@dataclass
class _Worker:
    request: LaunchRequest | None  # None for an adopted container
    function: str
    container_id: str | None = None  # None until the engine created it


class DockerLauncher:
    """Runs each worker as ``python -m runtime.worker`` in a container of its kind's image.

    ``network`` is ``"host"`` (workers reach NATS as the controller does) or the name of a
    Docker network (compose's, so ``nats://nats:4222`` resolves). ``spec_of`` lets the
    launcher read a function's kind, ``gpu`` and ``memory_mb`` (a controller's
    ``functions`` view); without it they come from the request env (``SHOAL_KIND``,
    ``SHOAL_GPUS``, ``SHOAL_MEMORY_MB``). ``adopt`` is ``"mine"`` (containers labelled with
    this controller id), ``"all"`` (every Shoal worker container) or ``"none"``.
    ``stop_on_exit`` stops the workers when the launcher closes (as the process launcher
    does); with False they keep serving for the next controller to adopt.

    ``compose_project`` labels every worker as part of that Docker Compose project (see the
    module's doc), limits adoption to that project's workers, and has the launcher remove
    exited workers itself instead of the engine's auto-remove: compose's ``down`` kills then
    force-removes each orphan, which fails on a container the engine is already removing.
    ``volumes_from_self`` maps container paths to modes: what is mounted there in the
    controller's own container (a named volume, a host folder) is mounted there in every
    worker. ``"auto"`` as ``network`` or ``compose_project`` is also read from that container
    (``self_container``, by default found from ``/proc/self/mountinfo`` or ``HOSTNAME``).
    """

    def __init__(
        self,
        *,
        controller_id: str,
        images: Mapping[str, str] | None = None,
        network: str = "host",
        spec_of: Callable[[str], FunctionSpec | None] | None = None,
        adopt: Literal["mine", "all", "none"] = "mine",
        stop_grace: float = 10.0,
        stop_on_exit: bool = True,
        memory_headroom_mb: int = 512,
        nano_cpus: int | None = None,
        env: Mapping[str, str] | None = None,
        volumes: Mapping[str, Mapping[str, str]] | None = None,
        auto_remove: bool = True,
        compose_project: str | None = None,
        volumes_from_self: Mapping[str, str] | None = None,
        self_container: str | None = None,
        client: Any = None,
    ) -> None:
        self.controller_id = controller_id
        self.images = {**DEFAULT_IMAGES, **(images or {})}
        self.network = network
        self.spec_of = spec_of
        self.adopt = adopt
        self.stop_grace = stop_grace
        self.stop_on_exit = stop_on_exit
        self.memory_headroom_mb = memory_headroom_mb  # added to a spec's memory_mb
        self.nano_cpus = nano_cpus
        self.env = dict(env or {})  # added to every worker's env (under the request's)
        self.volumes = dict(volumes or {})
        self.auto_remove = auto_remove
        self.compose_project = compose_project
        self.volumes_from_self = dict(volumes_from_self or {})
        self.self_container = self_container
        self._client = client
        self._workers: dict[str, _Worker] = {}
        self._send: MemoryObjectSendStream[WorkerExit]
        self._send, self.exits = anyio.create_memory_object_stream[WorkerExit](1000)
        self._events: Any = None  # the engine's event stream, closed to stop the pump
        self._closing = False
        self._pump_done = anyio.Event()
        self._all_exited = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self.adopted: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> DockerLauncher:
        if self._client is None:
            self._client = await anyio.to_thread.run_sync(_sdk("docker").from_env)
        try:
            await anyio.to_thread.run_sync(self._client.ping)
            await anyio.to_thread.run_sync(self._resolve_auto)
        except BaseException:
            self._send.close()
            self.exits.close()
            raise
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        # Subscribe to die events before listing containers: a worker that dies in between
        # is either not listed or reported.
        self._events = await anyio.to_thread.run_sync(self._open_events)
        if self.adopt != "none":
            await self._adopt()
        self._tg.start_soon(self._pump)
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        with anyio.CancelScope(shield=True):
            if self.stop_on_exit:
                await self.shutdown()
            self._closing = True
            events, self._events = self._events, None
            if events is not None:
                await anyio.to_thread.run_sync(_close_quietly, events)
            with anyio.move_on_after(5):
                await self._pump_done.wait()
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        try:
            return await self._tg.__aexit__(et, e, tb)
        finally:
            self._send.close()
            self.exits.close()

    # -- the protocol ----------------------------------------------------------------------

    async def start(self, request: LaunchRequest) -> None:
        assert self._tg is not None, "use 'async with DockerLauncher(...)'"
        kwargs = self.run_kwargs(request)
        # Known before the container exists, so that its die event always finds it.
        worker = _Worker(request, request.function)
        self._workers[request.worker_id] = worker
        try:
            container = await anyio.to_thread.run_sync(self._run, kwargs)
        except BaseException:
            self._workers.pop(request.worker_id, None)
            raise
        worker.container_id = container.id
        log.info(
            "started worker %s for %s (container %s, image %s)",
            request.worker_id,
            request.function,
            container.short_id,
            kwargs["image"],
        )

    async def kill(self, worker_id: str) -> None:
        worker = self._workers.get(worker_id)
        if worker is None or worker.container_id is None:
            return
        await anyio.to_thread.run_sync(self._kill_container, worker.container_id, "SIGKILL")

    def running(self) -> set[str]:
        return set(self._workers)

    # -- extras ------------------------------------------------------------------------

    def container_id(self, worker_id: str) -> str | None:
        worker = self._workers.get(worker_id)
        return worker.container_id if worker else None

    async def wait_all_exited(self) -> None:
        """Return once no worker of this launcher is running."""
        if self._workers:
            await self._all_exited.wait()

    async def shutdown(self) -> None:
        """SIGTERM every worker (they drain), then SIGKILL what is left after the grace."""
        ids = [w.container_id for w in self._workers.values() if w.container_id]
        for cid in ids:
            await anyio.to_thread.run_sync(self._kill_container, cid, "SIGTERM")
        with anyio.move_on_after(self.stop_grace):
            await self.wait_all_exited()
        for w in list(self._workers.values()):
            if w.container_id:
                await anyio.to_thread.run_sync(self._kill_container, w.container_id, "SIGKILL")
        with anyio.move_on_after(5):
            await self.wait_all_exited()

    def image_for(self, request: LaunchRequest) -> str:
        if request.env.get(ENV_IMAGE):
            return request.env[ENV_IMAGE]
        return self.images.get(self._kind(request), self.images["function"])

    def run_kwargs(self, request: LaunchRequest) -> dict[str, Any]:
        """The ``containers.run`` arguments for a request (no SHOAL_PARENT_PID: a container
        outlives no process of ours, and adoption needs it to survive a controller)."""
        spec = self.spec_of(request.function) if self.spec_of else None
        env = {
            **self.env,
            **request.env,
            "SHOAL_FUNCTION": request.function,
            "SHOAL_WORKER_ID": request.worker_id,
            "SHOAL_SPAWNED_AT": repr(time.time()),  # for the worker's cold-start phases
        }
        env.pop("SHOAL_PARENT_PID", None)
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
        memory_mb = _int(request.env.get(ENV_MEMORY_MB))
        # An executor's model size, or what a partitioned model lets one worker hold.
        model_mb = (spec.memory_mb or spec.worker_memory_mb) if spec is not None else 0
        if memory_mb is None and model_mb > 0:
            memory_mb = model_mb + self.memory_headroom_mb
        if memory_mb:
            kwargs["mem_limit"] = f"{memory_mb}m"
        nano_cpus = _int(request.env.get(ENV_NANO_CPUS)) or self.nano_cpus
        if nano_cpus:
            kwargs["nano_cpus"] = nano_cpus
        gpus = _int(request.env.get(ENV_GPUS))
        if gpus is None and spec is not None:
            gpus = spec.gpu
        if gpus:
            device = _sdk("docker.types").DeviceRequest
            kwargs["device_requests"] = [device(count=gpus, capabilities=[["gpu"]])]
        return kwargs

    # -- internals ---------------------------------------------------------------------

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
        if request.env.get(ENV_KIND):
            return request.env[ENV_KIND]
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

    def _open_events(self) -> Any:
        return self._client.events(
            decode=True,
            filters={"type": "container", "event": "die", "label": self._labels_filter()},
        )

    async def _adopt(self) -> None:
        if not self._engine_removes and self.auto_remove:
            await anyio.to_thread.run_sync(self._remove_exited)
        containers = await anyio.to_thread.run_sync(
            lambda: self._client.containers.list(
                filters={"label": self._labels_filter(), "status": "running"}
            )
        )
        for c in containers:
            wid = c.labels.get(LABEL_WORKER)
            if not wid or wid in self._workers:
                continue
            self._workers[wid] = _Worker(None, c.labels.get(LABEL_FUNCTION, ""), c.id)
            self.adopted.add(wid)
            log.info(
                "adopted worker %s of %s (container %s)",
                wid,
                c.labels.get(LABEL_FUNCTION),
                c.short_id,
            )

    async def _pump(self) -> None:
        """Feed ``exits`` from the engine's die events; reconnect if the stream ends."""
        try:
            while not self._closing:
                events = self._events
                if events is not None:
                    await anyio.to_thread.run_sync(
                        self._read_events, events, abandon_on_cancel=True
                    )
                if self._closing:
                    break
                log.warning("docker event stream ended; reconnecting")
                await anyio.sleep(1)  # back off before re-subscribing, not a poll
                try:
                    self._events = await anyio.to_thread.run_sync(self._open_events)
                    await self._resync()
                except Exception as e:
                    log.warning("cannot reach the docker engine: %s", e)
                    self._events = None
        finally:
            self._pump_done.set()

    def _read_events(self, events: Iterator[dict[str, Any]]) -> None:
        try:
            for ev in events:
                attrs = ev.get("Actor", {}).get("Attributes", {})
                wid = attrs.get(LABEL_WORKER)
                if wid:
                    code = _int(attrs.get("exitCode"))
                    anyio.from_thread.run_sync(self._exited, wid, ev.get("id"), code)
                    if self.auto_remove and not self._engine_removes and ev.get("id"):
                        self._remove_container(ev["id"])
        except Exception as e:  # the stream was closed, or the engine went away
            if not self._closing:
                log.debug("docker event stream: %s", e)

    async def _resync(self) -> None:
        """After a gap in the event stream: report tracked workers that are gone."""
        alive = await anyio.to_thread.run_sync(
            lambda: {
                c.labels.get(LABEL_WORKER)
                for c in self._client.containers.list(filters={"label": self._labels_filter()})
                if c.status in ("created", "running", "restarting")
            }
        )
        for wid, w in list(self._workers.items()):
            if w.container_id is not None and wid not in alive:
                self._exited(wid, w.container_id, None)

    def _exited(self, worker_id: str, container_id: str | None, code: int | None) -> None:
        worker = self._workers.get(worker_id)
        if worker is None:
            return  # not ours (another controller's), or already reported
        if container_id and worker.container_id and container_id != worker.container_id:
            return
        del self._workers[worker_id]
        self.adopted.discard(worker_id)
        if not self._workers:
            self._all_exited.set()
            self._all_exited = anyio.Event()
        log.info("worker %s of %s exited (code %s)", worker_id, worker.function, code)
        try:
            self._send.send_nowait(WorkerExit(worker_id, worker.function, code))
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            log.warning("exit of worker %s not reported: nobody reads exits", worker_id)

    def _run(self, kwargs: dict[str, Any]) -> Any:
        """``containers.run``; an image the engine lacks and cannot pull is named clearly."""
        errors = _sdk("docker.errors")
        try:
            return self._client.containers.run(**kwargs)
        except errors.APIError as e:
            image = kwargs["image"]
            try:
                self._client.images.get(image)
            except errors.ImageNotFound:
                build = {v: k for k, v in DEFAULT_IMAGES.items()}.get(image)
                how = (
                    f"docker/build.sh {'handler' if build == 'function' else build}"
                    if build
                    else "build or pull it"
                )
                raise RuntimeError(
                    f"image {image} is not on this engine and could not be pulled "
                    f"({getattr(e, 'explanation', None) or e}): {how}"
                ) from None
            raise

    def _remove_container(self, container_id: str) -> None:
        errors = _sdk("docker.errors")
        try:
            self._client.api.remove_container(container_id, force=True)
        except errors.APIError as e:  # gone already, or being removed (compose's down)
            log.debug("remove %s: %s", container_id[:12], e)

    def _remove_exited(self) -> None:
        """Remove this launcher's workers that exited while no controller ran."""
        for c in self._client.containers.list(
            all=True, filters={"label": self._labels_filter(), "status": "exited"}
        ):
            self._remove_container(c.id)

    def _kill_container(self, container_id: str, signal: str) -> None:
        errors = _sdk("docker.errors")
        try:
            self._client.api.kill(container_id, signal=signal)
        except errors.NotFound:
            pass
        except errors.APIError as e:  # not running any more
            log.debug("kill %s: %s", container_id[:12], e)


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
    return found.group(1) if found else os.environ.get("HOSTNAME") or None


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


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "-" for c in name)[:40]


def _close_quietly(stream: Any) -> None:
    try:
        stream.close()
    except Exception as e:
        log.debug("closing the docker event stream: %s", e)


# -- a DockerLauncher configured from the environment (shoal controller --launcher docker) --


def from_env(controller_id: str, spec_of: Callable[[str], FunctionSpec | None]) -> DockerLauncher:
    """A launcher configured from ``SHOAL_DOCKER_NETWORK`` (default ``host``),
    ``SHOAL_DOCKER_ADOPT`` (mine/all/none), ``SHOAL_DOCKER_STOP_ON_EXIT`` (1/0),
    ``SHOAL_DOCKER_VOLUMES`` ("volume-or-host-path:/container/path[:ro],..."; ``auto`` as
    the source: what is mounted at that path in the controller's container),
    ``SHOAL_DOCKER_COMPOSE_PROJECT`` (a compose project's name, or ``auto``),
    ``SHOAL_HANDLER_IMAGE`` and ``SHOAL_EXECUTOR_IMAGE``; ``auto`` as the network means the
    controller container's. Keep ``SHOAL_CONTROLLER_ID`` stable so a restarted controller
    adopts its containers."""
    env = os.environ
    images = {
        k: v
        for k, v in (
            ("function", env.get("SHOAL_HANDLER_IMAGE")),
            ("executor", env.get("SHOAL_EXECUTOR_IMAGE")),
        )
        if v
    }
    # What workers inherit from the controller's environment (storage settings, log level).
    passed = {
        k: v
        for k, v in env.items()
        if k.startswith(("SHOAL_S3_", "SHOAL_LOG_", "SHOAL_HEARTBEAT", "SHOAL_RESULTS_"))
    }
    volumes: dict[str, dict[str, str]] = {}
    from_self: dict[str, str] = {}
    for item in filter(None, env.get("SHOAL_DOCKER_VOLUMES", "").split(",")):
        source, _, rest = item.strip().partition(":")
        target, _, mode = rest.partition(":")
        if not source or not target.startswith("/"):
            raise ValueError(f"SHOAL_DOCKER_VOLUMES: {item!r} is not source:/container/path[:mode]")
        if source == AUTO:
            from_self[target] = mode or "rw"
        else:
            volumes[source] = {"bind": target, "mode": mode or "rw"}
    adopt = env.get("SHOAL_DOCKER_ADOPT", "mine")
    if adopt not in ("mine", "all", "none"):
        raise ValueError(f"SHOAL_DOCKER_ADOPT must be mine, all or none, not {adopt!r}")
    return DockerLauncher(
        controller_id=controller_id,
        images=images,
        network=env.get("SHOAL_DOCKER_NETWORK", "host"),
        spec_of=spec_of,
        adopt=adopt,  # type: ignore[arg-type]
        stop_on_exit=env.get("SHOAL_DOCKER_STOP_ON_EXIT", "1") != "0",
        env=passed,
        volumes=volumes,
        compose_project=env.get("SHOAL_DOCKER_COMPOSE_PROJECT") or None,
        volumes_from_self=from_self,
    )


def main() -> None:
    """A controller whose workers are containers: ``shoal controller --launcher docker``."""
    from .cli import main as cli

    cli(["controller", "--launcher", "docker"])
