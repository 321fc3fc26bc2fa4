"""functions/radixnet.py without NATS: the network, the partitioners, and the partitioned
algorithm simulated in process, checked bit for bit against the monolithic reference. The
class served whole, in process and on a cluster: test_radixnet.py."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from functions import radixnet as R
from runtime import InvalidPayload
from runtime.define.decorator import definition_of
from runtime.define.partitioned import check_plan, memory_budget
from runtime.errors import ModelTooLarge

N = 1024


def run_partitioned(
    neurons: int, layers: int, batch: int, seed: int, parts: int, partitioner: str
) -> tuple[np.ndarray, int]:
    """The partitioned algorithm, partitions passing payloads to each other layer by layer.

    Returns the gathered final matrix and the payload bytes moved between partitions."""
    owners = R.owners_for(neurons, layers, seed, parts, partitioner)
    shards = [R.build_part(neurons, layers, seed, owners, i, parts) for i in range(parts)]
    y0 = R.inputs(neurons, batch, seed)
    acts = [R.local_inputs(s, y0) for s in shards]
    moved = 0
    for layer in range(layers):
        out = [R.outgoing(s, layer, a) for s, a in zip(shards, acts, strict=True)]
        for i, o in enumerate(out):  # every peer hears something, "nothing" included
            assert set(o) == set(range(parts)) - {i}
        moved += sum(R.payload_bytes(v) for o in out for v in o.values())
        acts = [
            R.advance(
                s,
                layer,
                a,
                {q: out[q][i] for q in range(parts) if q != i and out[q][i] is not None},
            )
            for i, (s, a) in enumerate(zip(shards, acts, strict=True))
        ]
    finals = [R.final_payload(s, a) for s, a in zip(shards, acts, strict=True)]
    return R.assemble(neurons, batch, finals), moved


def monolithic(neurons: int, layers: int, batch: int, seed: int) -> np.ndarray:
    return R.forward(R.network(neurons, layers, seed), R.inputs(neurons, batch, seed))


def assert_bit_identical(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype == np.float32
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.fixture(scope="module")
def full_1024() -> np.ndarray:
    """Seed 0, 1024 neurons, 120 layers, batch 64, monolithic."""
    return monolithic(N, 120, 64, 0)


# -- the network --------------------------------------------------------------------------------


def test_the_network_is_deterministic_from_the_seed() -> None:
    a, b, other = R.network(N, 3, 5), R.network(N, 3, 5), R.network(N, 3, 6)
    triples = zip(
        a.inputs + a.weights, b.inputs + b.weights, other.inputs + other.weights, strict=True
    )
    for x, y, z in triples:
        assert np.array_equal(x, y)
        assert not np.array_equal(x, z)
    assert np.array_equal(R.inputs(N, 16, 5), R.inputs(N, 16, 5))
    assert not np.array_equal(R.inputs(N, 16, 5), R.inputs(N, 16, 6))
    # Layer l does not depend on how many layers follow it, sample b not on the batch size.
    longer = R.network(N, 5, 5)
    for x, y in zip(a.inputs + a.weights, longer.inputs[:3] + longer.weights[:3], strict=True):
        assert np.array_equal(x, y)
    assert np.array_equal(R.inputs(N, 16, 5), R.inputs(N, 40, 5)[:16])


@pytest.mark.parametrize("neurons", [1024, 4096])
def test_every_row_and_column_has_32_non_zeros(neurons: int) -> None:
    net = R.network(neurons, 4, 1)
    for idx, w in zip(net.inputs, net.weights, strict=True):
        assert idx.shape == w.shape == (neurons, 32)
        assert idx.dtype == np.int32 and w.dtype == np.float32
        assert idx.min() >= 0 and idx.max() < neurons
        rows = np.sort(idx, axis=1)
        assert (np.diff(rows, axis=1) > 0).all()  # 32 distinct inputs per output neuron
        assert (np.bincount(idx.ravel(), minlength=neurons) == 32).all()  # 32 outputs per input
        assert (w != 0).all()
    # Weights are seeded around the Graph Challenge's 1/16 unit, both signs.
    w = np.concatenate([w.ravel() for w in net.weights])
    assert abs(w.mean() * 16 - R.WEIGHT_MEAN) < 0.1 and abs(w.std() * 16 - R.WEIGHT_STD) < 0.1


def test_bias_per_neuron_count() -> None:
    assert R.network(1024, 1, 0).bias == -0.3
    assert R.network(4096, 1, 0).bias == -0.35
    assert R.BIAS[16384] == -0.4 and R.BIAS[65536] == -0.45


def test_the_reference_matches_a_dense_computation() -> None:
    layers, batch, seed = 4, 12, 3
    net = R.network(N, layers, seed)
    y = R.inputs(N, batch, seed).astype(np.float64)
    assert set(np.unique(y)) == {0.0, 1.0}
    for idx, w in zip(net.inputs, net.weights, strict=True):
        dense = np.zeros((N, N))
        dense[idx, np.arange(N)[:, None]] = w  # W[input, output]
        y = np.minimum(32.0, np.maximum(0.0, y @ dense + net.bias))
    got = monolithic(N, layers, batch, seed)
    np.testing.assert_allclose(got, y, rtol=1e-4, atol=1e-4)
    assert ((got > 0) & (got < 32)).any() and (got == 0).any()  # neither dead nor saturated


def test_seed_0_categories_are_some_but_not_all(full_1024: np.ndarray) -> None:
    result = R.answer(full_1024)
    assert 0 < len(result["categories"]) < 64
    assert result["categories"] == sorted(set(result["categories"]))
    assert result["categories"] == [b for b in range(64) if full_1024[b].any()]
    assert result["checksum"] == math.fsum(full_1024.astype(np.float64).ravel().tolist())
    alive = full_1024[result["categories"]]
    assert ((alive > 0) & (alive < 32)).mean() > 0.1  # not everything clamped at 32


def test_seed_0_categories_with_4096_neurons() -> None:
    result = R.reference(4096, 120, 64, 0)
    assert 0 < len(result["categories"]) < 64


# -- partitioned == monolithic ------------------------------------------------------------------


@pytest.mark.parametrize("partitioner", ["good", "random"])
@pytest.mark.parametrize("parts", [2, 3, 4, 8])
@pytest.mark.parametrize("seed", [0, 7])
def test_partitioned_is_bit_identical_to_monolithic(
    parts: int, partitioner: str, seed: int
) -> None:
    layers, batch = 5, 24
    final, moved = run_partitioned(N, layers, batch, seed, parts, partitioner)
    mono = monolithic(N, layers, batch, seed)
    assert mono.any() and moved > 0
    assert_bit_identical(final, mono)
    assert R.answer(final) == R.answer(mono) == R.reference(N, layers, batch, seed)


@pytest.mark.parametrize(("parts", "partitioner"), [(3, "good"), (2, "random")])
def test_partitioned_4096_is_bit_identical(parts: int, partitioner: str) -> None:
    final, _ = run_partitioned(4096, 4, 8, 11, parts, partitioner)
    assert_bit_identical(final, monolithic(4096, 4, 8, 11))


def test_partitioned_full_depth(full_1024: np.ndarray) -> None:
    final, _ = run_partitioned(N, 120, 64, 0, 3, "good")
    assert_bit_identical(final, full_1024)
    assert R.answer(final) == R.answer(full_1024)


# -- partitioners -------------------------------------------------------------------------------


@pytest.mark.parametrize(("neurons", "parts"), [(1024, 2), (1024, 3), (1024, 5), (4096, 3)])
def test_good_partitions_are_balanced(neurons: int, parts: int) -> None:
    owners = R.good_owners(neurons, 6, 2, parts)
    assert owners.shape == (7, neurons)
    for layer in owners[1:]:  # who computes which neurons (and holds their weights)
        counts = np.bincount(layer, minlength=parts)
        assert counts.size == parts and counts.min() > 0
        assert counts.max() <= math.ceil(neurons / parts * (1 + R.BALANCE))
    # The inputs (no weights) go where they are read: no partition left without any.
    assert np.bincount(owners[0], minlength=parts).min() > 0
    random = R.random_owners(neurons, 6, 2, parts)
    assert np.bincount(random[0]).max() - np.bincount(random[0]).min() <= 1
    assert not np.array_equal(random, R.random_owners(neurons, 6, 3, parts))


@pytest.mark.parametrize(("neurons", "parts"), [(1024, 2), (1024, 4), (1024, 8), (4096, 4)])
def test_good_partitioner_moves_fewer_bytes_than_random(neurons: int, parts: int) -> None:
    layers, batch = 6, 16
    _, good = run_partitioned(neurons, layers, batch, 4, parts, "good")
    _, random = run_partitioned(neurons, layers, batch, 4, parts, "random")
    assert 0 < good * 1.5 < random
    # The same in structure: activation columns each layer has to move.
    cut = {
        kind: sum(
            R.layer_cut(idx, owners[layer], owners[layer + 1], parts)
            for owners in [R.owners_for(neurons, layers, 4, parts, kind)]
            for layer, idx in enumerate(R.layer_stream(neurons, layers, 4))
        )
        for kind in ("good", "random")
    }
    assert cut["good"] * 1.5 < cut["random"]


def test_a_partition_holds_its_share_of_the_model() -> None:
    layers, parts = 10, 4
    owners = R.owners_for(N, layers, 0, parts, "good")
    shards = [R.build_part(N, layers, 0, owners, i, parts) for i in range(parts)]
    assert sum(s.model_bytes for s in shards) == R.model_bytes(N, layers)
    for s in shards:
        assert s.model_bytes <= R.model_bytes(N, layers) / parts * (1 + R.BALANCE)
    for layer in range(layers + 1):  # every neuron has exactly one owner
        rows = np.concatenate([s.rows[layer] for s in shards])
        assert np.array_equal(np.sort(rows), np.arange(N))


def test_model_bytes_and_the_memory_budget() -> None:
    assert R.model_bytes(1024, 120) == 1024 * 32 * 120 * 8
    spec = definition_of(R.RadixNet).spec  # type: ignore[union-attr]
    budget = memory_budget(spec)
    net = R.RadixNet()
    small = net.plan({"neurons": 1024, "partitions": 1})
    assert check_plan(spec, small, budget) == small
    with pytest.raises(ModelTooLarge, match="partitions=2"):
        check_plan(spec, net.plan({"neurons": 4096, "partitions": 1}), budget)
    big = net.plan({"neurons": 4096, "partitions": 2})
    assert check_plan(spec, big, budget) == big


# -- requests -----------------------------------------------------------------------------------


def test_a_full_request_parses() -> None:
    req = R.parse_request(
        {"neurons": 4096, "layers": 7, "batch": 3, "seed": 9, "partitions": 4}
        | {"partitioner": "random", "stats": True}
    )
    assert req == R.Request(4096, 7, 3, 9, 4, "random", True)
    assert R.parse_request({}) == R.Request()
    plan = R.RadixNet().plan({"neurons": 1024, "layers": 120, "batch": 64, "partitions": 4})
    assert (plan.partitions, plan.model_bytes) == (4, R.model_bytes(1024, 120))


@pytest.mark.parametrize(
    ("request_", "says"),
    [
        ("neurons=1024", "radixnet expects"),
        (None, "radixnet expects"),
        ({"neuron": 1024}, "unknown key(s) 'neuron'; accepted: neurons, layers"),
        ({"neurons": 2048}, '"neurons" must be one of 1024, 4096, got 2048'),
        ({"neurons": "1024"}, '"neurons" must be one of 1024, 4096'),
        ({"neurons": True}, '"neurons" must be one of 1024, 4096'),
        ({"layers": 0}, '"layers" must be in 1..120, got 0'),
        ({"layers": 121}, '"layers" must be in 1..120, got 121'),
        ({"layers": 2.0}, '"layers" must be an int, got float'),
        ({"batch": 0}, f'"batch" must be in 1..{R.MAX_BATCH}'),
        ({"batch": R.MAX_BATCH + 1}, f'"batch" must be in 1..{R.MAX_BATCH}'),
        ({"seed": -1}, '"seed" must be in 0..'),
        ({"seed": "0"}, '"seed" must be an int, got str'),
        ({"partitions": 0}, '"partitions" must be in 1..8, got 0'),
        ({"partitions": 9}, '"partitions" must be in 1..8, got 9'),
        ({"partitions": False}, '"partitions" must be an int, got bool'),
        ({"partitioner": "metis"}, '"partitioner" must be "good" or "random"'),
        ({"partitioner": ["good"]}, '"partitioner" must be "good" or "random"'),
        ({"stats": 1}, '"stats" must be true or false'),
    ],
)
def test_bad_requests_say_what_is_accepted(request_: Any, says: str) -> None:
    with pytest.raises(InvalidPayload) as e:
        R.parse_request(request_)
    assert says in str(e.value)
    with pytest.raises(InvalidPayload):
        R.RadixNet().plan(request_)


def test_payloads_from_peers_are_checked() -> None:
    good = (np.array([3], np.uint16), np.array([1], np.uint16), np.array([0.5], np.float32))
    assert R.check_payload(list(good), N, 2)[2][0] == np.float32(0.5)
    for bad in [
        good[:2],
        (np.array([N], np.uint16), *good[1:]),
        (good[0], np.array([2], np.uint16), good[2]),
        (np.array([-1], np.int32), *good[1:]),
        (good[0], good[1], np.array([1, 2], np.float32)),
        (good[0].astype(np.float32), *good[1:]),
    ]:
        with pytest.raises(ValueError):
            R.check_payload(bad, N, 2)
