"""The other workers of a partitioned model, as one worker sees them: which are ready and on
which host (from their heartbeats in ``shoal_workers``), and which of a run's workers stopped
answering (pings on their task subjects).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import msgpack
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from runtime.partition.messages import Ping, task_subject
from runtime.wire import protocol
from runtime.wire.connection import kv
from runtime.wire.kvwatch import Change, Follower

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from runtime.wire.spec import FunctionSpec

PING_EVERY = 0.5  # seconds between liveness pings to the workers of a run
PING_PATIENCE = 2.0  # seconds a worker may leave a ping unanswered before it counts as lost
STALE_AFTER = 3.0  # heartbeats older than this (in heartbeat periods) mean a worker is gone


@dataclass
class Peer:
    state: str  # ready | draining | ... | other-version (a different deployment)
    seen: float  # time.monotonic() of its last heartbeat seen
    host: str | None = None  # the host it runs on, as its heartbeat names it


class Peers:
    """The workers serving ``spec``'s version, kept current by following their heartbeats."""

    def __init__(self, nc: NATS, spec: FunctionSpec, *, heartbeat: float = 1.0) -> None:
        self.nc = nc
        self.spec = spec
        self.heartbeat = heartbeat
        self.known: dict[str, Peer] = {}
        self.changed = anyio.Event()  # set (and renewed) by each heartbeat

    async def run(self) -> None:
        """Keep ``known`` current from the workers' heartbeats (runs until cancelled)."""
        bucket = await kv(self.nc.jetstream(), protocol.WORKERS_BUCKET)
        await Follower(bucket, self._on_heartbeat, keys=f"{self.spec.name}.*").run()

    def _on_heartbeat(self, change: Change) -> None:
        worker = change.key.split(".", 1)[1]
        if change.deleted:
            self.known.pop(worker, None)
            return
        try:
            info = msgpack.unpackb(change.value, raw=False)
            state = str(info.get("state", ""))
            host = info.get("host")
            if info.get("version") != self.spec.version:
                state = "other-version"  # a rolling redeploy: keep runs on one
        except Exception:
            return
        self.known[worker] = Peer(state, time.monotonic(), str(host) if host else None)
        self.changed.set()
        self.changed = anyio.Event()

    def host_of(self, worker: str) -> str | None:
        """The host ``worker`` runs on, if its heartbeat has been seen and names one."""
        peer = self.known.get(worker)
        return peer.host if peer is not None else None

    def ready(self, exclude: set[str]) -> list[str]:
        """Workers whose last heartbeat, recent enough, said ready (``exclude`` left out)."""
        now = time.monotonic()
        return [
            w
            for w, p in self.known.items()
            if p.state == "ready"
            and now - p.seen < STALE_AFTER * self.heartbeat
            and w not in exclude
        ]

    async def first_lost(self, workers: list[str]) -> str:
        """The first of ``workers`` found gone: no responders (its connection closed) or no
        answer for ``PING_PATIENCE`` seconds. Returns only then; raises if NATS is gone."""
        last_answer = {w: time.monotonic() for w in workers}
        ping = Ping().to_bytes()
        while True:
            await anyio.sleep(PING_EVERY)
            for w in workers:
                try:
                    await self.nc.request(task_subject(self.spec.name, w), ping, timeout=PING_EVERY)
                    last_answer[w] = time.monotonic()
                except NoRespondersError:
                    return w  # its connection is gone: NATS knows at once
                except NatsTimeout:
                    if time.monotonic() - last_answer[w] > PING_PATIENCE:
                        return w
