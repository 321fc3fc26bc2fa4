"""Many executor items in one message, and all their outcomes in one answer.

A handler worker with several items for one executor at the same moment sends them together
(the items of ``Executor.map``, and single calls of concurrent invocations): the request
carries the header ``Shoal-Items: 1`` (this format's version) and its body is a
msgpack array of the items, each encoded as a single-item request's body would be. The
executor's batcher takes them as separate items (they join its batches one by one; its
``max_batch`` still bounds a batch) and answers once per message:

- ``Shoal-Status: ok`` and ``Shoal-Items: 1``, the body a msgpack array with one entry per
  item, in order: ``["ok", result]`` or ``["error", <wire error>]``, so one bad item fails
  alone;
- or, when the message cannot be read at all (not a msgpack array, an unknown version), an
  ordinary error answer (:mod:`runtime.wire.answer`), with ``Shoal-Items: 1``: every item of
  that message gets that error, and nothing else is lost.

A request without ``Shoal-Items`` is a single item, answered as before. An executor that
predates this format answers a batch as one item, without ``Shoal-Items``: the sender then
sends those items one per message (a retryable error answered without it, such as a cold
executor's refusal, is every item's error instead).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgpack

from runtime.errors import InvalidPayload, PayloadTooLarge, ResultNotSerializable, ShoalError
from runtime.wire import answer, codec, protocol

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

VERSION = "1"
OK, ERROR = answer.OK, answer.ERROR
#: Room left in a message for its headers and framing.
HEADROOM = 4096

#: An item's outcome: its result, or the typed error it failed with.
Outcome = Any


def encode_item(item: Any) -> bytes | ShoalError:
    """One item's msgpack encoding, or the error it cannot be sent with."""
    try:
        return codec.encode(item, "msgpack")
    except ResultNotSerializable as e:
        return ResultNotSerializable(f"an executor item cannot be sent: {e.message}")


def request_body(encoded: Sequence[bytes]) -> bytes:
    """The body of a request carrying the already encoded items."""
    return _array_header(len(encoded)) + b"".join(encoded)


def _array_header(count: int) -> bytes:
    header: bytes = msgpack.Packer().pack_array_header(count)
    return header


def request_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {**headers, protocol.CONTENT_TYPE: protocol.MSGPACK, protocol.ITEMS: VERSION}


def is_batch(headers: Mapping[str, str] | None) -> bool:
    """Whether a request (or answer) carries many items."""
    return protocol.ITEMS in (headers or {})


def decode_request(data: bytes, headers: Mapping[str, str]) -> list[Any]:
    """The items of a batch request; ``InvalidPayload`` when the message cannot be read."""
    version = headers.get(protocol.ITEMS)
    if version != VERSION:
        raise InvalidPayload(
            f"{protocol.ITEMS} {version!r} is not a batch format this executor reads "
            f"(it reads {VERSION!r})"
        )
    items, _ = codec.decode(data, headers.get(protocol.CONTENT_TYPE) or protocol.MSGPACK)
    if not isinstance(items, list):
        raise InvalidPayload(
            f"a batch request's body must be a msgpack array of items, not {type(items).__name__}"
        )
    return items


def answer_items(
    outcomes: Sequence[Outcome], limit: int, traceparent: str | None = None
) -> answer.Answer:
    """The answer carrying every item's outcome, in order, within ``limit`` bytes: the largest
    results are replaced by ``PayloadTooLarge`` until it fits."""
    entries = [_entry(o) for o in outcomes]
    total = sum(len(e) for e in entries)
    for i in sorted(range(len(entries)), key=lambda i: len(entries[i]), reverse=True):
        if total <= limit - HEADROOM:
            break
        size = len(entries[i])
        too_large = PayloadTooLarge(f"the item's result is too large to answer ({size} bytes)")
        entries[i] = _entry(too_large)
        total += len(entries[i]) - size
    body = _array_header(len(entries)) + b"".join(entries)
    headers = {
        protocol.STATUS: OK,
        protocol.CONTENT_TYPE: protocol.MSGPACK,
        protocol.ITEMS: VERSION,
    }
    if traceparent:
        headers[protocol.TRACEPARENT] = traceparent
    return answer.Answer(body, headers)


def _entry(outcome: Outcome) -> bytes:
    if isinstance(outcome, ShoalError):
        return codec.encode([ERROR, outcome.to_wire()], "msgpack")
    try:
        return codec.encode([OK, outcome], "msgpack")
    except ResultNotSerializable as e:
        return codec.encode([ERROR, e.to_wire()], "msgpack")


def decode_answer(data: bytes, headers: Mapping[str, str] | None, count: int) -> list[Outcome]:
    """Each item's outcome from a batch answer: results, and the typed errors of the items
    that failed. A whole-message error answer is every item's error."""
    try:
        entries = answer.decode(data, headers)
    except ShoalError as e:
        return [e] * count
    if not isinstance(entries, list) or len(entries) != count:
        got = len(entries) if isinstance(entries, list) else type(entries).__name__
        err = InvalidPayload(f"a batch answer must hold {count} outcomes, got {got}")
        return [err] * count
    return [_outcome(entry) for entry in entries]


def _outcome(entry: Any) -> Outcome:
    if isinstance(entry, list) and len(entry) == 2:
        status, value = entry
        if status == OK:
            return value
        if status == ERROR and isinstance(value, dict):
            return ShoalError.from_wire(value)
    return InvalidPayload(f"a batch answer's entry must be [status, value], got {entry!r:.200}")
