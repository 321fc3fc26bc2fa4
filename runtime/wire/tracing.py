"""W3C trace context through Shoal, and spans exported over OTLP when asked.

Every message that starts work carries a ``traceparent`` header (W3C Trace Context,
``00-<trace id>-<span id>-<flags>``): an event or a call from a client, a handler's request
to an executor, a coordinator's partition task (:class:`~runtime.partition.messages.RunPartition`
carries it in its body) and the data plane's intermediates; every answer carries the
``traceparent`` of the span that produced it. A worker continues the trace it is given, or
starts one when there is none.

Propagation is always on and costs a few random bits and a string per span: the ids are
made here. Spans are *recorded* only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set: then
:func:`configure` loads OpenTelemetry's SDK (the ``observability`` extra) and each span
becomes an OpenTelemetry span, with OpenTelemetry's ids, exported over OTLP/HTTP in batches.
Without it nothing of OpenTelemetry is imported.

The current span lives in a context variable: anyio copies it into the tasks and threads a
handler starts, so an executor call inside a handler is a child of the handler's span, and
:mod:`runtime.worker.logs` tags each log line with its trace id.
"""

from __future__ import annotations

import contextvars
import logging
import random
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runtime.wire import protocol

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

log = logging.getLogger("shoal.tracing")

TRACEPARENT = protocol.TRACEPARENT  # the W3C header, lower-case as the spec writes it
_TRACEPARENT_RE = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
SAMPLED = 0x01

# Kinds, as OpenTelemetry names them.
INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER = (
    "internal",
    "server",
    "client",
    "producer",
    "consumer",
)


@dataclass(frozen=True)
class SpanContext:
    """A span's identity: what travels in ``traceparent``."""

    trace_id: int
    span_id: int
    flags: int = SAMPLED

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{self.flags:02x}"

    @property
    def trace_hex(self) -> str:
        return f"{self.trace_id:032x}"

    @property
    def span_hex(self) -> str:
        return f"{self.span_id:016x}"


def parse(value: str | None) -> SpanContext | None:
    """The context a ``traceparent`` value names, or None for none or a malformed one
    (the spec says: start a new trace then)."""
    if not value:
        return None
    m = _TRACEPARENT_RE.match(value.strip().lower())
    if m is None or m.group(1) == "ff":
        return None
    trace_id, span_id = int(m.group(2), 16), int(m.group(3), 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id, span_id, int(m.group(4), 16))


def extract(headers: Mapping[str, str] | None) -> SpanContext | None:
    """The context a message's headers carry (``traceparent``, any case), or None."""
    if not headers:
        return None
    value = headers.get(TRACEPARENT) or headers.get("Traceparent")
    return parse(value)


class Span:
    """One unit of work: its context, and (when recording) the OpenTelemetry span behind it."""

    __slots__ = ("_otel", "context", "parent")

    def __init__(self, context: SpanContext, parent: SpanContext | None, otel: Any = None):
        self.context = context
        self.parent = parent
        self._otel = otel

    @property
    def traceparent(self) -> str:
        return self.context.traceparent

    def set_attribute(self, key: str, value: Any) -> None:
        if self._otel is not None:
            self._otel.set_attribute(key, value)

    def record_error(self, error: BaseException, message: str | None = None) -> None:
        """Mark the span failed (``ERROR`` status with ``message``), the exception as an event."""
        if self._otel is not None:
            _backend_error(self._otel, error, message)


_current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("shoal_span", default=None)
_rng = random.Random()  # seeded from the OS; ids need to be unique, not secret


def current() -> Span | None:
    """The span the running code is part of, if any."""
    return _current.get()


def current_traceparent() -> str | None:
    span = _current.get()
    return span.traceparent if span is not None else None


