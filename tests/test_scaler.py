"""The scaling policy, on its own."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from controller.scaler import Decision, Observation, WorkerState, decide
from runtime.wire.spec import FunctionSpec

SPEC = FunctionSpec(name="f", concurrency=4, max_workers=3, idle_timeout=10, code_sha="x")


def w(i: int, inflight: int = 0, idle: float = 0.0, version: str | None = None) -> WorkerState:
    return WorkerState(f"w{i}", version or SPEC.version, "ready", inflight, idle)


def test_scale_from_zero_on_first_event() -> None:
    assert decide(SPEC, Observation(pending=1, ack_pending=0)).spawn == 1


def test_unacknowledged_events_of_a_dead_worker_need_a_worker() -> None:
    assert decide(SPEC, Observation(pending=0, ack_pending=2)).spawn == 1


def test_backlog_scales_out_to_the_max_and_no_further() -> None:
    assert decide(SPEC, Observation(pending=9, ack_pending=4, workers=[w(1, 4)])).spawn == 2
    assert decide(SPEC, Observation(pending=100, ack_pending=0)).spawn == 3
    assert decide(SPEC, Observation(100, 0, [w(1, 4), w(2, 4)], starting=1)).spawn == 0


def test_saturated_request_reply_load_adds_a_worker() -> None:
    assert decide(SPEC, Observation(0, 0, [w(1, inflight=4)])).spawn == 1


def test_idle_past_window_drains_busy_or_recent_does_not() -> None:
    d = decide(SPEC, Observation(0, 0, [w(1, idle=11), w(2, idle=3), w(3, inflight=1)]))
    assert d.spawn == 0 and d.drain == ("w1",)


def test_min_workers_stay_warm() -> None:
    spec = FunctionSpec(name="f", min_workers=1, idle_timeout=1, code_sha="x")
    d = decide(spec, Observation(0, 0, [WorkerState("a", spec.version, "ready", 0, 50)]))
    assert d.drain == () and d.spawn == 0
    assert decide(spec, Observation(0, 0)).spawn == 1


def test_old_versions_are_drained() -> None:
    d = decide(SPEC, Observation(1, 0, [w(1, version="old")]))
    assert d.drain == ("w1",) and d.spawn == 1


def test_a_partitioned_model_scales_from_zero_to_its_widest_run() -> None:
    spec = FunctionSpec(name="p", partitions=4, min_workers=0, max_workers=6, code_sha="x")
    assert decide(spec, Observation(pending=1, ack_pending=0)).spawn == 4
    assert decide(spec, Observation(pending=0, ack_pending=0)).spawn == 0  # no demand
    busy = [WorkerState(f"w{i}", spec.version, "ready", 1, 0.0) for i in range(4)]
    assert decide(spec, Observation(0, 0, busy)).spawn == 0


# The keep-alive policy's output (controller.keepalive.workers_wanted) as an input.


def test_the_policy_prewarms_with_no_event_waiting() -> None:
    assert decide(SPEC, Observation(0, 0, keep_warm=1)).spawn == 1
    assert decide(SPEC, Observation(0, 0, starting=1, keep_warm=1)).spawn == 0
    assert decide(SPEC, Observation(0, 0, keep_warm=9)).spawn == SPEC.max_workers


def test_the_policy_keeps_a_worker_past_idle_timeout() -> None:
    d = decide(SPEC, Observation(0, 0, [w(1, idle=500)], keep_warm=1))
    assert d == Decision(wanted=1)
    # Scale-in above the policy's worker still waits for idle_timeout.
    d = decide(SPEC, Observation(0, 0, [w(1, idle=11), w(2, idle=3), w(3, idle=2)], keep_warm=1))
    assert d.drain == ("w1",) and d.wanted == 2


def test_the_policy_unloads_idle_workers_before_idle_timeout() -> None:
    d = decide(SPEC, Observation(0, 0, [w(1, idle=1), w(2, idle=2)], keep_warm=0))
    assert d.spawn == 0 and set(d.drain) == {"w1", "w2"} and d.wanted == 0
    # Only idle ones, and not while events wait or below min_workers.
    assert decide(SPEC, Observation(0, 0, [w(1, inflight=1)], keep_warm=0)).drain == ()
    assert decide(SPEC, Observation(3, 0, [w(1, idle=1)], keep_warm=0)).drain == ()
    spec = FunctionSpec(name="f", min_workers=1, idle_timeout=10, code_sha="x")
    one = [WorkerState("a", spec.version, "ready", 0, 1.0)]
    assert decide(spec, Observation(0, 0, one, keep_warm=0)) == Decision(wanted=1)


def test_without_the_policy_idle_timeout_decides_as_before() -> None:
    assert decide(SPEC, Observation(0, 0, [w(1, idle=1)])) == Decision(wanted=1)
    assert decide(SPEC, Observation(0, 0)) == Decision()


def test_an_adaptive_spec_scales_in_after_its_fixed_window_or_the_one_given() -> None:
    spec = FunctionSpec(name="f", max_workers=3, code_sha="x")  # idle_timeout="adaptive"
    idle = [WorkerState("a", spec.version, "ready", 0, 299.0)]
    assert decide(spec, Observation(0, 0, idle)) == Decision(wanted=1)  # 300 s, as before
    assert decide(spec, Observation(0, 0, idle, idle_timeout=5.0)).drain == ("a",)
    # Above the policy's worker, the delay given (a compressed clock's) decides.
    two = [*idle, WorkerState("b", spec.version, "ready", 0, 4.0)]
    assert decide(spec, Observation(0, 0, two, keep_warm=1, idle_timeout=5.0)).drain == ("a",)
    kept = decide(spec, Observation(0, 0, two, keep_warm=1, idle_timeout=500.0))
    assert kept == Decision(wanted=2)


def test_a_partitioned_pool_is_prewarmed_at_its_width() -> None:
    spec = FunctionSpec(name="p", partitions=3, max_workers=4, code_sha="x")
    assert decide(spec, Observation(0, 0, keep_warm=3)).spawn == 3
    pool = [WorkerState(f"w{i}", spec.version, "ready", 0, 1.0) for i in range(3)]
    assert set(decide(spec, Observation(0, 0, pool, keep_warm=0)).drain) == {"w0", "w1", "w2"}


@given(
    pending=st.integers(0, 50),
    unacked=st.integers(0, 50),
    idle=st.lists(st.floats(0, 1000), max_size=6),
    stale=st.integers(0, 2),
    starting=st.integers(0, 3),
    keep_warm=st.none() | st.integers(0, 4),
)
def test_wanted_is_what_the_decision_leaves(
    pending: int, unacked: int, idle: list[float], stale: int, starting: int, keep_warm: int | None
) -> None:
    """``wanted`` (what placement spreads over hosts) is the current version's workers once
    the decision is carried out: live ones, plus those it starts, less those it drains."""
    current = [WorkerState(f"c{i}", SPEC.version, "ready", 0, t) for i, t in enumerate(idle)]
    old = [WorkerState(f"o{i}", "old", "ready", 0, 0.0) for i in range(stale)]
    d = decide(SPEC, Observation(pending, unacked, current + old, starting, keep_warm))
    drained_current = sum(1 for wid in d.drain if wid.startswith("c"))
    assert d.wanted == len(current) + starting + d.spawn - drained_current
    assert 0 <= d.wanted <= max(SPEC.max_workers, len(current) + starting)
