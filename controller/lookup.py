"""Where a request stands, from what NATS already holds: no write per request on the hot path.

``shoal result <id>`` asks :func:`request_state`, which looks, in order, at

1. the results bucket: a stored outcome is ``done``;
2. the workers' heartbeats: each lists the request ids it is running (``running``), which
   covers request/reply calls too;
3. the function streams (a work queue: an event stays until it is acknowledged): an event
   the consumer has not delivered yet is ``queued``; one it has delivered and that is not
   acknowledged is ``running`` (or waiting to be retried). A durable event without an id of
   its own goes by ``<function>-<stream sequence>`` and is found at once; others are looked
   for among the first ``SCAN_LIMIT`` queued events of each function;
4. the results bucket's expiry marker (JetStream leaves one where a result aged out, for as
   long again as results are kept) or a dead letter of that id: ``expired``;
5. else ``unknown``: never seen, or gone longer than the above remember.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
from nats.js.errors import NotFoundError

from runtime.wire import deadletter, protocol
from runtime.wire.connection import MARKER_REASON, kv, snapshot
from runtime.wire.results import ResultStore

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js import JetStreamContext

    from runtime.wire.results import Result

SCAN_LIMIT = 2000  # queued events looked at per function for an id given by the caller

UNKNOWN, QUEUED, RUNNING, DONE, EXPIRED = "unknown", "queued", "running", "done", "expired"
_SEQUENCE_ID = re.compile(r"^([a-z][a-z0-9_-]{0,63})-([0-9]+)$")


@dataclass(frozen=True)
class RequestState:
    """Where ``request_id`` stands; ``detail`` says what it was told by."""

    request_id: str
    state: str
    function: str | None = None
    result: Result | None = None
    worker: str | None = None  # the worker running it, from its heartbeat
    stream_seq: int | None = None  # the queued event's sequence in its function's stream
    dead_letter: int | None = None  # its dead letter's sequence in SHOAL_DLQ
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"request_id": self.request_id, "state": self.state}
        for name in ("function", "worker", "stream_seq", "dead_letter"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.detail:
            out["detail"] = self.detail
        return out


async def request_state(nc: NATS, request_id: str) -> RequestState:
    js = nc.jetstream()
    results = await kv(js, protocol.RESULTS_BUCKET)
    stored = await ResultStore(nc, results).get(request_id)
    if stored is not None:
        return RequestState(request_id, DONE, stored.function, stored)
    found = await _running_on(js, request_id)
    if found is not None:
        function, worker = found
        return RequestState(request_id, RUNNING, function, worker=worker, detail="heartbeat")
    queued = await _in_stream(js, request_id)
    if queued is not None:
        return queued
    # It may have finished while we looked.
    stored = await ResultStore(nc, results).get(request_id)
    if stored is not None:
        return RequestState(request_id, DONE, stored.function, stored)
    letter = await _dead_letter(js, request_id)
    if await _expired(js, request_id):
        return RequestState(request_id, EXPIRED, dead_letter=letter, detail="result expired")
    if letter is not None:
        return RequestState(request_id, EXPIRED, dead_letter=letter, detail="dead letter kept")
    return RequestState(request_id, UNKNOWN)


async def _running_on(js: JetStreamContext, request_id: str) -> tuple[str, str] | None:
    key = protocol.result_key(request_id)
    workers = await snapshot(await kv(js, protocol.WORKERS_BUCKET))
    for value in workers.values():
        try:
            info = msgpack.unpackb(value)
        except Exception:
            continue
        if isinstance(info, dict) and key in (info.get("running") or ()):
            return str(info.get("function")), str(info.get("id"))
    return None


async def _in_stream(js: JetStreamContext, request_id: str) -> RequestState | None:
    functions = sorted(await snapshot(await kv(js, protocol.FUNCTIONS_BUCKET)))
    by_sequence = _SEQUENCE_ID.match(request_id)
    if (
        by_sequence is not None
        and by_sequence.group(1) in functions
        and by_sequence.group(2) != "0"
    ):
        function, seq = by_sequence.group(1), int(by_sequence.group(2))
        state = await _event_state(js, function, seq, request_id, any_id=True)
        if state is not None:
            return state
    for function in functions:
        stream = protocol.stream_name(function)
        try:
            info = await js.stream_info(stream)
        except NotFoundError:
            continue
        if not info.state.messages:
            continue
        first, last = max(1, info.state.first_seq), info.state.last_seq
        for seq in range(first, min(last, first + SCAN_LIMIT - 1) + 1):
            state = await _event_state(js, function, seq, request_id)
            if state is not None:
                return state
    return None


async def _event_state(
    js: JetStreamContext, function: str, seq: int, request_id: str, *, any_id: bool = False
) -> RequestState | None:
    """The state of the event at ``seq`` if it is ``request_id``'s (``any_id``: an event
    without an id of its own goes by its sequence)."""
    stream = protocol.stream_name(function)
    try:
        msg = await js.get_msg(stream, seq)
    except NotFoundError:
        return None
    headers = msg.headers or {}
    own = headers.get(protocol.REQUEST_ID) or headers.get(protocol.MSG_ID)
    if own != request_id and not (any_id and not own):
        return None
    try:
        consumer = await js.consumer_info(stream, protocol.CONSUMER)
    except NotFoundError:
        return RequestState(request_id, QUEUED, function, stream_seq=seq, detail="no consumer")
    delivered = consumer.delivered.stream_seq if consumer.delivered else 0
    if delivered is not None and seq <= delivered:
        return RequestState(
            request_id, RUNNING, function, stream_seq=seq, detail="delivered, not acknowledged"
        )
    return RequestState(request_id, QUEUED, function, stream_seq=seq)


async def _expired(js: JetStreamContext, request_id: str) -> bool:
    subject = f"$KV.{protocol.RESULTS_BUCKET}.{protocol.result_key(request_id)}"
    try:
        msg = await js.get_msg(f"KV_{protocol.RESULTS_BUCKET}", subject=subject)
    except NotFoundError:
        return False
    return (msg.headers or {}).get(MARKER_REASON) == "MaxAge"


async def _dead_letter(js: JetStreamContext, request_id: str) -> int | None:
    for letter in await deadletter.list_dead(js):
        if letter.request_id == request_id:
            return letter.seq
    return None
