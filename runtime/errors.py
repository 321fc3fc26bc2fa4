"""One root error type; each subclass carries the code that travels on the wire."""

from __future__ import annotations

import math
from typing import Any, ClassVar

MAX_MESSAGE = 4096  # characters of an error message sent on the wire
MAX_TRACEBACK = 8192  # characters of a traceback sent on the wire (its last ones are kept)


class ShoalError(Exception):
    """Root of every error Shoal raises or sends back to a caller."""

    code: ClassVar[str] = "internal"
    #: Whether the same event could succeed later unchanged: a durable event failing so is
    #: redelivered while deliveries remain (see :func:`runtime.worker.settle.settle`).
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        #: Where the user's code raised it: the handler's (or executor's) own frames, as
        #: ``traceback`` prints them; None when not known or turned off
        #: (``SHOAL_ERROR_TRACEBACKS=0``). On the wire only when set.
        self.traceback: str | None = None
        #: The exception type the user's code raised (``ValueError``), behind a
        #: ``FunctionError``; None otherwise.
        self.cause_type: str | None = None

    def to_wire(self) -> dict[str, Any]:
        message = self.message
        if len(message) > MAX_MESSAGE:  # an error must always fit in its answer
            message = message[:MAX_MESSAGE] + f"... ({len(self.message)} characters)"
        wire: dict[str, Any] = {
            "type": type(self).__name__,
            "code": self.code,
            "message": message,
            "request_id": self.request_id,
        }
        if self.cause_type is not None:
            wire["cause"] = self.cause_type
        if self.traceback:
            tb = self.traceback
            if len(tb) > MAX_TRACEBACK:  # the innermost frames and the error line matter most
                tb = f"... ({len(tb) - MAX_TRACEBACK} characters left out)\n" + tb[-MAX_TRACEBACK:]
            wire["traceback"] = tb
        return wire

    @staticmethod
    def from_wire(body: dict[str, Any]) -> ShoalError:
        cls = _BY_CODE.get(str(body.get("code")), ShoalError)
        err = cls(str(body.get("message", "")), request_id=body.get("request_id"))
        tb, cause = body.get("traceback"), body.get("cause")
        err.traceback = tb if isinstance(tb, str) else None
        err.cause_type = cause if isinstance(cause, str) else None
        if err.traceback:  # printed with the error where it is raised again (a client)
            err.add_note(f"The function's traceback, as it was answered:\n{err.traceback}")
        return err


class DefinitionError(ShoalError, TypeError):
    """A decorator or deployment was given something it cannot serve."""

    code = "definition_error"


class InvalidPayload(ShoalError):
    """The request body could not be decoded (wrong encoding, truncated, not JSON/msgpack)."""

    code = "invalid_payload"


class FunctionNotFound(ShoalError):
    """No function is deployed under the requested name."""

    code = "function_not_found"


class FunctionError(ShoalError):
    """The function raised; the message names the exception."""

    code = "function_error"


class FunctionTimeout(ShoalError):
    """The function ran past its timeout."""

    code = "timeout"


class ResultNotSerializable(ShoalError):
    """The function returned something that neither JSON nor msgpack can carry."""

    code = "result_not_serializable"


class DeployError(ShoalError):
    """A function could not be deployed (bad file, conflicting subjects, code too large)."""

    code = "deploy_error"


class ResultNotFound(ShoalError):
    """No result is stored under that request id (never seen, not finished, or expired)."""

    code = "result_not_found"


class WorkerUnavailable(ShoalError):
    """No worker answered in time (nothing deployed, or cluster down)."""

    code = "worker_unavailable"
    retryable = True


class ExecutorUnavailable(ShoalError):
    """A model executor did not answer (none running, or it died mid-batch); retried."""

    code = "executor_unavailable"
    retryable = True


class Cancelled(ShoalError):
    """The invocation was cancelled by its request id before or while it ran."""

    code = "cancelled"


class DeliveryExhausted(ShoalError):
    """JetStream gave up: every delivery's worker died or ran past ack_wait."""

    code = "delivery_exhausted"


class PayloadTooLarge(ShoalError):
    """A message (a request, an answer, a result) exceeds NATS's maximum payload."""

    code = "payload_too_large"


class ModelTooLarge(ShoalError):
    """A model, or one partition of it, needs more memory than one worker may hold."""

    code = "model_too_large"


class PartitionLost(ShoalError):
    """A partition of a partitioned model stopped mid-run (its worker died or left)."""

    code = "partition_lost"
    retryable = True

    def __init__(
        self, message: str, *, request_id: str | None = None, worker: str | None = None
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.worker = worker  # the worker that went away, when known (not on the wire)


class IntermediateStoreError(ShoalError):
    """Intermediates could not be written to or read from the object store."""

    code = "intermediate_store_error"
    retryable = True


class Retry(ShoalError):
    """Raised by a handler: run this durable event again after ``delay`` seconds.

    ``raise Retry(delay=30)`` (or ``Retry("model still loading", delay=30)``) has JetStream
    redeliver the event after the delay; with no delay the function's ``backoff`` applies.
    Each re-run counts against ``max_deliver`` (not ``retries``): on the last delivery the
    event is dead-lettered instead, and its answer is this error. On a request/reply call,
    which is never redelivered, the caller gets this error (code ``retry``) at once and may
    call again. The delay does not travel on the wire.
    """

    code = "retry"

    def __init__(
        self, reason: str = "", *, delay: float | None = None, request_id: str | None = None
    ) -> None:
        if delay is not None:
            if isinstance(delay, bool) or not isinstance(delay, int | float):
                raise TypeError(f"Retry(delay=...) takes seconds as a number, got {delay!r}")
            if not math.isfinite(delay) or delay < 0:
                raise ValueError(f"Retry(delay=...) must be finite seconds >= 0, got {delay!r}")
        self.delay = None if delay is None else float(delay)
        when = "" if delay is None else f" in {delay:g}s"
        super().__init__(
            str(reason) or f"the handler asked to run again{when}", request_id=request_id
        )


class Reject(ShoalError):
    """Raised by a handler: this durable event can never succeed; dead-letter it now.

    ``raise Reject("order 17 does not exist")`` skips any ``retries``: the event goes to the
    dead-letter stream after this one delivery (code ``rejected``, the reason kept), and its
    answer is this error. On a request/reply call the caller gets this error.
    """

    code = "rejected"

    def __init__(self, reason: str = "", *, request_id: str | None = None) -> None:
        super().__init__(str(reason) or "the handler rejected the event", request_id=request_id)


_BY_CODE: dict[str, type[ShoalError]] = {
    c.code: c
    for c in (
        ShoalError,
        DefinitionError,
        InvalidPayload,
        FunctionNotFound,
        FunctionError,
        FunctionTimeout,
        ResultNotSerializable,
        DeployError,
        ResultNotFound,
        WorkerUnavailable,
        ExecutorUnavailable,
        Cancelled,
        DeliveryExhausted,
        PayloadTooLarge,
        ModelTooLarge,
        PartitionLost,
        IntermediateStoreError,
        Retry,
        Reject,
    )
}
