"""Where deployed code lives: KV bucket ``shoal_code`` when it fits one message, else the
JetStream object store of the same name (chunked). Both are keyed by the code's digest.
"""

from __future__ import annotations

import datetime
import logging
from typing import TYPE_CHECKING

import msgpack
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError

from runtime.errors import DeployError
from runtime.wire import protocol, replicas
from runtime.wire.connection import kv, snapshot
from runtime.wire.kvwatch import listing

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js import JetStreamContext
    from nats.js.object_store import ObjectStore

log = logging.getLogger("shoal.code")

HEADROOM = 8 * 1024  # bytes of a message kept for headers
PRUNE_GRACE = 600.0  # seconds before unreferenced code may go: a deploy may be mid-way


def kv_limit(nc: NATS) -> int:
    """The largest code blob kept in KV: the server's max payload, less headers."""
    return int(nc.max_payload) - HEADROOM


async def put_code(nc: NATS, sha: str, blob: bytes) -> str:
    """Store a bundle's archive under its digest; returns where ("kv" or "object")."""
    js = nc.jetstream()
    if len(blob) <= kv_limit(nc):
        code = await kv(js, protocol.CODE_BUCKET)
        await code.put(sha, blob)
        return "kv"
    store = await _objects(js, create=True)
    try:
        info = await store.get_info(sha)
        if info.size == len(blob):
            return "object"  # the same code, already stored (its name is its digest)
    except NotFoundError:
        pass
    await store.put(sha, blob)
    return "object"


async def get_code(js: JetStreamContext, sha: str) -> bytes:
    """The archive stored under ``sha``, from KV or the object store."""
    code = await kv(js, protocol.CODE_BUCKET)
    try:
        entry = await code.get(sha)
        if entry.value:
            return entry.value
    except NotFoundError:
        pass
    try:
        store = await _objects(js)
        return bytes((await store.get(sha)).data or b"")
    except NotFoundError:
        raise DeployError(
            f"no deployed code {sha[:12]} in KV or the object store {protocol.CODE_BUCKET}: "
            "deploy the function again"
        ) from None


async def _objects(js: JetStreamContext, *, create: bool = False) -> ObjectStore:
    try:
        return await js.object_store(protocol.CODE_BUCKET)
    except (BucketNotFoundError, NotFoundError):
        if not create:
            raise
    config = ObjectStoreConfig(
        bucket=protocol.CODE_BUCKET, storage=StorageType.FILE, replicas=replicas.wanted(js)
    )
    return await js.create_object_store(protocol.CODE_BUCKET, config=config)


async def code_in_use(js: JetStreamContext) -> set[str]:
    """The digests that deployed functions and executors name."""
    functions = await snapshot(await kv(js, protocol.FUNCTIONS_BUCKET))
    return {str(msgpack.unpackb(v).get("code_sha", "")) for v in functions.values()}


async def delete_code(js: JetStreamContext, sha: str) -> bool:
    """Remove the code stored under ``sha`` (KV or object store); False if there was none."""
    code = await kv(js, protocol.CODE_BUCKET)
    try:
        await code.get(sha)
        await code.purge(sha)
        return True
    except NotFoundError:
        pass
    try:
        store = await _objects(js)
        await store.get_info(sha)
        await store.delete(sha)
        return True
    except NotFoundError:
        return False


async def prune_code(js: JetStreamContext, *, grace: float = PRUNE_GRACE) -> list[str]:
    """Remove code that no deployed function names any more and that was stored more than
    ``grace`` seconds ago (a concurrent deploy stores its code before its specs).

    Returns the digests removed.
    """
    used = await code_in_use(js)
    cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=grace)
    removed = []
    code = await kv(js, protocol.CODE_BUCKET)
    stale = [
        key
        for key, change in (await listing(code)).items()
        if key not in used and (change.created is None or change.created <= cutoff)
    ]
    for key in stale:
        await code.purge(key)
        removed.append(key)
    try:
        store = await _objects(js)
        objects = await store.list(ignore_deletes=True)
    except NotFoundError:  # no object store yet, or an empty one
        objects = []
    for info in objects:
        mtime = datetime.datetime.fromisoformat(info.mtime) if info.mtime else None
        if info.name and info.name not in used and (mtime is None or mtime <= cutoff):
            await store.delete(info.name)
            removed.append(info.name)
    if removed:
        log.info("removed code no function uses: %s", ", ".join(r[:12] for r in removed))
    return removed
