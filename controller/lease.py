"""Who places: one controller holds a lease in KV and writes the plan beside it.

The lease and the plan are one entry, key ``plan`` of KV ``shoal_placement``:
``{"leader": id, "plan": {function: {host: n}}, "unplaced": {...}, "hosts": {host: id}}``.
Every write is revision-checked (``update(last=revision)``), so of two controllers writing at
once one wins and the other learns it lost; a leader that lost the lease cannot overwrite
the plan of the one that took it.

- **Renewal.** The leader writes the entry at least every heartbeat (a changed plan at once).
- **Take-over.** A controller takes the lease when the entry names no leader, names one whose
  heartbeat in ``shoal_controllers`` is gone or stale, or has not changed for ``lease_s`` by
  its own clock (no clocks are compared across hosts). It writes the entry unchanged but for
  the leader, so the plan stays as it was until the new leader recomputes it from there.
- **Release.** A leader stopping writes the entry with no leader, so another takes over at
  its next pass instead of after ``lease_s``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import anyio
import msgpack
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from runtime.wire.kvwatch import Follower

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from nats.js.kv import KeyValue

    from runtime.wire.kvwatch import Change

    from .placement import Plan

log = logging.getLogger("shoal.lease")

KEY = "plan"


class PlacementLease:
    """This controller's view of the lease and the plan, and its writes to them."""

    def __init__(
        self,
        bucket: KeyValue,
        me: str,
        *,
        lease_s: float,
        renew_s: float,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.bucket = bucket
        self.me = me
        self.lease_s = lease_s
        self.renew_s = renew_s
        self.on_change = on_change
        self.value: dict[str, Any] = {}
        self.revision = 0  # of the latest change seen (0: none)
        self._changed_at = time.monotonic()
        self._written_at = float("-inf")
        self._follower = Follower(bucket, self._apply, keys=KEY)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        await self._follower.run(task_status=task_status)

    def _apply(self, change: Change) -> None:
        if 0 < change.revision < self.revision:
            return  # older than what this controller wrote itself
        value: dict[str, Any] = {}
        if not change.deleted:
            try:
                decoded = msgpack.unpackb(change.value, raw=False)
                value = decoded if isinstance(decoded, dict) else {}
            except Exception as e:  # the next leader's write replaces it
                log.warning("ignoring an undecodable placement entry: %s", e)
        self._set(value, change.revision)

    def _set(self, value: dict[str, Any], revision: int) -> None:
        changed = value != self.value
        self.value, self.revision = value, max(revision, 0)
        self._changed_at = time.monotonic()
        if changed:
            self.on_change()

    @property
    def leader(self) -> str:
        return str(self.value.get("leader") or "")

    def leads(self) -> bool:
        return self.leader == self.me

    def plan(self) -> Plan:
        plan = self.value.get("plan")
        return {str(f): {str(h): int(n) for h, n in c.items()} for f, c in (plan or {}).items()}

    def hosts(self) -> dict[str, str]:
        """Host name -> the controller the plan's host assignments are for."""
        return {str(h): str(c) for h, c in (self.value.get("hosts") or {}).items()}

    def unplaced(self) -> dict[str, int]:
        return {str(f): int(n) for f, n in (self.value.get("unplaced") or {}).items()}

    def expired(self, live: Collection[str]) -> bool:
        """Whether the lease is free to take: no leader, a silent one, or no renewal."""
        leader = self.leader
        return (
            not leader or leader not in live or time.monotonic() - self._changed_at > self.lease_s
        )

    async def claim(self, live: Collection[str]) -> bool:
        """Hold the lease: this controller's already, or taken now if it is free."""
        if self.leads():
            return True
        if not self.expired(live):
            return False
        if await self._write({**self.value, "leader": self.me}):
            log.info("controller %s now places workers (took over from %r)", self.me, self.leader)
            return True
        return False

    async def publish(self, plan: Plan, unplaced: dict[str, int], hosts: dict[str, str]) -> bool:
        """Write the plan (renewing the lease) if it changed or a renewal is due; False when
        another controller holds the lease now."""
        value = {"leader": self.me, "plan": plan, "unplaced": unplaced, "hosts": hosts}
        if value == self.value and time.monotonic() - self._written_at < self.renew_s:
            return True
        return await self._write(value)

    async def release(self) -> None:
        if self.leads():
            await self._write({**self.value, "leader": ""})

    async def _write(self, value: dict[str, Any]) -> bool:
        try:
            revision = await self.bucket.update(KEY, msgpack.packb(value), last=self.revision)
        except KeyWrongLastSequenceError:
            await self._reread()
            return False
        self._written_at = time.monotonic()
        self._set(value, revision)
        return True

    async def _reread(self) -> None:
        """The entry as stored now: another writer came first (the watch will say so too)."""
        try:
            entry = await self.bucket.get(KEY)
        except KeyNotFoundError as e:
            revision = int(e.entry.revision) if e.entry is not None and e.entry.revision else 0
            self._set({}, revision)
            return
        decoded = msgpack.unpackb(entry.value or b"\x80", raw=False)
        self._set(decoded if isinstance(decoded, dict) else {}, int(entry.revision or 0))
