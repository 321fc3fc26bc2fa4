"""What becomes of a durable event after a run, as a pure function of how the run ended.

Kept free of I/O so the delivery policy can be read, and tested, on its own; the handler
worker only carries the decision out (:mod:`runtime.worker.handler`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from runtime.errors import Cancelled, FunctionError, FunctionTimeout, Reject, Retry, ShoalError

if TYPE_CHECKING:
    from runtime.wire.spec import FunctionSpec

#: Seconds before a transient failure (an executor away, a partition lost) is redelivered.
RETRY_DELAY = 1.0
#: Failures that ``retries=`` re-runs, with ``backoff``: the handler raised or ran too long.
RERUN: tuple[type[ShoalError], ...] = (FunctionError, FunctionTimeout)


@dataclass(frozen=True)
class Ack:
    """Done: answer (the result, or a final error nobody should re-run), store, acknowledge."""


@dataclass(frozen=True)
class Nak:
    """Run it again: JetStream redelivers the event after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True)
class DeadLetter:
    """Failed for good: keep a copy in the dead-letter stream, then answer, store, acknowledge."""

    reason: str
    code: str


Decision = Ack | Nak | DeadLetter


def settle(error: ShoalError | None, attempt: int, spec: FunctionSpec) -> Decision:
    """The fate of a durable event whose ``attempt``-th delivery (1-based) ended in ``error``
    (None: it succeeded).

    In order:

    - success, or :class:`Cancelled` (deliberate, so final and not dead-lettered): ``Ack``;
    - :class:`Reject`: ``DeadLetter`` at once, whatever ``retries`` says;
    - :class:`Retry`: ``Nak(retry.delay)`` (the function's ``backoff`` when it gave none)
      while deliveries remain (``attempt < max_deliver``), then ``DeadLetter``;
    - the handler raised or timed out (:data:`RERUN`): ``Nak(spec.delay(attempt))`` for
      ``retries`` re-runs (``attempt <= retries``), then ``DeadLetter``;
    - a transient failure (an error class with ``retryable``, e.g. ``ExecutorUnavailable``):
      ``Nak(RETRY_DELAY)`` while deliveries remain, then ``DeadLetter``;
    - anything else (a bad payload, an unencodable result...): ``DeadLetter`` at once.

    A dead letter keeps the error's message and code.
    """
    if error is None or isinstance(error, Cancelled):
        return Ack()
    if isinstance(error, Reject):
        return DeadLetter(error.message, error.code)
    if isinstance(error, Retry) and attempt < spec.max_deliver:
        return Nak(spec.delay(attempt) if error.delay is None else error.delay)
    if isinstance(error, RERUN) and attempt <= spec.retries:
        return Nak(spec.delay(attempt))
    if error.retryable and attempt < spec.max_deliver:
        return Nak(RETRY_DELAY)
    return DeadLetter(error.message, error.code)
