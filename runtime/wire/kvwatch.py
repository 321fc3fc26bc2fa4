"""Following a KV bucket: one watch loop for every place that keeps up with a bucket.

:class:`Follower` delivers each change to the keys it follows (all of a bucket's, or those a
pattern matches) as a :class:`Change`, a put or a delete, and keeps doing so across the
connection's reconnects and the failures of its watch; :func:`listing` reads a bucket's
current values once, through the same watch.

Deleted. An entry is deleted (:func:`is_deleted`) when its operation is ``DEL`` or ``PURGE``
(``KeyValue.delete``/``purge``, and the markers a server places for a TTL or an age limit,
which nats-py reports as those two) or when its value is empty: Shoal never stores an empty
value, and the watch loops this module replaces treated one either as a delete or as nothing
to act on. A key that merely expires under the bucket's age limit, with no marker (how
nats-server handles the limit unless told to place markers), sends nothing: a follower hears
of it only when it watches anew (below). Views of heartbeats therefore also judge entries by
their age.

Watching anew. A watch is an ephemeral consumer of the bucket's stream, kept by the server
and fed to one connection. The follower stops it and watches anew when the connection has
reconnected (a restarted server may have lost the consumer), when :meth:`Follower.rewatch`
asks, and when a watch cannot be made or has ended, then waiting ``RETRY_MIN`` doubling to
``RETRY_MAX`` seconds between attempts, so a server that is away is not hammered. A new
watch delivers every key's current value again (``Change.initial``), so nothing that changed
in between is lost, but a consumer sees values it has seen before: **consumers must be
idempotent** (a put means "the value is now this", a delete "there is no value"). Once a
new watch has caught up, keys that were present before and are missing from it (deleted
without a marker in between, or expired) are delivered as deletes.

Caught up. The values current when a watch starts come first; the last of them carries
``delta == 0`` (nothing pending behind it), and an empty listing shows as a consumer that has
delivered nothing and has nothing pending. nats-py's own marker (a ``None`` entry) can come
before values it has already received, so it is trusted only where that cannot happen: after
at least one value (the marker then follows the message that emptied the backlog).

Stopping. Making a watch is shielded from cancellation (nats-py bounds it with its request
timeout), so a cancelled follower always holds the watch it made; stopping it, shielded too,
unsubscribes and deletes its consumer at once rather than leaving it to expire. A follower
needs the rights of a watch on the bucket's stream, ``$JS.API.CONSUMER.*.KV_<bucket>[.>]``
(create, info, delete), as the roles in ``docs/security.md`` grant.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from nats.js.errors import NotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

if TYPE_CHECKING:
    from anyio.abc import TaskStatus
    from nats.aio.client import Client as NATS

log = logging.getLogger("shoal.kvwatch")

RETRY_MIN = 0.5  # seconds before watching again after a failure, doubling up to RETRY_MAX
RETRY_MAX = 5.0
CHECK_EVERY = 1.0  # seconds between looks at the connection's reconnect count
STOP_TIMEOUT = 2.0  # seconds to delete a stopped watch's consumer (else the server expires it)
INACTIVE = 60.0  # seconds a consumer nobody listens to outlives its watch on the server


def is_deleted(entry: KeyValue.Entry) -> bool:
    """Whether ``entry`` reports its key deleted (the module's docstring says why)."""
    return entry.operation in (KV_DEL, KV_PURGE) or not entry.value


@dataclass(frozen=True)
class Change:
    """A key's new state: a value put, or deleted (``value`` then empty)."""

    key: str
    value: bytes
    deleted: bool
    revision: int  # the stream sequence of the change; 0 for a delete inferred on a new watch
    created: datetime.datetime | None  # when the server stored it (None for an inferred one)
    initial: bool  # one of the values current when its watch started, not a later change


OnChange = Callable[[Change], None]


class WatchFailed(Exception):
    """A watch could not be made, or stopped delivering: the follower watches anew."""


_NOTHING: Any = object()  # no entry within CHECK_EVERY


class Follower:
    """Follows ``keys`` (a key, or a pattern with ``*`` and ``>``) of ``bucket``, calling
    ``on_change`` with each change, in order, until cancelled.

    ``on_change`` runs in the follower's task and must not block; an exception from it ends
    :meth:`run` (a consumer's bug is not a watch failure to retry). With ``retry=False`` a
    failed watch raises :class:`WatchFailed` instead of being made anew (one-shot reads).
    """

    def __init__(
        self, bucket: KeyValue, on_change: OnChange, *, keys: str = ">", retry: bool = True
    ) -> None:
        self._bucket = bucket
        self._retry = retry
        self._on_change = on_change
        self._keys = keys
        self._nc: NATS = bucket._js._nc
        self._present: set[str] = set()  # keys whose latest change was a put
        self._scope = anyio.CancelScope()  # the current watch's; rewatch() cancels it
        self._started: Callable[[], None] | None = None
        self.caught_up = False  # whether a watch has delivered its initial values
        self.watches = 0  # watches made so far

    @property
    def name(self) -> str:
        return f"{self._bucket._name}/{self._keys}"

    def rewatch(self) -> None:
        """Stop the current watch and watch anew (for owners who know it went bad)."""
        self._scope.cancel()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow until cancelled, or until the connection is closed for good.

        ``task_status.started()`` comes once the first watch has caught up: by then every
        value current at the start has been delivered.
        """
        self._started = task_status.started
        delay = RETRY_MIN
        while not self._nc.is_closed:
            # A new scope before the watch is made: a rewatch() asked for meanwhile counts.
            self._scope = anyio.CancelScope()
            try:
                await self._watch_once(self._scope)
                delay = RETRY_MIN
            except WatchFailed as e:
                if not self._retry:
                    raise
                if self._nc.is_closed:
                    break
                log.warning(
                    "watch of %s failed (%s); watching anew in %gs",
                    self.name,
                    e.__cause__ or e,
                    delay,
                )
                await anyio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
        log.info("watch of %s ends: the connection is closed", self.name)

    async def _watch_once(self, scope: anyio.CancelScope) -> None:
        """One watch, from making it to stopping it; returns when it is time to watch anew."""
        watcher: Any = None
        try:
            with anyio.CancelScope(shield=True):
                try:
                    watcher = await self._bucket.watch(self._keys, inactive_threshold=INACTIVE)
                except Exception as e:
                    raise WatchFailed("cannot watch") from e
            self.watches += 1
            reconnects = self._nc.stats["reconnects"]
            with scope:
                await self._read(watcher, reconnects)
        finally:
            if watcher is not None:
                await self._stop(watcher)

    async def _read(self, watcher: Any, reconnects: int) -> None:
        """Deliver the watch's changes until the connection reconnects or the watch ends."""
        seen: set[str] = set()  # keys among this watch's initial values
        caught_up = False
        entries = 0
        while self._nc.stats["reconnects"] == reconnects and not self._nc.is_closed:
            entry = _NOTHING
            with anyio.move_on_after(CHECK_EVERY):
                try:
                    entry = await watcher.__anext__()
                except StopAsyncIteration:
                    raise WatchFailed("the watch was stopped under the follower") from None
            if entry is _NOTHING:
                continue
            if caught_up:
                if entry is not None:
                    self._deliver(entry, initial=False)
                continue
            if entry is None:
                caught_up = entries > 0 or await _delivered_nothing(watcher)
            else:
                entries += 1
                seen.add(entry.key)
                self._deliver(entry, initial=True)
                caught_up = entry.delta == 0
            if caught_up:
                self._catch_up(seen)
        if self._nc.stats["reconnects"] != reconnects:
            log.info("watching %s anew after a reconnect", self.name)

    def _deliver(self, entry: KeyValue.Entry, *, initial: bool) -> None:
        deleted = is_deleted(entry)
        if deleted:
            self._present.discard(entry.key)
        else:
            self._present.add(entry.key)
        created: object = entry.created  # a datetime, whatever nats-py annotates
        self._on_change(
            Change(
                key=entry.key,
                value=b"" if deleted else bytes(entry.value or b""),
                deleted=deleted,
                revision=int(entry.revision or 0),
                created=created if isinstance(created, datetime.datetime) else None,
                initial=initial,
            )
        )

    def _catch_up(self, seen: set[str]) -> None:
        """The initial values are all in: keys gone meanwhile without a marker are deleted."""
        self.caught_up = True
        for key in sorted(self._present - seen):
            self._present.discard(key)
            self._on_change(Change(key, b"", True, 0, None, initial=True))
        if self._started is not None:
            started, self._started = self._started, None
            started()

    async def _stop(self, watcher: Any) -> None:
        with anyio.CancelScope(shield=True):
            consumer = getattr(watcher._sub, "_consumer", None)
            try:
                await watcher.stop()
            except Exception as e:  # the connection is closed: nothing left to stop
                log.debug("stopping the watch of %s: %s", self.name, e)
            if consumer is None or not self._nc.is_connected:
                return  # the server drops it after INACTIVE seconds without a listener
            with anyio.move_on_after(STOP_TIMEOUT):
                try:
                    await self._bucket._js.delete_consumer(self._bucket._stream, consumer)
                except NotFoundError:
                    pass  # the server lost it already (a restart)
                except Exception as e:
                    log.debug("deleting the consumer of %s's watch: %s", self.name, e)


async def _delivered_nothing(watcher: Any) -> bool:
    """Whether the server delivered nothing to ``watcher`` and has nothing pending: its
    initial listing is empty (nats-py's marker alone could come before values)."""
    try:
        info = await watcher._sub.consumer_info()
    except Exception as e:
        raise WatchFailed("cannot tell whether the bucket is empty") from e
    delivered = info.delivered.consumer_seq if info.delivered is not None else 0
    return not info.num_pending and not delivered


class _CancelWhenStarted:
    """A task status that ends a follower once it has caught up."""

    def __init__(self, scope: anyio.CancelScope) -> None:
        self._scope = scope

    def started(self, value: None = None) -> None:
        self._scope.cancel()


async def listing(bucket: KeyValue, keys: str = ">") -> dict[str, Change]:
    """The current value of every key of ``bucket`` that ``keys`` matches, read through one
    watch (deleted keys left out); raises :class:`WatchFailed` if the watch fails. Unlike
    ``connection.snapshot`` it keeps when each value was stored (``Change.created``)."""
    found: dict[str, Change] = {}

    def on_change(change: Change) -> None:
        if change.deleted:
            found.pop(change.key, None)
        else:
            found[change.key] = change

    follower = Follower(bucket, on_change, keys=keys, retry=False)
    with anyio.CancelScope() as scope:
        await follower.run(task_status=_CancelWhenStarted(scope))
    if not follower.caught_up:
        raise WatchFailed("the connection is closed")
    return found
