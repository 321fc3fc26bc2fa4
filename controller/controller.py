"""The controller: scales each function's workers from its JetStream backlog.

Workers pull events from their function's durable consumer themselves, so the controller is
never on the data path: it watches backlog and heartbeats, spawns workers from zero on the
first event, drains idle ones, and replaces dead ones. Several controllers can run against one
NATS, one per host (docs/placement.md): each announces its host's capacity and usage in its
heartbeat, one of them holds the placement lease (:mod:`controller.lease`) and turns every
function's scaling decision into a plan of workers per host (:mod:`controller.placement`),
and each starts and stops only its own host's share of that plan. Its only state is in NATS.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import msgpack

from runtime import config
from runtime.launch import LaunchEnv, preload_for
from runtime.partition import calibration
from runtime.partition.worker import object_store_from_env
from runtime.wire import logstream, protocol, replicas
from runtime.wire.connection import ensure_history, kv, passed_on

from .adaptive import KeepAlive
from .cold import ColdPath
from .exhausted import watch_exhausted
from .figures import ClusterFigures
from .hosts import CUDA_VISIBLE_DEVICES, Amount, capacity, host_name, machine_capacity, need_of
from .keepalive import KeepAliveSettings
from .launcher import Launcher, LaunchRequest
from .lease import PlacementLease
from .metrics_server import MetricsServer
from .placement import Wanted, place
from .scaler import Decision, Observation, WorkerState, decide
from .views import InfoView, SpecView

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from nats.aio.client import Client as NATS
    from nats.aio.subscription import Subscription

    from runtime.wire.kvwatch import Change
    from runtime.wire.spec import FunctionSpec

log = logging.getLogger("shoal.controller")

_SEEN = "_seen"  # added to a heartbeat's values: when it arrived (time.monotonic())
UNLOADING = 10.0  # seconds a worker decided to go is not taken to serve, though it says ready


@dataclass(frozen=True)
class ControllerSettings:
    """How a controller behaves; ``from_env`` reads them from :mod:`runtime.config`."""

    controller_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    tick: float = config.TICK.default  # seconds between reconcile passes when nothing wakes it
    heartbeat: float = config.HEARTBEAT.default  # seconds between this controller's reports
    stale_after: float = config.STALE_AFTER.default  # silence after which a worker is gone
    spawn_timeout: float = config.SPAWN_TIMEOUT.default  # a new worker's time to report in
    worker_env: Mapping[str, str] = field(default_factory=dict)  # variables for every worker
    calibrate: bool = True  # measure the data plane at start, for partitioned models
    keepalive_bin_s: float = config.KEEPALIVE_BIN_S.default  # the keep-alive policy's clock
    metrics_addr: str | None = None  # host:port for /metrics and the status page; None: off
    host: str = field(default_factory=host_name)  # the host its workers run on
    capacity: Amount = field(default_factory=machine_capacity)  # what that host offers
    lease_s: float | None = None  # the placement lease's life unrenewed; None: stale_after

    @classmethod
    def from_env(cls, env: config.Env | None = None, **overrides: Any) -> ControllerSettings:
        """Settings from ``SHOAL_*`` (:mod:`runtime.config`); the workers' own NATS
        credentials (``SHOAL_WORKER_NATS_*``) go into ``worker_env``."""
        values: dict[str, Any] = {
            "tick": config.TICK.get(env),
            "heartbeat": config.HEARTBEAT.get(env),
            "stale_after": config.STALE_AFTER.get(env),
            "spawn_timeout": config.SPAWN_TIMEOUT.get(env),
            "keepalive_bin_s": config.KEEPALIVE_BIN_S.get(env),
            "worker_env": LaunchEnv(credentials=config.worker_credentials(env)).to_env(),
        }
        addr = config.METRICS_ADDR.get(env)
        values["metrics_addr"] = None if addr.lower() == "off" else addr
        controller_id = config.CONTROLLER_ID.get(env)
        if controller_id is not None:
            values["controller_id"] = controller_id
        values["host"] = host_name(env)
        values["capacity"] = capacity(config.HOST_CAPACITY.get(env) or {})
        values["lease_s"] = config.PLACEMENT_LEASE.get(env)
        return cls(**{**values, **overrides})


@dataclass
class _Starting:
    function: str
    since: float


class Controller:
    """Reconciles each owned function's workers with its load until cancelled."""

    def __init__(
        self, nc: NATS, launcher: Launcher, settings: ControllerSettings | None = None
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.launcher = launcher
        self.settings = settings or ControllerSettings()
        self.id = self.settings.controller_id
        self._wake = anyio.Event()
        self._starting: dict[str, _Starting] = {}
        self._mine: set[str] = set()  # launched here and not yet exited
        self._draining: dict[str, float] = {}  # asked to stop here (this host's share)
        self._unloading: dict[str, float] = {}  # decided to go by this placer: since when
        self._cold: dict[str, ColdPath] = {}
        self._failures: dict[str, tuple[int, float]] = {}  # crash-loop backoff per function
        self._announced: dict[str, str] = {}  # function -> version announced as served
        self._devices: dict[str, tuple[int, ...]] = {}  # worker -> the GPUs it was given
        self._needs: dict[str, Amount] = {}  # worker -> what it takes of the host
        self._told: set[tuple[str, str]] = set()  # (host, controller) warned of as a twin
        s = self.settings
        # Adaptive keep-alive (docs/keepalive.md); heartbeats report work up to a beat late.
        self.keepalive = KeepAlive(
            KeepAliveSettings(bin_s=s.keepalive_bin_s), grace=2 * s.heartbeat + s.tick
        )
        self._up: set[str] = set()  # functions with a worker ready or starting, this pass
        self.figures = ClusterFigures(self.id)  # its workers' counts (controller.metrics)
        self.metrics: MetricsServer | None = None  # serving settings.metrics_addr, if set
        self.functions: SpecView
        self.workers: InfoView
        self.controllers: InfoView
        self.lease: PlacementLease

    def wake(self) -> None:
        self._wake.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self.functions = SpecView(await kv(self.js, protocol.FUNCTIONS_BUCKET))
        workers_kv = await kv(self.js, protocol.WORKERS_BUCKET)
        await ensure_history(self.js, protocol.WORKERS_BUCKET)
        self.workers = InfoView(workers_kv, also=self._worker_changed)
        controllers_kv = await kv(self.js, protocol.CONTROLLERS_BUCKET)
        self.controllers = InfoView(controllers_kv)
        s = self.settings
        self.lease = PlacementLease(
            await kv(self.js, protocol.PLACEMENT_BUCKET),
            self.id,
            lease_s=s.lease_s or s.stale_after,
            renew_s=s.heartbeat,
            on_change=self.wake,
        )
        await _ensure_logs(self.js)
        await replicas.settle(self.js)  # a deployment made on fewer servers gains copies
        exhausted: Subscription | None = None
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self.functions.run)
                await tg.start(self.workers.run)
                await tg.start(self.controllers.run)
                await tg.start(self.lease.run)
                try:
                    await self.keepalive.start(self.js, tg)
                except Exception as e:  # the policy then keeps the fixed windows
                    log.warning("keep-alive histories unavailable: %s", e)
                await controllers_kv.put(self.id, self._heartbeat())
                tg.start_soon(self._heartbeats, controllers_kv)
                tg.start_soon(self._on_exits, workers_kv)
                tg.start_soon(self._wake_on_deploys)
                if self.settings.calibrate:
                    tg.start_soon(self._calibrate)
                exhausted = await watch_exhausted(
                    self.nc,
                    self._spec_of_stream,
                    lambda name: self.places(),
                    self.figures.dead_lettered,
                )
                if self.settings.metrics_addr:
                    self.metrics = MetricsServer(self, self.settings.metrics_addr)
                    await tg.start(self.metrics.run)
                log.info("controller %s running", self.id)
                task_status.started()
                while True:  # the views watch their buckets anew after a reconnect
                    try:
                        await self.reconcile()
                    except Exception:
                        log.exception("reconcile pass failed")
                    with anyio.move_on_after(self.settings.tick):
                        await self._wake.wait()
                    self._wake = anyio.Event()
        finally:
            with anyio.CancelScope(shield=True):
                if exhausted is not None:
                    await _quietly(exhausted.unsubscribe())
                for path in self._cold.values():
                    await _quietly(path.close())
                await _quietly(self.lease.release())
                await _quietly(controllers_kv.delete(self.id))

    def _worker_changed(self, change: Change) -> None:
        """Every change of ``shoal_workers`` counts in the figures; a worker that appears,
        changes state (starting, ready, draining) or goes wakes the reconcile pass at once, so a
        cold function's held items reach its first ready worker now, not at the next tick. A
        heartbeat that changes nothing of that waits for the tick."""
        self.figures.apply(change)
        if change.initial:
            return
        before = self.workers.get(change.key)
        if change.deleted or before is None:
            self.wake()
            return
        try:
            state = msgpack.unpackb(change.value, raw=False).get("state")
        except Exception:
            return  # the view logs undecodable entries
        if state != before.get("state"):
            self.wake()

    async def _calibrate(self) -> None:
        """Measure the data plane and share the fit with every worker (through KV): at start,
        again once the start-up rush (workers spawning) is over, then every half hour."""
        store = object_store_from_env()
        for delay in itertools.chain((0.0, 30.0), itertools.repeat(1800.0)):
            await anyio.sleep(delay)
            try:
                await calibration.publish(self.nc, await calibration.measure(self.nc, store))
            except Exception as e:
                log.warning("data plane calibration failed (%s); workers keep the last fit", e)

    def _heartbeat(self) -> bytes:
        """This controller's entry in ``shoal_controllers``: its host, the host's capacity,
        and what its workers take of it (docs/placement.md)."""
        mine = sorted(self._mine)
        used = sum((self._needs.get(w, Amount()) for w in mine), Amount())
        info = {
            "id": self.id,
            "host": self.settings.host,
            "pid": os.getpid(),
            "capacity": self.settings.capacity.to_dict(),
            "usage": {**used.to_dict(), "workers": len(mine)},
            "gpu_devices": {w: list(d) for w, d in self._devices.items()},
            "starting": {w: s.function for w, s in self._starting.items()},
        }
        return msgpack.packb(info)  # type: ignore[no-any-return]

    async def _heartbeats(self, bucket: Any) -> None:
        while True:
            await anyio.sleep(self.settings.heartbeat)
            await _quietly(bucket.put(self.id, self._heartbeat()))

    async def _wake_on_deploys(self) -> None:
        while True:
            await self.functions.changed.wait()
            self.wake()

    async def _on_exits(self, workers_kv: Any) -> None:
        async for ex in self.launcher.exits:
            starting = self._starting.pop(ex.worker_id, None)
            self._mine.discard(ex.worker_id)
            self._devices.pop(ex.worker_id, None)
            self._needs.pop(ex.worker_id, None)
            expected = self._draining.pop(ex.worker_id, None) is not None
            if not expected:
                log.warning(
                    "worker %s of %s exited (code %s); its unacknowledged events will be "
                    "redelivered",
                    ex.worker_id,
                    ex.function,
                    ex.returncode,
                )
                if starting is not None:  # died before serving: back off before respawning
                    n, _ = self._failures.get(ex.function, (0, 0.0))
                    delay = min(30.0, 0.5 * 2**n)
                    self._failures[ex.function] = (n + 1, time.monotonic() + delay)
            key = f"{ex.function}.{ex.worker_id}"
            self.workers.forget(key)
            await _quietly(workers_kv.delete(key))
            self.wake()

    def starting_counts(self) -> dict[str, int]:
        """Workers launched and not yet reporting, by function."""
        out: dict[str, int] = {}
        for s in self._starting.values():
            out[s.function] = out.get(s.function, 0) + 1
        return out

    def standing_in(self) -> set[str]:
        """Functions whose cold path answers for them now (no ready worker seen yet)."""
        return set(self._cold)

    def _spec_of_stream(self, stream: str) -> FunctionSpec | None:
        return next((s for s in self.functions.items().values() if s.stream == stream), None)

    def places(self) -> bool:
        """Whether this controller holds the placement lease (scales every function)."""
        return self.lease.leads()

    def live_controllers(self) -> dict[str, dict[str, Any]]:
        """Controllers heard from within ``stale_after``, this one included."""
        live = self.controllers.items(self.settings.stale_after)
        live[self.id] = msgpack.unpackb(self._heartbeat(), raw=False)
        return live

    async def reconcile(self) -> None:
        """One pass: the placing controller decides every function's workers and places
        them on hosts; every controller then brings its own host's share to the plan."""
        specs = self.functions.items()
        by_function: dict[str, list[dict[str, Any]]] = {}
        for w, seen in self.workers.entries(self.settings.stale_after).values():
            by_function.setdefault(str(w.get("function")), []).append({**w, _SEEN: seen})
        await self._check_starting(by_function)
        live = self.live_controllers()
        if await self.lease.claim(live):
            await self._place(specs, by_function, live)
        else:
            self.keepalive.keep_only(set())
        await self._forget_gone(specs, by_function)
        await self._run_share(specs, by_function)

    async def _check_starting(self, by_function: dict[str, list[dict[str, Any]]]) -> None:
        """Workers that reported in are started; those that never did are killed."""
        now = time.monotonic()
        for wid, s in list(self._starting.items()):
            seen = any(w.get("id") == wid for w in by_function.get(s.function, ()))
            if seen:
                del self._starting[wid]
                self._failures.pop(s.function, None)
                self.keepalive.launched(s.function, now - s.since)
            elif now - s.since > self.settings.spawn_timeout:
                log.warning("worker %s of %s never reported in; killing it", wid, s.function)
                await self.launcher.kill(wid)

    async def _forget_gone(
        self, specs: dict[str, FunctionSpec], by_function: dict[str, list[dict[str, Any]]]
    ) -> None:
        """Drop what ended: drained workers gone, cold paths this controller no longer keeps,
        its own workers of removed functions."""
        live_ids = {str(w.get("id")) for ws in by_function.values() for w in ws}
        for wid in [w for w in self._unloading if w not in live_ids]:
            del self._unloading[wid]
        for wid in list(self._draining):
            if wid not in live_ids and wid not in self._mine:
                del self._draining[wid]  # gone, whoever launched it
        for name in list(self._cold):
            if name not in specs or not self.places():
                await self._set_cold(name, None)
        for name, gone in by_function.items():
            if name not in specs:
                # Removed (shoal rm): its workers go, in-flight work finished first.
                await self._drain(name, [str(w.get("id")) for w in gone if self._launched(w)])

    def _launched(self, worker: Mapping[str, Any]) -> bool:
        return worker.get("controller") == self.id

    # -- placing (the lease holder) ---------------------------------------------------------

    async def _place(
        self,
        specs: dict[str, FunctionSpec],
        by_function: dict[str, list[dict[str, Any]]],
        live: dict[str, dict[str, Any]],
    ) -> None:
        """Decide each function's wanted workers, spread them over the live hosts, write
        the plan (which renews the lease)."""
        host_of = {c: str(info.get("host") or c) for c, info in live.items()}
        # Launched and not reporting yet, on any host: a worker that has reported in is
        # counted once, as live, though its controller's heartbeat may still list it.
        reported = {str(w.get("id")) for ws in by_function.values() for w in ws}
        starting: dict[str, int] = {}
        for info in live.values():
            for wid, name in (info.get("starting") or {}).items():
                if wid not in reported:
                    starting[name] = starting.get(name, 0) + 1
        self._up = set(starting) | {
            name for name, ws in by_function.items() if any(w.get("state") == "ready" for w in ws)
        }
        self.keepalive.keep_only(set(specs))
        previous = self.lease.plan()
        wanted: dict[str, Wanted] = {}
        for name, spec in specs.items():
            workers = by_function.get(name, [])
            decision = await self._decide_one(spec, workers, starting.get(name, 0))
            if decision is None:  # its backlog is unknown this pass: keep its workers
                count = sum(previous.get(name, {}).values())
                wanted[name] = Wanted(count, need_of(spec))
                continue
            # Where the current version's drained workers run (older versions' are not
            # counted in ``wanted``): the function shrinks there.
            hosts = {
                str(w.get("id")): host_of.get(str(w.get("controller")), "")
                for w in workers
                if w.get("version") == spec.version
            }
            shrink = tuple(hosts[w] for w in decision.drain if hosts.get(w))
            wanted[name] = Wanted(decision.wanted, need_of(spec), shrink)
        chosen = self._hosts(live)
        capacities = {h: Amount.from_dict(live[c].get("capacity") or {}) for h, c in chosen.items()}
        placed = place(wanted, capacities, previous)
        before = self.lease.unplaced()
        for name, n in placed.unplaced.items():
            if before.get(name) != n:  # said once, not at every pass
                log.warning(
                    "%d worker(s) of %s fit on no host (need %s)", n, name, wanted[name].need
                )
        await self.lease.publish(placed.plan, placed.unplaced, chosen)

    def _hosts(self, live: dict[str, dict[str, Any]]) -> dict[str, str]:
        """Host name -> its controller: one each (two claiming one name: the one the plan
        has, else the lowest id)."""
        planned = self.lease.hosts()
        chosen: dict[str, str] = {}
        for c in sorted(live):
            h = str(live[c].get("host") or c)
            if h in chosen and planned.get(h) != c:
                if (h, c) not in self._told:  # said once
                    self._told.add((h, c))
                    log.warning("controllers %s and %s both run on %s", chosen[h], c, h)
                continue
            chosen[h] = c
        return chosen

    async def _decide_one(
        self, spec: FunctionSpec, workers: list[dict[str, Any]], starting: int
    ) -> Decision | None:
        """One function's scaling decision from what the cluster shows of it (None: its
        backlog cannot be read now)."""
        name = spec.name
        states = [WorkerState.of(w, w.get(_SEEN)) for w in workers]
        cold = self._cold.get(name)
        if spec.kind == "executor":
            # Executors' load is in their heartbeats, plus items held while cold.
            pending, unacked = (cold.demand if cold else 0), 0
            waiting = 0  # held items are counted by _keep_warm, a pre-warm request is none
        else:
            try:
                ci = await self.js.consumer_info(spec.stream, protocol.CONSUMER)
            except Exception as e:
                log.warning("cannot read backlog of %s: %s", name, e)
                return None
            pending, unacked = int(ci.num_pending or 0), int(ci.num_ack_pending or 0)
            waiting = pending + unacked
        obs = Observation(
            pending, unacked, states, starting, *self._keep_warm(spec, states, waiting)
        )
        decision = decide(spec, obs)
        now = time.monotonic()
        for wid in decision.drain:
            self._unloading.setdefault(wid, now)
        # The cold path stands in from the pass that decides a function's last workers go,
        # before they are asked to stop: a draining worker leaves the call subject's queue
        # group, and a call must then find the cold path there, never an empty group (the
        # caller would be told nothing serves the function). Workers decided to go count as
        # gone though their heartbeats may still say ready (for a while: their host's
        # controller may have shrunk by another one).
        serving = decision.wanted > 0 and any(
            w.state == "ready"
            and w.version == spec.version
            and now - self._unloading.get(w.id, -UNLOADING) >= UNLOADING
            for w in states
        )
        await self._set_cold(name, None if serving else spec)
        if self._announced.get(name) != spec.version:
            # Requests are answered from here on (by a worker, or queued by the cold
            # path): tell a waiting deploy so it returns only then.
            self._announced[name] = spec.version
            await self.nc.publish(protocol.deployed_subject(name), spec.version.encode())
        return decision

    def _keep_warm(
        self, spec: FunctionSpec, states: list[WorkerState], waiting: int
    ) -> tuple[int | None, float | None]:
        """The keep-alive policy's floor and scale-in delay for ``spec`` (see
        :meth:`KeepAlive.keep_warm`), from what this pass sees of it."""
        cold = self._cold.get(spec.name)
        held = cold.held if cold is not None else 0  # items, not a pre-warm request
        called = spec.kind == "executor" and any(
            spec.name in h.uses and not h.fuse and h.name in self._up
            for h in self.functions.items().values()
        )
        return self.keepalive.keep_warm(
            spec,
            time.monotonic(),
            demand=waiting + held + sum(w.inflight for w in states),
            workers=states,
            lead_s=self.settings.tick,
            called=called,
        )

    # -- running this host's share (every controller) ---------------------------------------

    async def _run_share(
        self, specs: dict[str, FunctionSpec], by_function: dict[str, list[dict[str, Any]]]
    ) -> None:
        """Start or drain this host's workers to match the plan's count for it."""
        if self.lease.hosts().get(self.settings.host) != self.id:
            return  # the plan has not (or not yet) given this host to this controller
        plan = self.lease.plan()
        for name, spec in specs.items():
            # Any function may be placed here at its next event: its template gets ready now.
            await self.launcher.prepare(preload_for(spec.kind, spec.engine))
            mine = [w for w in by_function.get(name, []) if self._launched(w)]
            await self._reconcile_share(spec, mine, plan.get(name, {}).get(self.settings.host, 0))

    async def _reconcile_share(
        self, spec: FunctionSpec, workers: list[dict[str, Any]], target: int
    ) -> None:
        """Bring this host's workers of ``spec`` to ``target``: older versions drain, the
        longest idle go first, new ones start (after a crash-loop's back-off)."""
        draining = self._draining
        ready = [w for w in workers if w.get("state") == "ready" and w.get("id") not in draining]
        stale = [str(w.get("id")) for w in ready if w.get("version") != spec.version]
        current = [WorkerState.of(w) for w in ready if w.get("version") == spec.version]
        have = len(current) + sum(1 for s in self._starting.values() if s.function == spec.name)
        surplus = sorted(current, key=lambda w: (w.inflight > 0, -w.idle_for))[: have - target]
        await self._drain(spec.name, [*stale, *(w.id for w in surplus)])
        _, not_before = self._failures.get(spec.name, (0, 0.0))
        if time.monotonic() >= not_before:
            for _ in range(target - have):
                if not await self._spawn(spec):
                    break

    async def _drain(self, function: str, worker_ids: Iterable[str]) -> None:
        now = time.monotonic()
        for wid in worker_ids:
            if now - self._draining.get(wid, -1e9) > 5.0:  # re-ask now and then, not every tick
                self._draining[wid] = now
                log.info("draining worker %s of %s", wid, function)
                await self.nc.publish(protocol.worker_stop_subject(wid), b"")

    def _free_gpus(self, n: int) -> tuple[int, ...] | None:
        """``n`` of the host's declared GPUs that none of its workers holds (None: too few)."""
        held = {d for w, ds in self._devices.items() if w in self._mine for d in ds}
        free = [d for d in range(self.settings.capacity.gpus) if d not in held]
        return tuple(free[:n]) if len(free) >= n else None

    async def _spawn(self, spec: FunctionSpec) -> bool:
        """Start a worker of ``spec`` on this host; False when it cannot start now."""
        need = need_of(spec)
        devices = self._free_gpus(need.gpus) if need.gpus else ()
        if devices is None:  # a draining worker still holds the GPU: start it once it is gone
            log.debug("no free GPU for a worker of %s yet", spec.name)
            return False
        wid = uuid.uuid4().hex[:12]
        self._starting[wid] = _Starting(spec.name, time.monotonic())
        self._mine.add(wid)
        self._needs[wid] = need
        url = passed_on(self.nc, config.nats_url())
        env = {
            **LaunchEnv(nats_url=url, controller_id=self.id, host=self.settings.host).to_env(),
            **self.settings.worker_env,
        }
        if devices:
            # The GPUs this worker may use, for process workers as for containers.
            self._devices[wid] = devices
            env[CUDA_VISIBLE_DEVICES] = ",".join(map(str, devices))
        if not spec.fuse:
            # Start the executors this handler will call now, not when its first call finds
            # them cold: the two cold starts overlap instead of adding up.
            for name in spec.uses:
                await self.nc.publish(
                    protocol.executor_subject(name), b"", headers={protocol.PREWARM: "1"}
                )
        try:
            preload = preload_for(spec.kind, spec.engine)
            await self.launcher.start(LaunchRequest(spec.name, wid, spec.version, env, preload))
        except Exception:
            self._starting.pop(wid, None)
            self._mine.discard(wid)
            self._devices.pop(wid, None)
            self._needs.pop(wid, None)
            log.exception("could not start a worker for %s", spec.name)
            return False
        return True

    async def _set_cold(self, name: str, spec: FunctionSpec | None) -> None:
        """Stand in for a function's workers while it has none (see :mod:`controller.cold`)."""
        path = self._cold.get(name)
        if spec is None:
            if path is not None:
                del self._cold[name]
                await path.close()
            return
        if path is not None and path.spec.version != spec.version:
            await self._set_cold(name, None)
            path = None
        if path is None:
            path = ColdPath(self.nc, spec, self.wake)
            await path.open()
            self._cold[name] = path


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception as e:
        log.debug("ignored during cleanup: %s", e)


async def _ensure_logs(js: Any) -> None:
    """The stream workers publish their log lines to (``shoal logs`` reads it)."""
    try:
        await logstream.ensure_stream(js, config.LOGS_MAX_AGE.get(), config.LOGS_MAX_BYTES.get())
    except Exception as e:  # the cluster runs on; only `shoal logs` goes without
        log.warning("cannot make the %s stream: %s", logstream.STREAM, e)
