"""Dead letters: events that failed for good, kept with the reason, for listing and re-driving.

An event is dead-lettered when its function keeps failing past its retries, or when JetStream
gave up delivering it (max_deliver: its workers died or timed out every time). The dead
letter keeps the original body and headers, so a re-drive publishes the same event again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from runtime.wire import connection

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nats.js import JetStreamContext

STREAM = "SHOAL_DLQ"
PREFIX = "shoal.dlq"
MAX_AGE = 14 * 24 * 3600.0  # seconds a dead letter is kept

# Headers a dead letter carries besides the event's own.
REASON = "Shoal-Dlq-Reason"
FUNCTION = "Shoal-Dlq-Function"
SUBJECT = "Shoal-Dlq-Subject"
DELIVERIES = "Shoal-Dlq-Deliveries"
ERROR = "Shoal-Dlq-Error"  # the error's code


def subject(function: str) -> str:
    return f"{PREFIX}.{function}"


async def ensure_stream(js: JetStreamContext) -> None:
    await connection.ensure_stream(
        js,
        StreamConfig(
            name=STREAM,
            subjects=[f"{PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=MAX_AGE,
        ),
    )


async def dead_letter(
    js: JetStreamContext,
    *,
    function: str,
    original_subject: str,
    data: bytes,
    headers: Mapping[str, str] | None,
    reason: str,
    code: str,
    deliveries: int,
) -> None:
    """Store a failed event in the dead-letter stream (waits for JetStream's ack)."""
    await ensure_stream(js)
    # JetStream's own headers (Nats-Msg-Id, Nats-Expected-Stream...) would make this publish
    # a conditional one, or a duplicate: the dead letter keeps them under another name.
    h = {(f"Shoal-Orig-{k}" if k.startswith("Nats-") else k): v for k, v in (headers or {}).items()}
    msg_id = (headers or {}).get("Nats-Msg-Id")
    if msg_id:
        # Keep the caller's id for look-ups and re-drives, not as a de-duplication key here.
        h["Shoal-Request-Id"] = h.get("Shoal-Request-Id", msg_id)
    h.update(
        {
            REASON: reason[:1000],
            FUNCTION: function,
            SUBJECT: original_subject,
            DELIVERIES: str(deliveries),
            ERROR: code,
        }
    )
    await js.publish(subject(function), data, headers=h)


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered event, as stored."""

    seq: int
    function: str
    subject: str  # where the event was first published
    request_id: str | None
    reason: str
    code: str
    deliveries: int
    data: bytes
    headers: dict[str, str]


async def list_dead(js: JetStreamContext, function: str | None = None) -> list[DeadLetter]:
    """Every dead letter kept (optionally of one function), oldest first."""
    try:
        info = await js.stream_info(STREAM)
    except NotFoundError:
        return []
    out = []
    first, last = info.state.first_seq, info.state.last_seq
    for seq in range(first, last + 1) if info.state.messages else ():
        letter = await get_dead(js, seq)
        if letter is None:
            continue  # deleted (re-driven)
        if function and letter.function != function:
            continue
        out.append(letter)
    return out


async def get_dead(js: JetStreamContext, seq: int) -> DeadLetter | None:
    """The dead letter kept at ``seq``, or None (never, or re-driven since)."""
    try:
        raw = await js.get_msg(STREAM, seq)
    except NotFoundError:
        return None
    h = dict(raw.headers or {})
    if raw.subject and not raw.subject.startswith(PREFIX + "."):
        return None
    try:
        deliveries = int(h.get(DELIVERIES, "0"))
    except ValueError:
        deliveries = 0
    return DeadLetter(
        seq=seq,
        function=h.get(FUNCTION, ""),
        subject=h.get(SUBJECT, ""),
        request_id=h.get("Shoal-Request-Id"),
        reason=h.get(REASON, ""),
        code=h.get(ERROR, ""),
        deliveries=deliveries,
        data=raw.data or b"",
        headers=h,
    )


async def redrive(js: JetStreamContext, letter: DeadLetter) -> None:
    """Publish a dead letter's event again to its original subject, then drop the letter."""
    ours = {REASON, FUNCTION, SUBJECT, DELIVERIES, ERROR}
    headers = {k: v for k, v in letter.headers.items() if k not in ours}
    headers = {  # JetStream's headers, kept aside by dead_letter, except the old msg id
        k.removeprefix("Shoal-Orig-"): v
        for k, v in headers.items()
        if k != "Shoal-Orig-Nats-Msg-Id"
    }
    headers["Shoal-Redrive"] = str(int(headers.get("Shoal-Redrive", "0")) + 1)
    await js.publish(letter.subject, letter.data, headers=headers)
    await js.delete_msg(STREAM, letter.seq)
