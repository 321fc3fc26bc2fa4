"""The ``SHOAL_LOGS`` stream: every worker's log lines and output, per function, for a while.

A worker publishes its lines on ``shoal.logs.<function>.<worker>`` (:func:`subject`), in
batches: one message holds one or more lines, each a JSON object (:func:`encode_lines`) with
``ts``, ``level``, ``logger``, ``message``, ``function``, ``worker`` and, inside an
invocation, ``request_id`` and ``trace_id``. The controller makes the stream
(:func:`ensure_stream`) with limits by age and bytes (``SHOAL_LOGS_MAX_AGE``,
``SHOAL_LOGS_MAX_BYTES``); the controller role reads it (``shoal logs``), workers may only
publish to it, clients neither.
"""

from __future__ import annotations

import contextvars
import json
import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from runtime.wire import connection, tracing

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from nats.js import JetStreamContext

STREAM = "SHOAL_LOGS"
PREFIX = "shoal.logs"


def subject(function: str, worker: str) -> str:
    return f"{PREFIX}.{function}.{worker}"


def function_subjects(function: str) -> str:
    """Every worker's lines of ``function``."""
    return f"{PREFIX}.{function}.>"


async def ensure_stream(js: JetStreamContext, max_age: float, max_bytes: int) -> None:
    """Make the stream if it is missing (an existing one keeps its limits)."""
    await connection.ensure_stream(
        js,
        StreamConfig(
            name=STREAM,
            subjects=[f"{PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=max_age,
            max_bytes=max_bytes,
        ),
    )


def encode_lines(lines: Iterable[dict[str, Any]]) -> bytes:
    """Lines as one message body: JSON objects, one a line."""
    return "\n".join(json.dumps(line, default=repr) for line in lines).encode()


def decode_lines(data: bytes) -> list[dict[str, Any]]:
    """The lines a message holds (a line that is not a JSON object is kept as its text)."""
    out = []
    for text in data.decode(errors="replace").splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            line = {"message": text}
        out.append(line if isinstance(line, dict) else {"message": text})
    return out


# -- what every log line carries ----------------------------------------------------------

_request: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "shoal_request_id", default=None
)


@contextmanager
def invocation(request_id: str) -> Iterator[None]:
    """Inside the block (and the tasks and threads it starts), log lines name ``request_id``."""
    token = _request.set(request_id)
    try:
        yield
    finally:
        _request.reset(token)


def current_request() -> str | None:
    return _request.get()


class ContextFilter(logging.Filter):
    """Puts ``function``, ``worker``, ``request_id`` and ``trace_id`` on every record (empty
    where not known); on a handler, so that it sees the records of every logger."""

    def __init__(self, function: str = "", worker: str = "") -> None:
        super().__init__()
        self.function = function
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):  # set once, where the line was logged
            record.function = self.function
            record.worker = self.worker
            record.request_id = _request.get() or ""
            span = tracing.current()
            record.trace_id = span.context.trace_hex if span is not None else ""
        return True


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """A record as the JSON object a line is (the :class:`ContextFilter` ran first)."""
    out: dict[str, Any] = {
        "ts": round(record.created, 6),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
        "function": getattr(record, "function", ""),
        "worker": getattr(record, "worker", ""),
    }
    stream = getattr(record, "stream", None)
    if stream:
        out["stream"] = stream
    for key in ("request_id", "trace_id"):
        value = getattr(record, key, "")
        if value:
            out[key] = value
    if record.exc_info:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    return out


class JsonFormatter(logging.Formatter):
    """``SHOAL_LOG_FORMAT=json``: one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(fields(record), default=repr)


class TextFormatter(logging.Formatter):
    """Time, level, logger, ``[function worker request trace]``, message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(where)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        who = [getattr(record, "function", ""), getattr(record, "worker", "")]
        request = getattr(record, "request_id", "")
        if request:
            who.append(f"request={request}")
            trace = getattr(record, "trace_id", "")
            if trace:
                who.append(f"trace={trace}")
        who = [w for w in who if w]
        record.where = f" [{' '.join(who)}]" if who else ""
        return super().format(record)


def formatter(kind: str) -> logging.Formatter:
    """The formatter ``SHOAL_LOG_FORMAT`` names: ``text`` or ``json``."""
    return JsonFormatter() if kind == "json" else TextFormatter()
