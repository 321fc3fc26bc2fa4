"""The delivery policy, as a pure function: what becomes of a durable event after a run."""

from __future__ import annotations

import dataclasses

import pytest

from runtime import errors
from runtime.errors import (
    Cancelled,
    ExecutorUnavailable,
    FunctionError,
    FunctionTimeout,
    InvalidPayload,
    PartitionLost,
    Reject,
    ResultNotSerializable,
    Retry,
    ShoalError,
)
from runtime.wire.spec import FunctionSpec
from runtime.worker.settle import RETRY_DELAY, Ack, DeadLetter, Decision, Nak, settle


def spec(
    retries: int = 0, max_deliver: int = 5, backoff: tuple[float, ...] = (1, 5, 30)
) -> FunctionSpec:
    return FunctionSpec(
        name="f", retries=retries, max_deliver=max_deliver, backoff=backoff
    ).validate()


def test_success_is_acknowledged_on_any_delivery() -> None:
    for attempt in range(1, 6):
        assert settle(None, attempt, spec(retries=2)) == Ack()


@pytest.mark.parametrize("error", [FunctionError("ValueError: x"), FunctionTimeout("too long")])
def test_handler_failures_are_rerun_retries_times_with_backoff(error: ShoalError) -> None:
    s = spec(retries=3, max_deliver=5, backoff=(0.2, 1))
    assert [settle(error, a, s) for a in (1, 2, 3)] == [Nak(0.2), Nak(1.0), Nak(1.0)]
    assert settle(error, 4, s) == DeadLetter(error.message, error.code)


def test_backoff_schedule_follows_the_attempt_and_its_last_entry_repeats() -> None:
    s = spec(retries=4, max_deliver=6, backoff=(1, 5, 30))
    delays = [settle(FunctionError("x"), a, s) for a in range(1, 5)]
    assert delays == [Nak(1.0), Nak(5.0), Nak(30.0), Nak(30.0)]


def test_without_retries_a_handler_failure_is_dead_lettered_at_once() -> None:
    error = FunctionError("RuntimeError: doomed")
    assert settle(error, 1, spec()) == DeadLetter("RuntimeError: doomed", "function_error")


@pytest.mark.parametrize("error", [ExecutorUnavailable("away"), PartitionLost("gone")])
def test_transient_failures_are_redelivered_while_deliveries_remain(error: ShoalError) -> None:
    s = spec(retries=0, max_deliver=3)
    assert settle(error, 1, s) == Nak(RETRY_DELAY)
    assert settle(error, 2, s) == Nak(RETRY_DELAY)
    assert settle(error, 3, s) == DeadLetter(error.message, error.code)


def test_cancelled_is_final_and_not_dead_lettered() -> None:
    for attempt in range(1, 4):
        assert settle(Cancelled("stop"), attempt, spec(retries=2, max_deliver=3)) == Ack()


@pytest.mark.parametrize(
    "error", [InvalidPayload("bad json"), ResultNotSerializable("a set"), ShoalError("internal")]
)
def test_other_failures_are_dead_lettered_at_once_whatever_retries_says(error: ShoalError) -> None:
    assert settle(error, 1, spec(retries=3)) == DeadLetter(error.message, error.code)


def test_the_dead_letter_keeps_the_whole_message() -> None:
    long = "x" * 10_000  # the wire form cuts it; the dead-letter stream cuts it its own way
    assert settle(FunctionError(long), 1, spec()) == DeadLetter(long, "function_error")


def test_keyed_on_classes_not_codes() -> None:
    class BadRow(FunctionError):
        code = "bad_row"

    class Flaky(ShoalError):
        code = "flaky"
        retryable = True

    assert settle(BadRow("row 3"), 1, spec(retries=1)) == Nak(1.0)
    assert settle(Flaky("later"), 1, spec()) == Nak(RETRY_DELAY)
    assert settle(Flaky("later"), 5, spec()) == DeadLetter("later", "flaky")


def test_decisions_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Nak(1.0).delay = 2.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        DeadLetter("r", "c").code = "d"  # type: ignore[misc]


