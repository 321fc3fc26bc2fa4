"""A launcher that runs each worker as a Docker container (``shoal-handler`` / ``shoal-executor``).

It implements the same :class:`~controller.launcher.Launcher` protocol as
:class:`~controller.launcher.ProcessLauncher`: ``start`` runs one container per worker,
``kill`` kills it, ``running`` lists the live ones, and ``exits`` reports every container that
stops (from the engine's event stream, container ``die`` events, never by polling). What each
container is (image, environment, labels, limits) is :mod:`controller.docker_args`'.

Images hold the runtime and libraries only: a worker loads its function's code from NATS when
it starts, so deploying a function never builds an image. A controller that restarts adopts
the worker containers still running (see :mod:`controller.docker_args` for the labels).

Blocking Docker SDK calls run in worker threads (``anyio.to_thread``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.to_thread

from runtime import config
from runtime.launch import LaunchEnv

from .docker_args import (
    AUTO,
    DEFAULT_IMAGES,
    LABEL_FUNCTION,
    LABEL_WORKER,
    WorkerContainers,
    _sdk,
)
from .launcher import LaunchRequest, WorkerExit

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from types import TracebackType

    from anyio.streams.memory import MemoryObjectSendStream

    from runtime.launch import Preload
    from runtime.wire.spec import FunctionSpec

log = logging.getLogger("shoal.launcher.docker")


@dataclass
class _Worker:
    request: LaunchRequest | None  # None for an adopted container
    function: str
    container_id: str | None = None  # None until the engine created it


class DockerLauncher(WorkerContainers):
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
        adopt: config.Adopt = "mine",
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
        self.volumes = {source: dict(mount) for source, mount in (volumes or {}).items()}
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

    async def prepare(self, preload: Preload | None) -> None:
        """Nothing to prepare: each container starts its own interpreter."""

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


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _close_quietly(stream: Any) -> None:
    try:
        stream.close()
    except Exception as e:
        log.debug("closing the docker event stream: %s", e)


# -- a DockerLauncher configured from the environment (shoal controller --launcher docker) --


def from_env(
    controller_id: str,
    spec_of: Callable[[str], FunctionSpec | None],
    env: config.Env | None = None,
) -> DockerLauncher:
    """A launcher configured from ``SHOAL_DOCKER_*``, ``SHOAL_HANDLER_IMAGE`` and
    ``SHOAL_EXECUTOR_IMAGE`` (see docs/configuration.md); its workers get the controller's log
    level, heartbeat, results TTL and object store settings. Keep ``SHOAL_CONTROLLER_ID``
    stable so a restarted controller adopts its containers."""
    images = {
        kind: image
        for kind, image in (
            ("function", config.HANDLER_IMAGE.get(env)),
            ("executor", config.EXECUTOR_IMAGE.get(env)),
        )
        if image
    }
    volumes: dict[str, dict[str, str]] = {}
    from_self: dict[str, str] = {}
    for mount in config.DOCKER_VOLUMES.get(env):
        if mount.source == AUTO:
            from_self[mount.target] = mount.mode
        else:
            volumes[mount.source] = {"bind": mount.target, "mode": mount.mode}
    return DockerLauncher(
        controller_id=controller_id,
        images=images,
        network=config.DOCKER_NETWORK.get(env),
        spec_of=spec_of,
        adopt=config.DOCKER_ADOPT.get(env),
        stop_on_exit=config.DOCKER_STOP_ON_EXIT.get(env),
        env=LaunchEnv.inherited(env).to_env(),
        volumes=volumes,
        compose_project=config.DOCKER_COMPOSE_PROJECT.get(env),
        volumes_from_self=from_self,
    )
