"""Removing a deployed function: ``shoal rm``.

Order matters with controllers running: the spec goes first (no controller scales the
function or stands in for it any more), then its workers are asked to drain and are waited
for, then its stream and consumer go, and its code once no deployed function uses it. Dead
letters are kept unless asked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import msgpack
from nats.js.errors import KeyNotFoundError, NotFoundError

from runtime.bundles.store import code_in_use, delete_code
from runtime.errors import FunctionNotFound, ShoalError
from runtime.wire import deadletter, protocol
from runtime.wire.connection import kv, snapshot
from runtime.wire.spec import FunctionSpec

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js import JetStreamContext

log = logging.getLogger("shoal.deploy")


class EventsQueued(ShoalError):
    """``shoal rm`` refused: the function still has events stored and not yet answered."""

    code = "events_queued"


@dataclass
class Removed:
    """What ``remove_function`` removed, for the user."""

    function: str
    version: str
    workers_drained: int = 0
    workers_left: list[str] = field(default_factory=list)  # did not stop within the wait
    stream: str | None = None
    events_dropped: int = 0
    code: str | None = None
    dead_letters: int = 0

    def lines(self) -> list[str]:
        out = [f"removed {self.function} (version {self.version})"]
        out.append(f"  workers drained: {self.workers_drained}")
        if self.workers_left:
            out.append(f"  still stopping: {', '.join(self.workers_left)}")
        if self.stream:
            dropped = (
                f", {self.events_dropped} queued event(s) dropped" if self.events_dropped else ""
            )
            out.append(f"  stream {self.stream} and its consumer{dropped}")
        if self.code:
            out.append(f"  code {self.code} (no other function uses it)")
        if self.dead_letters:
            out.append(f"  dead letters purged: {self.dead_letters}")
        return out


async def remove_function(
    nc: NATS, name: str, *, force: bool = False, purge: bool = False, wait: float = 30.0
) -> Removed:
    """Remove ``name``; refuses (:class:`EventsQueued`) while events are queued unless
    ``force``. Dead letters stay unless ``purge``."""
    js = nc.jetstream()
    functions = await kv(js, protocol.FUNCTIONS_BUCKET)
    try:
        entry = await functions.get(name)
    except KeyNotFoundError:
        raise FunctionNotFound(f"no function {name!r} is deployed") from None
    assert entry.value is not None
    spec = FunctionSpec.from_bytes(entry.value)
    removed = Removed(name, spec.version)
    if spec.kind == "function":
        queued = await _queued(js, spec)
        if queued and not force:
            raise EventsQueued(
                f"{name} has {queued} event(s) queued or in flight; wait for them, "
                "or drop them with --force"
            )
    users = [
        s.name
        for s in (FunctionSpec.from_bytes(v) for v in (await snapshot(functions)).values())
        if name in s.uses
    ]
    if users:
        raise ShoalError(f"{name} is used by {', '.join(sorted(users))}: remove those first")

    await functions.delete(name)
    workers_kv = await kv(js, protocol.WORKERS_BUCKET)
    mine = {
        key: info
        for key, info in ((k, msgpack.unpackb(v)) for k, v in (await snapshot(workers_kv)).items())
        if info.get("function") == name
    }
    for info in mine.values():
        await nc.publish(protocol.worker_stop_subject(str(info["id"])), b"")
    removed.workers_drained = len(mine)
    with anyio.move_on_after(wait):
        while mine:
            await anyio.sleep(0.2)  # a worker's entry goes when it exits (or its TTL ends)
            live = await snapshot(workers_kv)
            mine = {k: v for k, v in mine.items() if k in live}
    removed.workers_left = sorted(str(v["id"]) for v in mine.values())

    if spec.kind == "function":
        queued = await _queued(js, spec)  # events published while the workers drained
        if queued and not force:
            raise EventsQueued(
                f"{queued} event(s) for {name} arrived while it was being removed; its stream "
                "is kept: serve them (deploy it again) or drop them with shoal rm --force"
            )
        try:
            await js.delete_stream(spec.stream)
            removed.stream = spec.stream
            removed.events_dropped = queued
        except NotFoundError:
            pass
    if spec.code_sha not in await code_in_use(js) and await delete_code(js, spec.code_sha):
        removed.code = spec.code_sha
    if purge:
        try:
            info = await js.stream_info(deadletter.STREAM, subjects_filter=deadletter.subject(name))
            removed.dead_letters = int((info.state.subjects or {}).get(deadletter.subject(name), 0))
            await js.purge_stream(deadletter.STREAM, subject=deadletter.subject(name))
        except NotFoundError:
            pass
    log.info("removed %s (version %s)", name, spec.version)
    return removed


async def _queued(js: JetStreamContext, spec: FunctionSpec) -> int:
    """Events stored for ``spec`` and not yet acknowledged (0 without a stream)."""
    try:
        ci = await js.consumer_info(spec.stream, protocol.CONSUMER)
    except NotFoundError:
        return 0
    return int(ci.num_pending or 0) + int(ci.num_ack_pending or 0)
