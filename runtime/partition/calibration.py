"""The data plane's cost models, shared with every worker through KV (``shoal_dataplane``).

**The cluster's model** (key ``cost``). Measuring both channels takes a few hundred
milliseconds of traffic; doing it in every worker as a pool starts would measure the
workers' own start-up contention instead of the wire. A controller measures at start (and
``shoal calibrate`` on demand): inline, payloads to its own inbox; object, a PUT and a GET.

**One model per pair of hosts** (key ``pair.<from>.<to>``, :func:`pair_key`). Bytes over a
real link between hosts are where the object channel can win, and a loopback measurement
says nothing of them. A worker of a partitioned model that sees a ready peer on another
host, and knows no model for its pair of hosts (or none newer than ``PAIR_MAX_AGE``),
measures it (:func:`measure_pairs`): inline, a round trip through the peer (a
:class:`~runtime.partition.messages.Ping` padded with the payload, answered by the peer with
a small reply); object, a PUT and a GET of the same sizes on the shared store, from this
host. It stores the fit under the pair's key; every worker follows the whole bucket, and the
data plane uses a pair's model for messages between its hosts, the cluster's otherwise.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import msgpack
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from runtime.partition.channels import HEADROOM, headers, publish_inline
from runtime.partition.costmodel import CostModel, Link, Pair, fit
from runtime.partition.dataplane import DataPlane
from runtime.partition.messages import Ping, task_subject
from runtime.wire import protocol
from runtime.wire.connection import kv
from runtime.wire.kvwatch import Change, Follower, listing

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from runtime.partition.peers import Peers

log = logging.getLogger("shoal.calibration")

KEY = "cost"
PAIR = "pair"  # pair.<from host>.<to host>, each host name made safe for a key (host_token)
PAIR_MAX_AGE = 1800.0  # seconds after which a worker measures a pair's model again
PAIR_RETRY = 60.0  # seconds before trying a pair again after a measurement failed
PING_TIMEOUT = 10.0  # seconds one padded ping may take
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def host_token(host: str) -> str:
    """``host`` as one token of a KV key: letters, digits, ``_`` and ``-`` as they are, every
    other byte (``.`` and ``=`` included) as ``=XX`` (hex), so distinct hosts stay distinct."""
    return "".join(c if c in _SAFE else "".join(f"={b:02X}" for b in c.encode()) for c in host)


def token_host(token: str) -> str:
    """The host name :func:`host_token` made ``token`` from."""
    out = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "=":
            out.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            out += token[i].encode()
            i += 1
    return out.decode()


def pair_key(src: str, dst: str) -> str:
    """The KV key of the model for messages from host ``src`` to host ``dst``."""
    return f"{PAIR}.{host_token(src)}.{host_token(dst)}"


def read_pair_key(key: str) -> Pair | None:
    """The (from, to) hosts a pair's key names; None for any other key."""
    parts = key.split(".")
    if len(parts) != 3 or parts[0] != PAIR:
        return None
    try:
        return token_host(parts[1]), token_host(parts[2])
    except ValueError:
        return None


def to_wire(model: CostModel) -> bytes:
    links = {"inline": model.inline, "object": model.object}
    return msgpack.packb(  # type: ignore[no-any-return]
        {k: [v.latency_s, v.bytes_per_s] if v else None for k, v in links.items()}
    )


def from_wire(data: bytes) -> CostModel:
    d = msgpack.unpackb(data, raw=False)
    obj = d.get("object")
    return CostModel(inline=Link(*d["inline"]), object=Link(*obj) if obj else None, calibrated=True)


async def measure(nc: NATS, store: Any | None) -> CostModel:
    """Time both channels through this cluster's NATS and object store, and fit the model."""
    plane = DataPlane(nc, "calibration", uuid.uuid4().hex[:12], store)
    await plane.start()
    try:
        if store is not None:
            await store.ensure_bucket()
        return await calibrate(plane)
    finally:
        await plane.stop()


async def calibrate(plane: DataPlane, *, repeats: int = 3) -> CostModel:
    """Measure both of ``plane``'s channels and fit its cost model to what was seen."""
    inline = await _measure_inline(plane, repeats)
    obj: Link | None = None
    if plane.store is not None:
        try:
            obj = await _measure_object(plane, repeats)
        except Exception as e:
            log.warning("object store unusable for intermediates (%s); inline only", e)
            plane.avoid_object_store()
            obj = plane.cost.object
    plane.set_cost(CostModel(inline=inline, object=obj, calibrated=True))
    log.info("data plane calibrated: %s", plane.cost.describe())
    return plane.cost


async def _measure_inline(plane: DataPlane, repeats: int) -> Link:
    """Time payloads from ``plane`` to its own inbox, chunked as intermediates are."""
    run = "cal-" + uuid.uuid4().hex[:12]
    box = plane.mailbox(run, 0)
    samples: list[tuple[int, float]] = []
    try:
        step = 0
        for size in (1024, 64 * 1024, 1 << 20, 4 << 20):
            body = _noise(size)
            for _ in range(repeats):
                start = time.perf_counter()
                await publish_inline(plane.nc, plane.inbox, body, headers("data", run, step, 0, 0))
                await box.take((step, 0))
                samples.append((size, time.perf_counter() - start))
                step += 1
    finally:
        plane.drop(run, 0)
    return fit(samples)


