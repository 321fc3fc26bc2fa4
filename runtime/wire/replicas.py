"""How many copies JetStream keeps of every stream, KV bucket and object store Shoal makes.

One decision, :func:`wanted`: ``SHOAL_REPLICAS`` if set, else the number of servers in the
cluster the connection is on, at most 3 (so 1 on a single server, 3 on a cluster of three or
more). The cluster's size comes from the server's INFO: a clustered server lists every
server's client URL, its own included, in ``connect_urls``, which any account sees, unlike
the system account's ``$SYS`` requests (``$JS.API.INFO`` tells an account its limits, not the
cluster). A server configured with ``no_advertise`` lists none, and a cluster may hold servers
without JetStream: set ``SHOAL_REPLICAS`` there.

Every resource is made with that many replicas (:func:`wanted`, :func:`stream`); an existing
deployment is moved to more by :func:`settle`, which a controller runs as it starts. Replicas
are only ever raised here, never lowered (a stream with more copies than wanted loses nothing
by keeping them): lower one by hand, ``nats stream edit NAME --replicas N``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import nats.js.errors

from runtime import config

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js import JetStreamContext
    from nats.js.api import StreamConfig

log = logging.getLogger("shoal.replicas")

MAX_DEFAULT = 3  # the default's ceiling: three copies survive the loss of one server

# The streams Shoal makes: functions' event streams (SHOAL_FN_), logs and dead letters, and the
# streams behind its KV buckets and object store (bucket names start with shoal_).
PREFIXES = ("SHOAL_", "KV_shoal_", "OBJ_shoal_")


def cluster_size(nc: NATS) -> int:
    """The servers in ``nc``'s cluster by its server's INFO (1 when it lists none)."""
    # nats-py keeps the INFO it connected with; it lists the cluster as the routes then knew it.
    info = getattr(nc, "_server_info", None) or {}
    urls = set(info.get("connect_urls") or ())
    urls.update(s.netloc for s in nc.discovered_servers)  # servers announced since
    return max(1, len(urls))


def wanted(js: JetStreamContext) -> int:
    """The replicas every Shoal stream, bucket and object store should have."""
    explicit = config.REPLICAS.get()
    if explicit is not None:
        return explicit
    return min(MAX_DEFAULT, cluster_size(js._nc))


def stream(js: JetStreamContext, cfg: StreamConfig) -> StreamConfig:
    """``cfg`` with :func:`wanted` replicas, unless it names its own."""
    if cfg.num_replicas is None:
        cfg.num_replicas = wanted(js)
    return cfg


def kept(js: JetStreamContext, cfg: StreamConfig, existing: StreamConfig) -> StreamConfig:
    """``cfg`` to update a stream that has ``existing``'s settings: never fewer replicas."""
    cfg.num_replicas = max(existing.num_replicas or 1, cfg.num_replicas or wanted(js))
    return cfg


async def settle(js: JetStreamContext) -> list[str]:
    """Raise every existing Shoal stream with fewer replicas than :func:`wanted` to that many;
    returns the names of those raised. One that cannot be raised now (too few servers up) is
    logged and left as it is: the next controller start tries again."""
    want = wanted(js)
    raised: list[str] = []
    for info in await js.streams_info():
        cfg = info.config
        name = str(cfg.name)
        if not name.startswith(PREFIXES) or (cfg.num_replicas or 1) >= want:
            continue
        old = cfg.num_replicas or 1
        cfg.num_replicas = want
        try:
            await js.update_stream(cfg)
        except nats.js.errors.APIError as e:
            log.warning("cannot raise %s from %d to %d replicas: %s", name, old, want, e)
            continue
        log.info("raised %s from %d to %d replicas", name, old, want)
        raised.append(name)
    return raised
