"""Events JetStream gave up on: dead-lettered and answered, not left stranded in the stream.

When an event reaches its function's max_deliver without being acknowledged (its workers died
or ran past ack_wait each time), JetStream stops delivering it and says so in an advisory. The
function's owning controller then dead-letters it, stores and sends a typed error to whoever
waits for it, and removes it from the work queue.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from runtime.errors import DeliveryExhausted
from runtime.wire import answer, codec, protocol
from runtime.wire.connection import kv
from runtime.wire.deadletter import dead_letter
from runtime.wire.results import ResultStore, make_result

if TYPE_CHECKING:
    from collections.abc import Callable

    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

    from runtime.wire.spec import FunctionSpec

log = logging.getLogger("shoal.exhausted")

# Streams are a token of their own: filter Shoal's by name in the handler.
ADVISORY = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.*.{protocol.CONSUMER}"


async def watch_exhausted(
    nc: NATS,
    spec_of_stream: Callable[[str], FunctionSpec | None],
    owns: Callable[[str], bool],
    on_dead_letter: Callable[[str], None] | None = None,
) -> Subscription:
    """Subscribe to max-deliveries advisories for every function's consumer;
    ``on_dead_letter(function)`` is told of each event dead-lettered here."""

    async def on_advisory(msg: Msg) -> None:
        try:
            advisory = json.loads(msg.data)
            spec = spec_of_stream(advisory["stream"])
            if spec is None or not owns(spec.name):
                return  # another controller owns it
            done = await settle(nc, spec, int(advisory["stream_seq"]), int(advisory["deliveries"]))
            if done and on_dead_letter is not None:
                on_dead_letter(spec.name)
        except Exception:
            log.exception("handling a max-deliveries advisory failed")

    return await nc.subscribe(ADVISORY, cb=on_advisory)


async def settle(nc: NATS, spec: FunctionSpec, seq: int, deliveries: int) -> bool:
    """Dead-letter and answer the event at ``seq``; False when it was already gone."""
    js = nc.jetstream()
    try:
        raw = await js.get_msg(spec.stream, seq)
    except Exception as e:  # already removed (another controller, or acked at the last moment)
        log.info("exhausted event %s/%d is gone: %s", spec.stream, seq, e)
        return False
    headers = dict(raw.headers or {})
    request_id = answer.request_id(headers, answer.sequence_id(spec.name, seq))
    err = DeliveryExhausted(
        f"{spec.name} gave up after {deliveries} deliveries: each time its worker died or ran "
        f"past ack_wait ({spec.ack_wait:g}s) without answering",
        request_id=request_id,
    )
    await dead_letter(
        js,
        function=spec.name,
        original_subject=raw.subject or spec.event_subjects[0],
        data=raw.data or b"",
        headers=headers,
        reason=err.message,
        code=err.code,
        deliveries=deliveries,
    )
    enc = codec.encoding_of(headers.get(protocol.CONTENT_TYPE))
    result = make_result(request_id, spec.name, False, err.to_wire(), enc)
    await ResultStore(nc, await kv(js, protocol.RESULTS_BUCKET)).put(result)
    reply_to = headers.get(protocol.REPLY_TO)
    if reply_to and protocol.reply_allowed(reply_to):
        reply = answer.of_result(result)
        await nc.publish(reply_to, reply.body, headers=reply.headers)
    await js.delete_msg(spec.stream, seq)
    log.warning("dead-lettered %s after %d deliveries", request_id, deliveries)
    return True