def test_retry_reruns_after_its_delay_while_deliveries_remain_whatever_retries_says() -> None:
    s = spec(retries=0, max_deliver=3)
    assert settle(Retry(delay=2.5), 1, s) == Nak(2.5)
    assert settle(Retry(delay=2.5), 2, s) == Nak(2.5)
    assert settle(Retry(delay=0), 1, s) == Nak(0.0)
    # The last delivery: dead-lettered, with its own code.
    assert settle(Retry("not yet", delay=2.5), 3, s) == DeadLetter("not yet", "retry")


def test_retry_without_a_delay_follows_the_backoff() -> None:
    s = spec(max_deliver=5, backoff=(1, 5))
    assert [settle(Retry(), a, s) for a in (1, 2, 3)] == [Nak(1.0), Nak(5.0), Nak(5.0)]


def test_reject_is_dead_lettered_at_once_whatever_retries_says() -> None:
    for attempt in (1, 2):
        decision = settle(Reject("no such order"), attempt, spec(retries=3))
        assert decision == DeadLetter("no such order", "rejected")


def test_retry_and_reject_travel_on_the_wire_with_stable_codes() -> None:
    for err in (Retry("later", delay=3, request_id="r"), Reject("never", request_id="r")):
        wire = err.to_wire()
        assert wire == {
            "type": type(err).__name__,
            "code": err.code,
            "message": err.message,
            "request_id": "r",
        }
        back = ShoalError.from_wire(wire)
        assert type(back) is type(err) and back.message == err.message
    assert (Retry.code, Reject.code) == ("retry", "rejected")
    assert ShoalError.from_wire(Retry(delay=3).to_wire()).delay is None  # the delay stays home


def test_retry_and_reject_say_what_happened_without_a_reason() -> None:
    assert Retry(delay=2.5).message == "the handler asked to run again in 2.5s"
    assert Retry().message == "the handler asked to run again"
    assert Reject().message == "the handler rejected the event"
    assert Reject(17).message == "17"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("delay", "kind"),
    [
        (-1, ValueError),
        (float("inf"), ValueError),
        (float("nan"), ValueError),
        ("5", TypeError),
        (True, TypeError),
        ([1], TypeError),
    ],
)
def test_a_bad_retry_delay_is_a_typed_error(delay: object, kind: type[Exception]) -> None:
    with pytest.raises(kind, match=r"Retry\(delay=\.\.\.\)"):
        Retry(delay=delay)  # type: ignore[arg-type]


def test_retry_and_reject_are_exported() -> None:
    import runtime

    assert runtime.Retry is Retry and runtime.Reject is Reject
    assert {"Retry", "Reject"} <= set(runtime.__all__)


RETRIED = ("function_error", "timeout")


def previous_rule(error: ShoalError | None, attempt: int, s: FunctionSpec) -> Decision:
    """The rule as the handler worker wrote it inline before, keyed on codes: the reference."""
    if error is None:
        return Ack()
    code = error.code
    again = (error.retryable and attempt < s.max_deliver) or (
        code in RETRIED and attempt <= s.retries
    )
    if again:
        return Nak(s.delay(attempt) if code in RETRIED else RETRY_DELAY)
    if code != Cancelled.code:
        return DeadLetter(error.message, code)
    return Ack()


BUILT_IN = [
    c
    for c in vars(errors).values()
    if isinstance(c, type) and issubclass(c, ShoalError) and c.__name__ not in ("Retry", "Reject")
]


@pytest.mark.parametrize("cls", BUILT_IN, ids=lambda c: c.__name__)
def test_every_built_in_error_is_settled_as_before(cls: type[ShoalError]) -> None:
    cases = 0
    for retries in range(4):
        for max_deliver in range(retries + 1, 6):
            for backoff in ((1.0, 5.0, 30.0), (0.1,), (0.0, 2.5)):
                s = spec(retries, max_deliver, backoff)
                for attempt in range(1, max_deliver + 1):  # JetStream delivers no more
                    error = cls(f"{cls.__name__} on {attempt}")
                    assert settle(error, attempt, s) == previous_rule(error, attempt, s)
                    cases += 1
    assert cases > 100
