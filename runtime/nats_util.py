"""Connecting to NATS and creating Shoal's JetStream resources idempotently."""

from __future__ import annotations

import logging
import os
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from . import protocol

log = logging.getLogger("shoal.nats")

DEFAULT_URL = "nats://127.0.0.1:4222"


def nats_url() -> str:
    return os.environ.get("SHOAL_NATS_URL", DEFAULT_URL)


async def connect(url: str | None = None, *, name: str, **options: Any) -> NATS:
    """Connect with Shoal's defaults: reconnect forever, credentials from the environment."""

    async def on_error(e: Exception) -> None:
        log.warning("nats (%s): %s", name, e)

    creds = os.environ.get("SHOAL_NATS_CREDS")
    opts: dict[str, Any] = {
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "error_cb": on_error,
    }
    if creds:
        opts["user_credentials"] = creds
    opts.update(options)
    return await nats.connect(url or nats_url(), **opts)


# Results are kept this long for look-up by request id.
RESULTS_TTL = float(os.environ.get("SHOAL_RESULTS_TTL", 3600))
# Liveness entries vanish this long after the last heartbeat.
HEARTBEAT_TTL = 10.0


async def kv(js: JetStreamContext, bucket: str) -> KeyValue:
    """Open one of Shoal's buckets, creating it with its standard settings if missing."""
    try:
        return await js.key_value(bucket)
    except (BucketNotFoundError, NotFoundError):
        pass
    ttl = {
        protocol.RESULTS_BUCKET: RESULTS_TTL,
        protocol.WORKERS_BUCKET: HEARTBEAT_TTL,
        protocol.CONTROLLERS_BUCKET: HEARTBEAT_TTL,
        protocol.CANCEL_BUCKET: RESULTS_TTL,
    }.get(bucket)
    config = KeyValueConfig(bucket=bucket, history=1, ttl=ttl, storage=StorageType.FILE)
    return await js.create_key_value(config)
