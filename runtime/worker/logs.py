"""A worker's log lines and output: tagged, printed, and published to ``SHOAL_LOGS``.

:func:`setup` (the worker's entry calls it first thing, in the worker process itself, so a
worker forked from a template is covered alike) tags every record with the function, the
worker id and, inside an invocation, the request id and trace id
(:class:`~runtime.wire.logstream.ContextFilter`); prints it as text or JSON
(``SHOAL_LOG_FORMAT``) on the process's own stderr; and, unless ``SHOAL_LOGS=0``, hands it to
a :class:`Publisher`. What the handler writes to ``sys.stdout`` and ``sys.stderr`` still
reaches the process's streams and is published too, line by line (``stream``: ``stdout`` or
``stderr``), with the request id of the invocation that wrote it.

Publishing never holds up a handler: a line is appended to a bounded buffer (any thread), and
the publisher's task sends the buffer every ``FLUSH_EVERY`` seconds in batches. When NATS is
slow or away and the buffer is full, new lines are dropped and counted (``dropped``); a line
saying how many is published once there is room again.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from runtime.wire import logstream

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

log = logging.getLogger("shoal.logs")

FLUSH_EVERY = 0.2  # seconds between batches
MAX_BATCH = 64 * 1024  # bytes of lines in one message
MAX_BUFFERED = 4 * 1024 * 1024  # bytes of lines held while NATS is slow; past it, dropped
MAX_LINE = 16 * 1024  # characters of one message kept


class Publisher(logging.Handler):
    """Buffers lines (from any thread) and publishes them in batches from :meth:`run`."""

    def __init__(self, function: str, worker: str, max_buffered: int = MAX_BUFFERED) -> None:
        super().__init__()
        self.subject = logstream.subject(function, worker)
        self.function = function
        self.worker = worker
        self.max_buffered = max_buffered
        self.dropped = 0  # lines dropped, ever
        self.published = 0  # lines published, ever
        self._unreported = 0  # dropped since the last line that said so
        self._lines: deque[tuple[dict[str, Any], int]] = deque()
        self._bytes = 0
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = logstream.fields(record)
        except Exception:
            self.handleError(record)
            return
        self.add(line)

    def add(self, line: dict[str, Any]) -> None:
        message = line.get("message")
        if isinstance(message, str) and len(message) > MAX_LINE:
            line["message"] = message[:MAX_LINE] + f"... ({len(message)} characters)"
        size = len(str(line.get("message", ""))) + 200
        with self._guard:
            if self._bytes + size > self.max_buffered:
                self.dropped += 1
                self._unreported += 1
                return
            self._lines.append((line, size))
            self._bytes += size

    def _take(self) -> list[dict[str, Any]]:
        """A batch of lines to send, at most ``MAX_BATCH`` bytes (at least one line)."""
        with self._guard:
            batch: list[dict[str, Any]] = []
            taken = 0
            while self._lines and (not batch or taken + self._lines[0][1] <= MAX_BATCH):
                line, size = self._lines.popleft()
                self._bytes -= size
                taken += size
                batch.append(line)
            if self._unreported and self._bytes + 300 <= self.max_buffered:
                batch.append(self._dropped_line())
                self._unreported = 0
            return batch

    def _dropped_line(self) -> dict[str, Any]:
        return {
            "ts": round(time.time(), 6),
            "level": "WARNING",
            "logger": "shoal.logs",
            "message": f"{self._unreported} log line(s) dropped: NATS was too slow or away "
            f"({self.dropped} in all)",
            "function": self.function,
            "worker": self.worker,
        }

    async def flush_to(self, nc: NATS) -> None:
        """Publish everything buffered now (a lost batch is counted as dropped)."""
        while True:
            batch = self._take()
            if not batch:
                return
            try:
                await nc.publish(self.subject, logstream.encode_lines(batch))
                self.published += len(batch)
            except Exception:
                with self._guard:
                    self.dropped += len(batch)
                    self._unreported += len(batch)
                return

    async def run(self, nc: NATS) -> None:
        """Send what was logged, every ``FLUSH_EVERY`` seconds, until cancelled."""
        while True:
            await anyio.sleep(FLUSH_EVERY)
            await self.flush_to(nc)


class Tee(io.TextIOBase):
    """A text stream that writes through to ``original`` and hands each complete line to
    ``publisher`` as a line of ``name`` (``stdout`` or ``stderr``)."""

    def __init__(self, original: TextIO, name: str, publisher: Publisher) -> None:
        self.original = original
        self.name_ = name
        self.publisher = publisher
        self.filter = logstream.ContextFilter(publisher.function, publisher.worker)
        self._partial = threading.local()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")

    def fileno(self) -> int:
        return self.original.fileno()

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        written = self.original.write(text)
        pending = getattr(self._partial, "text", "") + text
        *lines, rest = pending.split("\n")
        self._partial.text = rest
        for line in lines:
            self._publish(line)
        return written if isinstance(written, int) else len(text)

    def flush(self) -> None:
        self.original.flush()

    def _publish(self, text: str) -> None:
        record = logging.LogRecord(
            self.name_,
            logging.INFO if self.name_ == "stdout" else logging.WARNING,
            "",
            0,
            text,
            None,
            None,
        )
        record.stream = self.name_
        self.filter.filter(record)
        self.publisher.emit(record)


def setup(function: str, worker: str, *, level: str, fmt: str, publish: bool) -> Publisher | None:
    """Configure this worker process's logging (see the module's docstring); returns the
    publisher whose :meth:`Publisher.run` the worker runs once connected (None: not
    publishing)."""
    context = logstream.ContextFilter(function, worker)
    printer = logging.StreamHandler(sys.stderr)  # the process's own stderr, before the tee
    printer.setFormatter(logstream.formatter(fmt))
    printer.addFilter(context)
    handlers: list[logging.Handler] = [printer]
    publisher = None
    if publish:
        publisher = Publisher(function, worker)
        publisher.addFilter(context)
        handlers.append(publisher)
    logging.basicConfig(level=level, handlers=handlers, force=True)
    if publisher is not None:
        if sys.stdout is not None:
            sys.stdout = Tee(sys.stdout, "stdout", publisher)
        if sys.stderr is not None:
            sys.stderr = Tee(sys.stderr, "stderr", publisher)
    return publisher
