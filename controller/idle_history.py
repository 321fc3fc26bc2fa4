"""Idle-time histograms shared in NATS KV, so they outlive a controller and serve them all.

One key per function in the ``shoal_idle_history`` bucket, its value a msgpack map (see
:func:`encode`). Every change is a read-modify-write checked against the revision read: a
write that finds a newer revision (another controller wrote in between) fails with
"wrong last sequence", and the change is applied again to what is stored now. So two
controllers recording at once never lose each other's samples.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from typing import TYPE_CHECKING, Any

import msgpack
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import (
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)

from runtime.wire import protocol, replicas

from .keepalive import DEFAULT, OOB_KEPT, IdleHistory, KeepAliveSettings, Windows, new_history
from .keepalive import observe as observe_idle
from .keepalive import windows as windows_of

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

log = logging.getLogger("shoal.idle_history")

BUCKET = protocol.IDLE_HISTORY_BUCKET
FORMAT = 1  # the value's layout; a reader refuses others
COLD_KEPT_S = 3600.0  # cold starts are kept this long (`shoal status` shows the last hour)
COLD_KEPT = 1000  # and at most this many
_KEY_RE = re.compile(r"^[-/_=a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*$")  # what NATS KV accepts


class HistoryConflict(RuntimeError):
    """A change kept losing the race to other writers (see ``IdleHistoryStore.attempts``)."""


def encode(history: IdleHistory) -> bytes:
    """The stored form: bins as [index, count] pairs (most are empty)."""
    data: bytes = msgpack.packb(
        {
            "v": FORMAT,
            "bin_s": history.bin_s,
            "bins": len(history.counts),
            "counts": [[i, c] for i, c in enumerate(history.counts) if c],
            "oob": history.oob_count,
            "oob_recent": list(history.oob_recent),
            "cold": list(history.cold_starts),
            "last": history.last_active,
        }
    )
    return data


def decode(data: bytes) -> IdleHistory:
    """The history stored by :func:`encode`; ValueError for anything else."""
    try:
        value = msgpack.unpackb(data, raw=False)
    except Exception as e:
        raise ValueError(f"not msgpack: {e}") from e
    if not isinstance(value, dict) or value.get("v") != FORMAT:
        raise ValueError(f"not an idle history of format {FORMAT}")
    bin_s, bins = value.get("bin_s"), value.get("bins")
    if not isinstance(bin_s, int | float) or not isinstance(bins, int) or not 0 < bins <= 100_000:
        raise ValueError("bad histogram geometry")
    counts = [0] * bins
    for pair in _list(value.get("counts")):
        if not (isinstance(pair, list) and len(pair) == 2 and all(type(x) is int for x in pair)):
            raise ValueError("bad bin")
        i, c = pair
        if not 0 <= i < bins:
            raise ValueError("bin out of range")
        counts[i] = c
    oob, recent = value.get("oob"), _list(value.get("oob_recent"))
    if type(oob) is not int or not all(_finite(x) for x in recent):
        raise ValueError("bad out-of-bounds record")
    cold = _list(value.get("cold"))  # absent in values written before it was kept
    if not all(_finite(x) for x in cold):
        raise ValueError("bad cold-start record")
    last = value.get("last", 0.0)  # absent in values written before it was kept
    if not _finite(last):
        raise ValueError("bad last activity")
    recent_s = [float(x) for x in recent][-OOB_KEPT:]
    return IdleHistory(
        float(bin_s), counts, oob, recent_s, [float(x) for x in cold], last_active=float(last)
    )


def key_of(function: str) -> str:
    """The function's key: its name where NATS KV allows it, else a digest of the name."""
    if _KEY_RE.match(function):
        return function
    return "sha256-" + hashlib.sha256(function.encode()).hexdigest()


async def open_bucket(js: JetStreamContext) -> KeyValue:
    """The bucket, created (file storage, latest value only) if missing."""
    try:
        return await js.key_value(BUCKET)
    except (BucketNotFoundError, NotFoundError):
        pass
    config = KeyValueConfig(
        bucket=BUCKET, history=1, storage=StorageType.FILE, replicas=replicas.wanted(js)
    )
    return await js.create_key_value(config)


class IdleHistoryStore:
    """Reads and records functions' idle-time histograms in the bucket."""

    def __init__(
        self, bucket: KeyValue, settings: KeepAliveSettings = DEFAULT, *, attempts: int = 100
    ) -> None:
        self.bucket = bucket
        self.settings = settings  # its bin_s and bins shape new histograms only
        self.attempts = attempts
        self.conflicts = 0  # writes refused because another writer came first

    async def read(self, function: str) -> tuple[IdleHistory, int]:
        """The stored history and its revision; a new one and 0 (or the revision of its
        deletion) when none is stored. An undecodable value reads as a new history, which
        the next write replaces."""
        try:
            entry = await self.bucket.get(key_of(function))
        except KeyNotFoundError as e:
            revision = int(e.entry.revision) if e.entry is not None and e.entry.revision else 0
            return new_history(self.settings), revision
        revision = int(entry.revision or 0)
        try:
            return decode(entry.value or b""), revision
        except ValueError as e:
            log.warning("replacing the undecodable idle history of %s: %s", function, e)
            return new_history(self.settings), revision

    async def write(self, function: str, history: IdleHistory, revision: int) -> int | None:
        """Store ``history`` if ``revision`` is still the latest; the new revision, or None
        when another writer stored one since (nothing is written then)."""
        try:
            return await self.bucket.update(key_of(function), encode(history), last=revision)
        except KeyWrongLastSequenceError:
            self.conflicts += 1
            return None

    async def record(
        self,
        function: str,
        *idle_s: float,
        cold_at: Sequence[float] = (),
        active_at: float | None = None,
    ) -> IdleHistory:
        """Add idle times (seconds), cold starts (Unix times) and the time of an activity
        (Unix; the latest one stored is kept) to the function's stored history; what is
        stored now. Cold starts older than an hour are dropped."""
        for _ in range(self.attempts):
            history, revision = await self.read(function)
            for idle in idle_s:
                observe_idle(history, idle)
            if active_at is not None:
                history.last_active = max(history.last_active, active_at)
            since = time.time() - COLD_KEPT_S
            cold = sorted(t for t in [*history.cold_starts, *cold_at] if t >= since)
            history.cold_starts = cold[-COLD_KEPT:]
            if await self.write(function, history, revision) is not None:
                return history
        raise HistoryConflict(f"{self.attempts} writes of {function}'s idle history lost races")

    async def windows(self, function: str, *, fixed_s: float | None = None) -> Windows:
        """The function's windows from its stored history."""
        history, _ = await self.read(function)
        return windows_of(history, self.settings, fixed_s=fixed_s)


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("expected a list")
    return value


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x >= 0