def inject(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with the current span's ``traceparent`` (unchanged when there is none)."""
    span = _current.get()
    if span is not None:
        headers[TRACEPARENT] = span.traceparent
    return headers


def _new_ids(parent: SpanContext | None) -> SpanContext:
    span_id = _rng.getrandbits(64) or 1
    if parent is None:
        return SpanContext(_rng.getrandbits(128) or 1, span_id)
    return SpanContext(parent.trace_id, span_id, parent.flags)


_INHERIT: Any = object()


@contextmanager
def span(
    name: str,
    *,
    parent: SpanContext | None = _INHERIT,
    kind: str = INTERNAL,
    links: Sequence[SpanContext] = (),
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span named ``name``, current inside the block: a child of ``parent`` (a remote
    context), by default of the current span, or the root of a new trace (``parent=None``
    and no current span). An exception leaving the block marks it failed."""
    if parent is _INHERIT:
        here = _current.get()
        parent = here.context if here is not None else None
    backend = _backend
    if backend is None:
        s = Span(_new_ids(parent), parent)
    else:
        s = backend.start(name, parent, kind, links, attributes)
    token = _current.set(s)
    try:
        if s._otel is None:
            yield s
        else:
            with backend.activate(s._otel):
                yield s
    except BaseException as e:
        if s._otel is not None and not _is_cancellation(e):
            _backend_error(s._otel, e, None)
        raise
    finally:
        _current.reset(token)
        if s._otel is not None:
            s._otel.end()


def _is_cancellation(e: BaseException) -> bool:
    return type(e).__name__ in ("CancelledError", "Cancelled", "GeneratorExit")


# -- recording: OpenTelemetry, when an endpoint is set -----------------------------------------

_backend: Any = None  # an _Otel once configure() loaded it


def enabled() -> bool:
    """Whether spans are recorded and exported."""
    return _backend is not None


def configure(
    endpoint: str | None, service: str, attributes: Mapping[str, str] | None = None
) -> bool:
    """Record spans and export them to ``endpoint`` (an OTLP/HTTP base URL, as
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` gives it: ``/v1/traces`` is added). Returns whether it
    is on; without an endpoint, or without the ``observability`` extra (one warning), it
    stays off and trace context still travels."""
    global _backend
    if not endpoint:
        return False
    try:
        backend = _Otel(endpoint, service, dict(attributes or {}))
    except ImportError as e:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed (%s): "
            "pip install 'shoal[observability]'; spans are not exported",
            e,
        )
        return False
    _backend = backend
    return True


def shutdown() -> None:
    """Export what is buffered and stop recording (a worker, as it exits)."""
    global _backend
    backend, _backend = _backend, None
    if backend is not None:
        backend.shutdown()


def flush(timeout: float = 5.0) -> None:
    if _backend is not None:
        _backend.flush(timeout)


def _backend_error(otel_span: Any, error: BaseException, message: str | None) -> None:
    from opentelemetry.trace import Status, StatusCode

    otel_span.record_exception(error)
    otel_span.set_status(Status(StatusCode.ERROR, message or f"{type(error).__name__}: {error}"))


class _Otel:
    """OpenTelemetry's SDK behind :func:`span`: a tracer provider exporting in batches."""

    def __init__(self, endpoint: str, service: str, attributes: dict[str, str]) -> None:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self._trace = trace
        resource = Resource.create({"service.name": service, **attributes})
        self.provider = TracerProvider(resource=resource)
        url = endpoint.rstrip("/") + "/v1/traces"
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        self.tracer = self.provider.get_tracer("shoal")
        kinds = trace.SpanKind
        self._kinds = {
            INTERNAL: kinds.INTERNAL,
            SERVER: kinds.SERVER,
            CLIENT: kinds.CLIENT,
            PRODUCER: kinds.PRODUCER,
            CONSUMER: kinds.CONSUMER,
        }

    def _remote(self, ctx: SpanContext) -> Any:
        t = self._trace
        return t.SpanContext(ctx.trace_id, ctx.span_id, True, t.TraceFlags(ctx.flags))

    def start(
        self,
        name: str,
        parent: SpanContext | None,
        kind: str,
        links: Sequence[SpanContext],
        attributes: Mapping[str, Any] | None,
    ) -> Span:
        t = self._trace
        context = None
        if parent is not None:
            context = t.set_span_in_context(t.NonRecordingSpan(self._remote(parent)))
        else:
            from opentelemetry.context import Context

            context = Context()  # a new trace: not a child of whatever OpenTelemetry holds
        otel = self.tracer.start_span(
            name,
            context=context,
            kind=self._kinds.get(kind, self._kinds[INTERNAL]),
            links=[t.Link(self._remote(link)) for link in links],
            attributes=dict(attributes) if attributes else None,
        )
        c = otel.get_span_context()
        return Span(SpanContext(c.trace_id, c.span_id, int(c.trace_flags)), parent, otel)

    @contextmanager
    def activate(self, otel_span: Any) -> Iterator[None]:
        """The span current for OpenTelemetry too: a handler's own spans become its children."""
        with self._trace.use_span(
            otel_span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        ):
            yield

    def flush(self, timeout: float) -> None:
        self.provider.force_flush(int(timeout * 1000))

    def shutdown(self) -> None:
        self.provider.shutdown()
