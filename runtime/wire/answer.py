"""The answer envelope: how an invocation's outcome is sent back, and read, on NATS.

An answer is one message: its body is the result encoded in the request's encoding, or
``{"error": <wire error>}``, and its headers are ``Shoal-Status: ok|error``, the
``Content-Type`` of the body, where the request has one, ``Shoal-Request-Id``, and, where it
was traced, ``traceparent``: the span that answered, in the request's trace
(:mod:`runtime.wire.tracing`). Every
place that answers (handler workers, executors, the controller's cold path and its
dead-lettering of exhausted events) builds it here, and every caller reads it with
:func:`decode`.

The request id is derived here too, by one rule: the ``Shoal-Request-Id`` header, else
``Nats-Msg-Id``, else a fallback. A durable event's fallback is its stream sequence
(:func:`sequence_id`), so every redelivery of it keeps the same id and finds the same stored
result; a request/reply call, which is never redelivered, gets a fresh random id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runtime.errors import InvalidPayload, ShoalError
from runtime.wire import codec, protocol

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runtime.wire.codec import Encoding
    from runtime.wire.results import Result

OK = "ok"
ERROR = "error"


@dataclass(frozen=True)
class Answer:
    """An encoded answer, ready for ``nc.publish(subject, a.body, headers=a.headers)``."""

    body: bytes
    headers: dict[str, str]


def ok(
    value: Any, enc: Encoding, request_id: str | None = None, traceparent: str | None = None
) -> Answer:
    """The answer carrying ``value``; raises ``ResultNotSerializable`` if ``enc`` cannot."""
    return Answer(codec.encode(value, enc), _headers(OK, enc, request_id, traceparent))


def error(
    err: ShoalError | Mapping[str, Any],
    enc: Encoding,
    request_id: str | None = None,
    traceparent: str | None = None,
) -> Answer:
    """The answer carrying an error, given as a :class:`ShoalError` or its wire form."""
    wire = err.to_wire() if isinstance(err, ShoalError) else dict(err)
    return Answer(codec.encode({ERROR: wire}, enc), _headers(ERROR, enc, request_id, traceparent))


def of_result(result: Result, traceparent: str | None = None) -> Answer:
    """The answer for a stored outcome, under its request id and in its encoding."""
    if result.ok:
        return ok(result.value, result.encoding, result.request_id, traceparent)
    return error(result.value, result.encoding, result.request_id, traceparent)


def decode(data: bytes, headers: Mapping[str, str] | None) -> Any:
    """An answer's value; raises the typed error when its ``Shoal-Status`` is ``error``
    (``InvalidPayload`` when the body cannot be read, or holds no error)."""
    headers = headers or {}
    value, _ = codec.decode(data, headers.get(protocol.CONTENT_TYPE))
    if headers.get(protocol.STATUS) == ERROR:
        wire = value.get(ERROR) if isinstance(value, dict) else None
        if not isinstance(wire, dict):
            raise InvalidPayload(f"an error answer without its error: {value!r:.200}")
        raise ShoalError.from_wire(wire)
    return value


def _headers(
    status: str, enc: Encoding, request_id: str | None, traceparent: str | None
) -> dict[str, str]:
    headers = {protocol.REQUEST_ID: request_id} if request_id is not None else {}
    headers[protocol.STATUS] = status
    headers[protocol.CONTENT_TYPE] = codec.CONTENT_TYPES[enc]
    if traceparent:
        headers[protocol.TRACEPARENT] = traceparent
    return headers


def new_request_id() -> str:
    """A fresh random request id (32 hex digits)."""
    return os.urandom(16).hex()  # as random as uuid4's, without building a UUID


def sequence_id(function: str, stream_seq: int) -> str:
    """A durable event's fallback id, ``<function>-<stream sequence>``: the same on every
    redelivery of the event."""
    return f"{function}-{stream_seq}"


def request_id(headers: Mapping[str, str] | None, fallback: str | None = None) -> str:
    """The id a request goes by: ``Shoal-Request-Id``, else ``Nats-Msg-Id``, else
    ``fallback`` (a durable event passes its :func:`sequence_id`), else a fresh random id.

    An empty header counts as absent.
    """
    headers = headers or {}
    return (
        headers.get(protocol.REQUEST_ID)
        or headers.get(protocol.MSG_ID)
        or fallback
        or new_request_id()
    )
