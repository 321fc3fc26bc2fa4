"""Placement as a pure function (controller.placement): capacity, spread, stability, hosts
that go; and a host's declared capacity (controller.hosts)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.hosts import Amount, capacity, need_of, parse_capacity
from controller.placement import Wanted, place
from runtime import config
from runtime.wire.spec import FunctionSpec

CPU = Amount(4.0, 8192, 0)
GPU = Amount(4.0, 8192, 1)


def test_a_functions_workers_spread_over_the_hosts() -> None:
    placed = place({"f": Wanted(5)}, {"a": CPU, "b": CPU, "c": CPU}, {})
    assert sorted(placed.plan["f"].values()) == [1, 2, 2]
    assert placed.unplaced == {}


def test_a_gpu_worker_goes_only_where_a_gpu_is_free() -> None:
    gpu = Wanted(3, Amount(gpus=1))
    placed = place({"embed": gpu}, {"cpu-only": CPU, "gpu-host": GPU}, {})
    assert placed.plan == {"embed": {"gpu-host": 1}}
    assert placed.unplaced == {"embed": 2}


def test_memory_is_fitted_where_declared() -> None:
    big = Wanted(4, Amount(memory_mb=3000))
    placed = place({"m": big}, {"a": Amount(1, 8192, 0), "b": Amount(1, 4096, 0)}, {})
    assert placed.plan == {"m": {"a": 2, "b": 1}} and placed.unplaced == {"m": 1}


def test_nothing_moves_when_nothing_changed_and_a_new_host_takes_only_new_workers() -> None:
    first = place({"f": Wanted(2), "g": Wanted(1)}, {"a": CPU}, {})
    assert first.plan == {"f": {"a": 2}, "g": {"a": 1}}
    again = place({"f": Wanted(3), "g": Wanted(1)}, {"a": CPU, "b": CPU}, first.plan)
    assert again.plan == {"f": {"a": 2, "b": 1}, "g": {"a": 1}}


def test_a_silent_hosts_share_moves_to_the_others() -> None:
    plan = {"f": {"a": 2, "b": 2}, "g": {"b": 1}}
    placed = place({"f": Wanted(4), "g": Wanted(1)}, {"a": CPU, "c": CPU}, plan)
    assert placed.plan["f"] == {"a": 2, "c": 2}  # b's two went to the host running none
    assert sum(placed.plan["g"].values()) == 1 and placed.unplaced == {}


def test_a_shrink_starts_where_the_decision_drains() -> None:
    plan = {"f": {"a": 2, "b": 2}}
    placed = place({"f": Wanted(3, shrink_from=("a",))}, {"a": CPU, "b": CPU}, plan)
    assert placed.plan == {"f": {"a": 1, "b": 2}}
    placed = place({"f": Wanted(1)}, {"a": CPU, "b": CPU}, plan)
    assert sum(placed.plan["f"].values()) == 1


def test_a_host_that_shrank_keeps_what_still_fits() -> None:
    plan = {"embed": {"a": 2}}
    placed = place({"embed": Wanted(2, Amount(gpus=1))}, {"a": GPU}, plan)
    assert placed.plan == {"embed": {"a": 1}} and placed.unplaced == {"embed": 1}


hosts_st = st.dictionaries(
    st.sampled_from("abcdef"),
    st.builds(Amount, st.just(4.0), st.integers(0, 16).map(lambda n: n * 512), st.integers(0, 3)),
    max_size=5,
)
needs_st = st.builds(
    Amount, st.just(0.0), st.integers(0, 4).map(lambda n: n * 512), st.integers(0, 1)
)
wanted_st = st.dictionaries(
    st.sampled_from(["f", "g", "h", "e1", "e2"]),
    st.builds(Wanted, st.integers(0, 8), needs_st),
    max_size=5,
)
previous_st = st.dictionaries(
    st.sampled_from(["f", "g", "h", "e1", "x"]),
    st.dictionaries(st.sampled_from("abcxyz"), st.integers(0, 4), max_size=4),
    max_size=5,
)


@given(wanted_st, hosts_st, previous_st)
def test_never_over_capacity_and_only_live_hosts(wanted, hosts, previous) -> None:
    placed = place(wanted, hosts, previous)
    for h, cap in hosts.items():
        used = sum((wanted[f].need.times(c.get(h, 0)) for f, c in placed.plan.items()), Amount())
        assert used.within(cap), (h, used, cap)
    for f, counts in placed.plan.items():
        assert set(counts) <= set(hosts) and all(n > 0 for n in counts.values())
        assert sum(counts.values()) + placed.unplaced.get(f, 0) == wanted[f].count
    assert set(placed.unplaced) <= set(wanted)


@given(wanted_st, hosts_st, previous_st)
def test_stable_when_nothing_changed(wanted, hosts, previous) -> None:
    placed = place(wanted, hosts, previous)
    assert place(wanted, hosts, placed.plan) == placed


@given(
    st.dictionaries(st.sampled_from("fgh"), st.integers(0, 8), max_size=3),
    st.dictionaries(st.sampled_from("fgh"), st.integers(0, 3), max_size=3),
    st.dictionaries(st.sampled_from("abcd"), st.integers(0, 3), min_size=1, max_size=4),
)
def test_every_worker_is_placed_when_room_exists(cpu, gpu, gpus_per_host) -> None:
    """Workers that need nothing always find a host; GPU workers (one GPU each) are placed
    up to the GPUs declared in all."""
    hosts = {h: Amount(1.0, 0, n) for h, n in gpus_per_host.items()}
    wanted = {f: Wanted(n) for f, n in cpu.items()}
    wanted |= {f"gpu-{f}": Wanted(n, Amount(gpus=1)) for f, n in gpu.items()}
    placed = place(wanted, hosts, {})
    for f, n in cpu.items():
        assert sum(placed.plan.get(f, {}).values()) == n
    on_gpus = sum(sum(placed.plan.get(f"gpu-{f}", {}).values()) for f in gpu)
    assert on_gpus == min(sum(gpu.values()), sum(gpus_per_host.values()))


@given(st.integers(0, 30), st.integers(1, 6))
def test_one_functions_workers_differ_by_at_most_one_across_hosts(n, k) -> None:
    hosts = {f"h{i}": CPU for i in range(k)}
    counts = place({"f": Wanted(n)}, hosts, {}).plan.get("f", {})
    per_host = [counts.get(h, 0) for h in hosts]
    assert max(per_host) - min(per_host) <= 1 and sum(per_host) == n


# -- a host's capacity ---------------------------------------------------------------------


def test_declared_capacity_fills_in_from_the_machine() -> None:
    machine = Amount(16.0, 65536, 2)
    assert capacity({}, machine) == machine
    assert capacity({"gpus": 0.0}, machine) == Amount(16.0, 65536, 0)
    declared = parse_capacity("cpu=2, memory=4g ,gpus=1")
    assert capacity(declared, machine) == Amount(2.0, 4096, 1)
    assert parse_capacity("memory=512") == {"memory_mb": 512.0}
    assert parse_capacity("memory=1.5GiB") == {"memory_mb": 1536.0}


@pytest.mark.parametrize(
    "bad", ["cpu", "cpu=-1", "gpus=1.5", "disk=3", "memory=lots", "cpu=1,cpu=2", "cpu=nan"]
)
def test_a_bad_capacity_is_an_error_naming_the_option(bad: str) -> None:
    with pytest.raises(config.ConfigError, match="--capacity") as e:
        parse_capacity(bad)
    assert e.value.variable == "--capacity"
    with pytest.raises(config.ConfigError, match="SHOAL_CAPACITY"):
        config.HOST_CAPACITY.get({"SHOAL_CAPACITY": bad})


def test_a_worker_needs_its_specs_gpus_and_memory() -> None:
    spec = FunctionSpec(name="e", kind="executor", engine="custom", gpu=1, memory_mb=900)
    assert need_of(spec) == Amount(0.0, 900, 1)
    assert need_of(FunctionSpec(name="f")) == Amount()