async def _measure_object(plane: DataPlane, repeats: int) -> Link:
    """Time a write and a read of payloads through ``plane``'s object store."""
    store = plane.store
    assert store is not None
    samples: list[tuple[int, float]] = []
    run = "cal-" + uuid.uuid4().hex[:12]
    prefix = plane.object_prefix(run)
    try:
        for size in (1024, 1 << 20, 4 << 20):
            body = _noise(size)
            for i in range(repeats):
                key = f"{prefix}{size}_{i}"
                start = time.perf_counter()
                ref = await store.put_bytes(key, body)
                await store.get_bytes(ref)
                samples.append((size, time.perf_counter() - start))
                await store.delete(key)
    finally:
        with anyio.CancelScope(shield=True):
            await plane.sweep(run)
    return fit(samples)


def _noise(size: int) -> bytes:
    # Incompressible, so calibration measures the wire and not zlib.
    return os.urandom(size)


async def publish(nc: NATS, model: CostModel, pair: Pair | None = None) -> None:
    """Store ``model``: the cluster's, or the one of ``pair`` of hosts."""
    bucket = await kv(nc.jetstream(), protocol.DATAPLANE_BUCKET)
    await bucket.put(KEY if pair is None else pair_key(*pair), to_wire(model))


async def models(nc: NATS) -> dict[str, CostModel]:
    """Every model stored now, by key (``cost``, ``pair.<from>.<to>``)."""
    bucket = await kv(nc.jetstream(), protocol.DATAPLANE_BUCKET)
    return {k: from_wire(c.value) for k, c in (await listing(bucket)).items()}


async def follow(nc: NATS, plane: DataPlane) -> None:
    """Keep ``plane``'s models at the latest calibrations: the cluster's and every pair's
    (runs until cancelled)."""
    bucket = await kv(nc.jetstream(), protocol.DATAPLANE_BUCKET)

    def on_change(change: Change) -> None:
        if change.deleted:
            return  # keep the last fit: a calibration is never withdrawn, only replaced
        pair = read_pair_key(change.key)
        if pair is None and change.key != KEY:
            return
        try:
            model = from_wire(change.value)
        except Exception as e:
            log.warning("ignoring an unreadable cost model under %s: %s", change.key, e)
            return
        if plane.store is None:  # this worker cannot use the object channel
            model = CostModel(inline=model.inline, object=None, calibrated=True)
        plane.set_cost(model, pair)
        log.info("data plane cost model %s: %s", change.key, model.describe())

    await Follower(bucket, on_change).run()


async def measure_pairs(plane: DataPlane, peers: Peers) -> None:
    """Measure this worker's host to each other host its ready peers run on, whenever no
    model of that pair is known or the known one is older than ``PAIR_MAX_AGE``; store each
    fit (runs until cancelled)."""
    tried: dict[str, float] = {}  # host -> when this worker last tried it
    while True:
        changed = peers.changed
        mine = peers.host_of(plane.worker_id)
        if mine is not None:
            for host, worker in _other_hosts(peers, plane.worker_id, mine).items():
                now = time.monotonic()
                retried_lately = now - tried.get(host, -math.inf) < PAIR_RETRY
                if retried_lately or not _due(plane, (mine, host), now):
                    continue
                tried[host] = now
                try:
                    model = await measure_pair(plane, worker)
                    await publish(plane.nc, model, (mine, host))
                    plane.set_cost(model, (mine, host))
                    log.info("calibrated %s -> %s: %s", mine, host, model.describe())
                except Exception as e:
                    log.warning("calibrating %s -> %s failed: %s", mine, host, e)
        await changed.wait()  # the next heartbeat of any peer


def _other_hosts(peers: Peers, me: str, mine: str) -> dict[str, str]:
    """One ready peer per host other than ``mine``."""
    found: dict[str, str] = {}
    for worker in sorted(peers.ready(exclude={me})):
        host = peers.host_of(worker)
        if host is not None and host != mine:
            found.setdefault(host, worker)
    return found


def _due(plane: DataPlane, pair: Pair, now: float) -> bool:
    updated = plane.pair_updated.get(pair)
    return updated is None or now - updated > PAIR_MAX_AGE


async def measure_pair(plane: DataPlane, worker: str, *, repeats: int = 3) -> CostModel:
    """Time both channels from this worker to ``worker``: inline as padded pings through it,
    object as a PUT and a GET on the shared store."""
    subject = task_subject(plane.function, worker)
    limit = max(2048, plane.nc.max_payload - HEADROOM - 1024)  # one message, with its map
    samples: list[tuple[int, float]] = []
    for size in (1024, 64 * 1024, limit):
        ping = Ping(pad=_noise(size)).to_bytes()
        for _ in range(repeats):
            start = time.perf_counter()
            try:
                await plane.nc.request(subject, ping, timeout=PING_TIMEOUT)
            except (NoRespondersError, NatsTimeout) as e:
                raise RuntimeError(f"peer {worker} did not answer a ping: {e!r}") from e
            samples.append((size, time.perf_counter() - start))
    inline = fit(samples)
    obj: Link | None = None
    if plane.store is not None:
        try:
            obj = await _measure_object(plane, repeats)
        except Exception as e:
            log.warning("object store unusable for intermediates (%s); inline only", e)
    return CostModel(inline=inline, object=obj, calibrated=True)
