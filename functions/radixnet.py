"""radixnet: a Sparse DNN Graph Challenge-style network (RadiX-Net-like), row-partitioned.

What it computes: ``layers`` sparse layers of ``neurons`` neurons applied to a seeded batch of
sparse binary inputs, ``Y[l+1] = min(32, relu(Y[l] @ W[l] + bias))``, and which inputs still
have a non-zero activation row at the end (the Graph Challenge's "categories").

Request (JSON or msgpack; every key optional, defaults shown)::

    {"neurons": 1024, "layers": 120, "batch": 64, "seed": 0, "partitions": 1,
     "partitioner": "good", "stats": false}

``neurons`` is 1024 or 4096, ``layers`` 1..120, ``batch`` 1..256, ``seed`` an int >= 0,
``partitions`` 1..8 (1: one worker computes everything), ``partitioner`` "good" or "random",
``stats`` true to add a ``"stats"`` key (bytes, messages and non-zero values moved between
partitions, per-shard model bytes and timings). Anything else is refused with ``InvalidPayload``.

Answer: ``{"categories": [sorted batch indices whose final row is non-zero], "checksum":
<exact sum of all final activations, a float>}``. It is bit-identical for every partition
count and partitioner: each output neuron is computed by the same code from the same inputs
(``layer_forward``, its 32 terms summed in a fixed order), and the checksum is ``math.fsum``
of the gathered final matrix, which does not depend on order.

The network (deterministic from ``(neurons, seed)``; layer ``l`` does not depend on
``layers``, so a shorter network is a prefix of a longer one):

- Every layer has exactly ``K = 32`` non-zeros per output neuron and per input neuron, as in
  RadiX-Net's mixed-radix topologies. Each layer's neurons have a hidden coordinate of
  ``log2(neurons)`` bits; layer ``l`` "mixes" a 5-bit window of it: output coordinate ``c``
  reads the 32 inputs whose coordinates equal ``c`` outside the window (the window takes all
  32 values). The windows cycle through ``WINDOWS[neurons]`` (bits 0-4 and 5-9 for 1024,
  i.e. radix 32 x 32; bits 0-4, 5-9 and 7-11 for 4096, i.e. 32 x 32 x 4 with the last radix
  widened to 32), rotated by the seed, so after two (three) layers every output depends on
  every input. A layer is thus ``neurons / 32`` disjoint complete 32 x 32 blocks.
- Every layer's neuron labels are a seeded random permutation of the coordinates (RadiX-Net
  permutes too): as stored, the matrices look random and a partitioner has to find the blocks.
- Weights are seeded: ``(WEIGHT_MEAN + WEIGHT_STD * z) / 16`` with ``z`` standard normal, i.e.
  the Graph Challenge's 1/16 as the unit, but signed, with a spread of 1.25 x He
  initialisation's ``sqrt(2 / 32)``.
  With the Graph Challenge's constant 1/16 every surviving input saturates at 32 everywhere
  (and a block's 32 outputs are always equal); with these, weak inputs die out and strong ones
  settle at varied activations, about 40% of them clamped at 32.
- Bias ``BIAS[neurons]`` (-0.3 for 1024, -0.35 for 4096, the Graph Challenge's values), ReLU,
  clamp at 32, float32 activations.
- Inputs: ``batch x neurons`` binary, sample ``b`` with its own seeded density drawn uniformly
  from ``INPUT_DENSITY`` (0.02..0.5). Inputs sparser than about 0.15 (1024 neurons) or 0.19
  (4096) die out, denser ones survive: seed 0, batch 64, 120 layers keeps 51 of 64 inputs
  with 1024 neurons and 42 with 4096.

Partitioning (FSD-Inference's 1-D row partitioning): an owner array per layer,
``owners[l][i]`` = the partition that holds activation column ``i`` of ``Y[l]``; the partition
owning ``i`` in ``Y[l+1]`` holds output neuron ``i``'s 32 input indices and weights (a row of
``W[l]`` transposed) and computes that neuron. Per layer each partition sends every other one
the non-zero activations it needs (COO: uint16 neuron ids, uint16 sample ids, float32 values;
an explicit "nothing" when there are none), computes its own neurons from local + received
columns, and moves on. The coordinator gathers the final non-zeros. Partitioners:

- ``"random"``: one seeded, balanced random owner array for every layer;
- ``"good"``: layer by layer with one layer of look-ahead. Output neurons that read the same
  inputs are merged into units (hypergraph coarsening; here, the 32 x 32 blocks), and two
  greedy placements are tried: units where most of their inputs already are, or units merged
  further into the clusters the next layer reads together. The one that moves fewer
  activation columns now plus (optimistically) next layer wins. Partitions stay within
  ``BALANCE`` (5%) of an even share; the input layer's owners follow their readers, so inputs
  never move. Owners change from layer to layer, as in FSD-Inference.

With blocks kept whole an activation goes to at most one other partition, against nearly all
``P - 1`` others with random owners. With 1024 neurons two consecutive windows cover every
bit, so every layer is an all-to-all transpose and good moves about ``P`` times fewer bytes
than random. With 4096, two consecutive windows leave some bits untouched, and the look-ahead
keeps every other layer local: about ``2P`` times fewer for P <= 4. Measured (seed 0, batch
64, 120 layers, payload MB good / random): 1024: P=2 14.5 / 29.2, P=4 21.8 / 87.5,
P=8 25.4 / 201; 4096: P=2 23.9 / 96.6, P=4 35.8 / 290, P=8 55.8 / 667.

Memory: ``model_bytes(neurons, layers)`` counts 8 bytes per non-zero (float32 weight, int32
index): 31.5 MB for 1024 x 120, which fits one 64 MiB worker, and 126 MB for 4096 x 120, which
needs 2 or more. A partition holds its rows of every layer, about ``model_bytes / P``, plus
small send lists; it generates them from the seed one layer at a time, keeping only its rows
(about 1 s of CPU for 4096 x 120, most of it the good partitioner, which every partition
runs for itself; a worker keeps its last few partitions).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np

from runtime import InvalidPayload, Plan, Shard, partitioned

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

K = 32  # non-zeros per row: every output neuron reads 32 inputs (a 5-bit window)
CLAMP = np.float32(32.0)
BIAS: dict[int, float] = {1024: -0.3, 4096: -0.35, 16384: -0.4, 65536: -0.45}
NEURONS = (1024, 4096)  # what requests may ask for (BIAS has the Graph Challenge's others)
WINDOWS: dict[int, tuple[int, ...]] = {1024: (0, 5), 4096: (0, 5, 7)}  # bit offsets, cycled
WEIGHT_MEAN = 0.3  # in units of 1/16
WEIGHT_STD = 5.0  # in units of 1/16
INPUT_DENSITY = (0.02, 0.5)
MAX_LAYERS = 120
MAX_BATCH = 256  # N=4096 x 120 layers x 256 is ~5 s of CPU; random owners at P=8 move ~2.7 GB
MAX_PARTITIONS = 8
PARTITIONERS = ("good", "random")
BALANCE = 0.05  # a partition may hold up to 5% more than an even share of a layer's neurons
BYTES_PER_NONZERO = 8  # float32 weight + int32 input index
WORKER_MEMORY_MB = 64  # N=1024 (31.5 MB) fits one worker; N=4096 (126 MB) needs 2 or more
CACHE_BYTES = WORKER_MEMORY_MB << 20  # built partitions kept per worker instance
CACHE_ENTRIES = 4

# Seed-sequence tags, so the streams for labels, weights and inputs never overlap.
_LABELS, _WEIGHTS, _INPUTS, _DENSITY, _RANDOM_OWNERS = 1, 2, 3, 4, 5


# -- request ------------------------------------------------------------------------------------

_DEFAULTS: dict[str, Any] = {
    "neurons": 1024,
    "layers": MAX_LAYERS,
    "batch": 64,
    "seed": 0,
    "partitions": 1,
    "partitioner": "good",
    "stats": False,
}
_USAGE = (
    f'radixnet expects {{"neurons": 1024 | 4096, "layers": 1..{MAX_LAYERS}, '
    f'"batch": 1..{MAX_BATCH}, "seed": int >= 0, "partitions": 1..{MAX_PARTITIONS}, '
    '"partitioner": "good" | "random", "stats": bool} (every key optional)'
)


@dataclass(frozen=True)
class Request:
    neurons: int = 1024
    layers: int = MAX_LAYERS
    batch: int = 64
    seed: int = 0
    partitions: int = 1
    partitioner: str = "good"
    stats: bool = False


def parse_request(event: Any) -> Request:
    """Validate a request strictly; raise ``InvalidPayload`` saying what is accepted."""
    if not isinstance(event, dict):
        raise InvalidPayload(f"{_USAGE}; got {type(event).__name__}")
    unknown = sorted(str(k) for k in event if k not in _DEFAULTS)
    if unknown:
        raise InvalidPayload(
            f"radixnet: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(_DEFAULTS)}"
        )
    values = {**_DEFAULTS, **event}

    def integer(key: str, lo: int, hi: int) -> int:
        v = values[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidPayload(f'radixnet: "{key}" must be an int, got {type(v).__name__}')
        if not lo <= v <= hi:
            raise InvalidPayload(f'radixnet: "{key}" must be in {lo}..{hi}, got {v}')
        return v

    neurons = values["neurons"]
    if isinstance(neurons, bool) or not isinstance(neurons, int) or neurons not in NEURONS:
        raise InvalidPayload(
            f'radixnet: "neurons" must be one of {", ".join(map(str, NEURONS))}, got {neurons!r}'
        )
    partitioner = values["partitioner"]
    if not isinstance(partitioner, str) or partitioner not in PARTITIONERS:
        raise InvalidPayload(
            f'radixnet: "partitioner" must be "good" or "random", got {partitioner!r}'
        )
    stats = values["stats"]
    if not isinstance(stats, bool):
        raise InvalidPayload(f'radixnet: "stats" must be true or false, got {stats!r}')
    return Request(
        neurons=neurons,
        layers=integer("layers", 1, MAX_LAYERS),
        batch=integer("batch", 1, MAX_BATCH),
        seed=integer("seed", 0, 2**64 - 1),
        partitions=integer("partitions", 1, MAX_PARTITIONS),
        partitioner=partitioner,
        stats=stats,
    )


def model_bytes(neurons: int, layers: int) -> int:
    """Bytes of the whole network's weights and indices (8 per non-zero)."""
    return neurons * K * layers * BYTES_PER_NONZERO


# -- the network --------------------------------------------------------------------------------


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(key)))


def labels(neurons: int, seed: int, layer: int) -> np.ndarray:
    """Hidden coordinate of each neuron label of ``Y[layer]`` (a seeded permutation)."""
    return _rng(seed, _LABELS, neurons, layer).permutation(neurons)


def _window(neurons: int, seed: int, layer: int) -> int:
    offsets = WINDOWS[neurons]
    return offsets[(layer + seed) % len(offsets)]


def _layer_inputs(
    neurons: int, seed: int, layer: int, coord_in: np.ndarray, coord_out: np.ndarray
) -> np.ndarray:
    label_in = np.empty(neurons, np.int64)
    label_in[coord_in] = np.arange(neurons)
    shift = _window(neurons, seed, layer)
    outside = coord_out & ~np.int64((K - 1) << shift)
    idx: np.ndarray = label_in[outside[:, None] | (np.arange(K, dtype=np.int64) << shift)]
    return idx.astype(np.int32)


def layer_inputs(neurons: int, seed: int, layer: int) -> np.ndarray:
    """``[neurons, 32]`` int32: the input neurons (of ``Y[layer]``) of each output neuron."""
    return _layer_inputs(
        neurons, seed, layer, labels(neurons, seed, layer), labels(neurons, seed, layer + 1)
    )


def layer_weights(neurons: int, seed: int, layer: int) -> np.ndarray:
    """``[neurons, 32]`` float32 weights matching ``layer_inputs``."""
    z = _rng(seed, _WEIGHTS, neurons, layer).standard_normal((neurons, K), dtype=np.float32)
    return ((np.float32(WEIGHT_MEAN) + np.float32(WEIGHT_STD) * z) / np.float32(16)).astype(
        np.float32
    )


def layer_stream(neurons: int, layers: int, seed: int) -> Iterator[np.ndarray]:
    """``layer_inputs`` for layers 0.., each label permutation drawn once."""
    coord_in = labels(neurons, seed, 0)
    for layer in range(layers):
        coord_out = labels(neurons, seed, layer + 1)
        yield _layer_inputs(neurons, seed, layer, coord_in, coord_out)
        coord_in = coord_out


@dataclass(frozen=True)
class Network:
    neurons: int
    bias: float
    inputs: list[np.ndarray]  # per layer [neurons, K] int32
    weights: list[np.ndarray]  # per layer [neurons, K] float32


def network(neurons: int, layers: int, seed: int) -> Network:
    """The whole network (the monolithic reference; a partition keeps only its rows)."""
    return Network(
        neurons=neurons,
        bias=BIAS[neurons],
        inputs=list(layer_stream(neurons, layers, seed)),
        weights=[layer_weights(neurons, seed, layer) for layer in range(layers)],
    )


def inputs(neurons: int, batch: int, seed: int) -> np.ndarray:
    """``[batch, neurons]`` float32 binary inputs; sample ``b`` does not depend on ``batch``."""
    lo, hi = INPUT_DENSITY
    density = _rng(seed, _DENSITY, neurons).uniform(lo, hi, batch)
    draws = _rng(seed, _INPUTS, neurons).random((batch, neurons), dtype=np.float32)
    return (draws < density[:, None].astype(np.float32)).astype(np.float32)


def layer_forward(x: np.ndarray, idx: np.ndarray, w: np.ndarray, bias: float) -> np.ndarray:
    """One layer for the output neurons in ``idx``/``w``: ``x`` is ``[neurons, batch]``
    (activations by neuron), the result ``[len(idx), batch]``.

    The single code path for monolithic and partitioned runs: each output is its 32 terms
    summed in order t = 0..31, elementwise, so it is bit-identical however many neurons are
    computed at once. Samples whose inputs are all zero give exactly 0 (the bias is negative),
    so they are skipped.
    """
    out = np.zeros((idx.shape[0], x.shape[1]), np.float32)
    alive = np.flatnonzero(x.any(axis=0))
    if alive.size == 0 or idx.shape[0] == 0:
        return out
    xa = x if alive.size == x.shape[1] else np.ascontiguousarray(x[:, alive])
    acc = xa[idx[:, 0]] * w[:, 0:1]
    for t in range(1, K):
        acc += xa[idx[:, t]] * w[:, t : t + 1]
    acc += np.float32(bias)
    np.maximum(acc, np.float32(0), out=acc)
    np.minimum(acc, CLAMP, out=acc)
    out[:, alive] = acc
    return out


def forward(net: Network, y0: np.ndarray) -> np.ndarray:
    """The monolithic reference: ``[batch, neurons]`` final activations."""
    x = np.ascontiguousarray(y0.T, dtype=np.float32)
    for idx, w in zip(net.inputs, net.weights, strict=True):
        x = layer_forward(x, idx, w, net.bias)
    return np.ascontiguousarray(x.T)


def answer(final: np.ndarray) -> dict[str, Any]:
    """Categories and checksum of a ``[batch, neurons]`` final matrix."""
    categories = np.flatnonzero(final.any(axis=1))
    values = final[final != 0].astype(np.float64)
    return {"categories": [int(b) for b in categories], "checksum": math.fsum(values.tolist())}


def reference(neurons: int, layers: int, batch: int, seed: int) -> dict[str, Any]:
    """The answer computed monolithically."""
    return answer(forward(network(neurons, layers, seed), inputs(neurons, batch, seed)))


# -- partitioners -------------------------------------------------------------------------------


def random_owners(neurons: int, layers: int, seed: int, parts: int) -> np.ndarray:
    """``[layers + 1, neurons]`` uint8: one seeded balanced random owner array for every layer."""
    owners = np.empty(neurons, np.uint8)
    owners[_rng(seed, _RANDOM_OWNERS, neurons, parts).permutation(neurons)] = (
        np.arange(neurons) % parts
    )
    return np.broadcast_to(owners, (layers + 1, neurons)).copy()


_MIX = np.uint64(0x9E3779B97F4A7C15)


def _groups(idx: np.ndarray) -> np.ndarray:
    """Unit of each output neuron: outputs that read the same set of inputs share one.

    An order-independent hash of each row's inputs; a collision could only merge two units
    (a worse partition, never a wrong answer).
    """
    h = idx.astype(np.uint64) + np.uint64(1)
    h = (h * _MIX) ^ (h >> np.uint64(7))
    h = (h * _MIX) ^ (h >> np.uint64(29))
    _, group = np.unique(h.sum(axis=1, dtype=np.uint64), return_inverse=True)
    return group.reshape(-1)


def _needs(idx: np.ndarray, owners_out: np.ndarray, parts: int) -> np.ndarray:
    """``[parts, neurons]`` bool: partition q computes an output that reads input i."""
    needs = np.zeros((parts, idx.shape[0]), bool)
    needs[np.repeat(owners_out, idx.shape[1]), idx.ravel()] = True
    return needs


def layer_cut(idx: np.ndarray, owners_in: np.ndarray, owners_out: np.ndarray, parts: int) -> int:
    """Activation columns one layer moves: each input, once per partition reading it remotely."""
    needs = _needs(idx, owners_out, parts)
    return int((needs & (owners_in[None, :] != np.arange(parts)[:, None])).sum())


def _place(group: np.ndarray, pref: np.ndarray, cap: int) -> np.ndarray:
    """Greedy placement of units (``group`` of each neuron) given ``pref[unit, partition]``.

    Most constrained units first (largest gap between their best and second-best partition),
    each whole on its best partition with room; ties go to the emptiest partition. A unit that
    fits nowhere whole is split over the partitions with room, best first.
    """
    units, parts = pref.shape
    sizes = np.bincount(group, minlength=units)
    members = np.split(np.argsort(group, kind="stable"), np.cumsum(sizes)[:-1])
    ranked = np.sort(pref, axis=1)
    gap = ranked[:, -1] - (ranked[:, -2] if parts > 1 else 0)
    room = np.full(parts, cap, np.int64)
    owners = np.empty(group.size, np.uint8)
    scale = group.size + 1
    for u in np.lexsort((np.arange(units), -gap)).tolist():
        fits = room >= sizes[u]
        if fits.any():
            choice = [int(np.argmax(np.where(fits, pref[u] * scale + room, -1)))]
        else:
            choice = [p for p in np.lexsort((-room, -pref[u])).tolist() if room[p] > 0]
        left = members[u]
        for p in choice:
            take = left[: room[p]]
            owners[take] = p
            room[p] -= take.size
            left = left[take.size :]
            if left.size == 0:
                break
    return owners


def _components(group: np.ndarray, next_idx: np.ndarray, next_group: np.ndarray) -> np.ndarray:
    """Connected components of units linked through the next layer's units that read them
    (by one reader per output: exact when, as here, all readers of a neuron form one unit)."""
    units = int(group.max()) + 1
    reader = np.empty(next_idx.shape[0], np.int64)
    reader[next_idx.ravel()] = np.repeat(next_group, next_idx.shape[1])
    label = np.arange(units)
    for _ in range(64):  # label propagation; a big component just stops being useful
        by_reader = np.full(int(next_group.max()) + 1, units)
        np.minimum.at(by_reader, reader, label[group])
        new = label.copy()
        np.minimum.at(new, group, by_reader[reader])
        if np.array_equal(new, label):
            break
        label = new
    return np.unique(label, return_inverse=True)[1].reshape(-1)


def place_layer(
    idx: np.ndarray,
    owners_in: np.ndarray | None,
    parts: int,
    next_idx: np.ndarray | None = None,
    *,
    group: np.ndarray | None = None,
    next_group: np.ndarray | None = None,
) -> np.ndarray:
    """Owners of one layer's outputs (the "good" step), given the owners of its inputs.

    Two greedy candidates: units (outputs with identical inputs) placed where most of their
    inputs already are, and the same with units merged into the clusters that the next layer
    reads together (those that fit a partition). The one whose activations moved now, plus
    an optimistic estimate for the next layer, is lower wins; the first on a tie. ``group``
    and ``next_group`` are ``_groups`` of ``idx`` and ``next_idx`` when already known.
    """
    n = idx.shape[0]
    cap = math.ceil(n / parts * (1 + BALANCE))
    group = _groups(idx) if group is None else group
    units = int(group.max()) + 1
    pref = np.zeros((units, parts), np.int64)
    if owners_in is not None:
        first = np.zeros(units, np.int64)
        first[group[::-1]] = np.arange(n)[::-1]
        np.add.at(pref, (np.arange(units)[:, None], owners_in[idx[first]]), 1)
    candidates = [_place(group, pref, cap)]
    if next_idx is None:
        return candidates[0]
    next_group = _groups(next_idx) if next_group is None else next_group
    comp = _components(group, next_idx, next_group)
    fits = np.bincount(comp, weights=np.bincount(group, minlength=units))[comp] <= cap
    merged = np.unique(
        np.where(fits, comp, comp.max() + 1 + np.arange(units)), return_inverse=True
    )[1]
    merged_pref = np.zeros((int(merged.max()) + 1, parts), np.int64)
    np.add.at(merged_pref, merged, pref)
    candidates.append(_place(merged.reshape(-1)[group], merged_pref, cap))

    next_first = np.zeros(int(next_group.max()) + 1, np.int64)
    next_first[next_group[::-1]] = np.arange(n)[::-1]

    def cost(owners: np.ndarray) -> int:
        now = 0 if owners_in is None else layer_cut(idx, owners_in, owners, parts)
        held = owners[next_idx[next_first]]  # [next units, K]: who holds their inputs
        counts = np.zeros((next_first.size, parts), np.int64)
        np.add.at(counts, (np.arange(next_first.size)[:, None], held), 1)
        return now + int((next_idx.shape[1] - counts.max(axis=1)).sum())

    return min(candidates, key=cost)


def follow_consumers(idx: np.ndarray, owners_out: np.ndarray, parts: int) -> np.ndarray:
    """Owners of a layer's inputs: the partition that reads each input most (ties: lowest)."""
    neurons = idx.shape[0]
    count = np.zeros((neurons, parts), np.int64)
    np.add.at(count, (idx.ravel(), np.repeat(owners_out.astype(np.int64), idx.shape[1])), 1)
    owners: np.ndarray = count.argmax(axis=1)
    return owners.astype(np.uint8)


def good_owners(neurons: int, layers: int, seed: int, parts: int) -> np.ndarray:
    """``[layers + 1, neurons]`` uint8 owners from the "good" partitioner."""
    owners = np.empty((layers + 1, neurons), np.uint8)
    stream = layer_stream(neurons, layers, seed)
    idx = next(stream)
    group = _groups(idx)
    for layer in range(layers):
        following = next(stream) if layer + 1 < layers else None  # one layer of look-ahead
        following_group = None if following is None else _groups(following)
        owners[layer + 1] = place_layer(
            idx,
            None if layer == 0 else owners[layer],
            parts,
            following,
            group=group,
            next_group=following_group,
        )
        if layer == 0:
            owners[0] = follow_consumers(idx, owners[1], parts)
        idx, group = following, following_group  # type: ignore[assignment]
    return owners


def owners_for(neurons: int, layers: int, seed: int, parts: int, partitioner: str) -> np.ndarray:
    if parts == 1:
        return np.zeros((layers + 1, neurons), np.uint8)
    if partitioner == "random":
        return random_owners(neurons, layers, seed, parts)
    if partitioner == "good":
        return good_owners(neurons, layers, seed, parts)
    raise ValueError(f"unknown partitioner {partitioner!r}")


# -- one partition ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """What partition ``index`` of ``count`` holds: its rows of every layer and send lists."""

    index: int
    count: int
    neurons: int
    bias: float
    rows: list[np.ndarray]  # per layer 0..L: global ids of the Y[l] columns it owns (sorted)
    inputs: list[np.ndarray]  # per layer: [len(rows[l+1]), K] int32 input ids (global)
    weights: list[np.ndarray]  # per layer: [len(rows[l+1]), K] float32
    # per layer: {peer: (positions in rows[l], global ids)} of the Y[l] columns the peer reads
    sends: list[dict[int, tuple[np.ndarray, np.ndarray]]]

    @property
    def layers(self) -> int:
        return len(self.inputs)

    @property
    def nbytes(self) -> int:
        arrays = [*self.rows, *self.inputs, *self.weights]
        arrays += [a for s in self.sends for pair in s.values() for a in pair]
        return sum(a.nbytes for a in arrays)

    @property
    def model_bytes(self) -> int:
        """Bytes of its rows of the network (weights and indices)."""
        return sum(a.nbytes for a in (*self.inputs, *self.weights))


def build_part(
    neurons: int, layers: int, seed: int, owners: np.ndarray, index: int, count: int
) -> Part:
    """Partition ``index``'s rows and send lists, generating the network one layer at a time
    (only one whole layer is ever in memory)."""
    mine = [np.flatnonzero(o == index).astype(np.int32) for o in owners]
    inputs_, weights_, sends = [], [], []
    for layer, idx in enumerate(layer_stream(neurons, layers, seed)):
        out = mine[layer + 1]
        inputs_.append(np.ascontiguousarray(idx[out]))
        weights_.append(np.ascontiguousarray(layer_weights(neurons, seed, layer)[out]))
        peers: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if count > 1:
            needs = _needs(idx, owners[layer + 1], count)
            local = owners[layer] == index
            for q in range(count):
                if q != index:
                    ids = np.flatnonzero(needs[q] & local)
                    if ids.size:
                        pos = np.searchsorted(mine[layer], ids).astype(np.int32)
                        peers[q] = (pos, ids.astype(np.uint16))
        sends.append(peers)
    return Part(index, count, neurons, BIAS[neurons], mine, inputs_, weights_, sends)


Payload = tuple[np.ndarray, np.ndarray, np.ndarray]  # COO: neuron ids, sample ids, values


def _coo(ids: np.ndarray, act: np.ndarray) -> Payload | None:
    r, s = np.nonzero(act)
    if r.size == 0:
        return None
    return ids[r].astype(np.uint16), s.astype(np.uint16), act[r, s]


def local_inputs(part: Part, y0: np.ndarray) -> np.ndarray:
    """This partition's columns of the input batch, ``[len(rows[0]), batch]``."""
    return np.ascontiguousarray(y0[:, part.rows[0]].T)


def outgoing(part: Part, layer: int, act: np.ndarray) -> dict[int, Payload | None]:
    """What this partition sends each peer before computing ``layer``: the non-zeros of its
    ``Y[layer]`` columns (``act``, ``[len(rows[layer]), batch]``) that the peer reads; None
    ("nothing for you") where there are none."""
    sends = part.sends[layer]
    out: dict[int, Payload | None] = {}
    for q in range(part.count):
        if q != part.index:
            pair = sends.get(q)
            out[q] = None if pair is None else _coo(pair[1], act[pair[0]])
    return out


def check_payload(value: Any, neurons: int, batch: int) -> Payload:
    """A received COO payload, checked: three equal-length arrays with ids in range."""
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise ValueError("a radixnet payload is [neuron ids, sample ids, values]")
    ids, samples, vals = (np.asarray(a) for a in value)
    if not (ids.ndim == samples.ndim == vals.ndim == 1 and ids.size == samples.size == vals.size):
        raise ValueError("radixnet payload arrays must be 1-D and of equal length")
    if ids.dtype.kind not in "iu" or samples.dtype.kind not in "iu" or vals.dtype.kind != "f":
        raise ValueError("radixnet payload: integer ids and float values expected")
    if ids.size and not (
        0 <= int(ids.min())
        and int(ids.max()) < neurons
        and 0 <= int(samples.min())
        and int(samples.max()) < batch
    ):
        raise ValueError("radixnet payload ids out of range")
    return ids, samples, vals.astype(np.float32, copy=False)


def advance(part: Part, layer: int, act: np.ndarray, received: Mapping[int, Any]) -> np.ndarray:
    """Compute this partition's columns of ``Y[layer + 1]`` from its ``Y[layer]`` columns and
    what its peers sent for ``layer``."""
    batch = act.shape[1]
    x = np.zeros((part.neurons, batch), np.float32)
    x[part.rows[layer]] = act
    for value in received.values():
        ids, samples, vals = check_payload(value, part.neurons, batch)
        x[ids, samples] = vals
    return layer_forward(x, part.inputs[layer], part.weights[layer], part.bias)


def final_payload(part: Part, act: np.ndarray) -> Payload | None:
    """This partition's non-zero final activations, for the coordinator."""
    return _coo(part.rows[-1].astype(np.uint16), act)


def assemble(neurons: int, batch: int, payloads: list[Any]) -> np.ndarray:
    """The ``[batch, neurons]`` final matrix from every partition's ``final_payload``."""
    final = np.zeros((batch, neurons), np.float32)
    for value in payloads:
        if value is not None:
            ids, samples, vals = check_payload(value, neurons, batch)
            final[samples, ids] = vals
    return final


def payload_bytes(value: Payload | None) -> int:
    """Bytes of a payload's arrays (0 for "nothing"): what the wire carries, less framing."""
    return 0 if value is None else sum(a.nbytes for a in value)


# -- the partitioned function -------------------------------------------------------------------


@partitioned(
    name="radixnet",
    max_partitions=MAX_PARTITIONS,
    worker_memory_mb=WORKER_MEMORY_MB,
    timeout=120.0,
)
class RadixNet:
    """A Graph Challenge-style sparse DNN, its neurons split across ``partitions`` workers."""

    def setup(self) -> None:
        # Built partitions, most recently used last; bounded in bytes, not only in count.
        self._parts: OrderedDict[tuple[Any, ...], Part] = OrderedDict()
        self._lock = threading.Lock()

    def part(self, req: Request, index: int, count: int) -> Part:
        """This worker's partition, built on first use (blocking: call from a thread)."""
        if not hasattr(self, "_parts"):  # setup() not called: tests, or an older runtime
            self.setup()
        partitioner = req.partitioner if count > 1 else "good"
        key = (req.neurons, req.layers, req.seed, count, partitioner, index)
        with self._lock:
            if key in self._parts:
                self._parts.move_to_end(key)
                return self._parts[key]
        owners = owners_for(req.neurons, req.layers, req.seed, count, partitioner)
        part = build_part(req.neurons, req.layers, req.seed, owners, index, count)
        with self._lock:
            self._parts[key] = part
            total = sum(p.nbytes for p in self._parts.values())
            while len(self._parts) > 1 and (
                len(self._parts) > CACHE_ENTRIES or total > CACHE_BYTES
            ):
                _, dropped = self._parts.popitem(last=False)
                total -= dropped.nbytes
        return part

    def plan(self, request: Any) -> Plan:
        req = parse_request(request)
        return Plan(partitions=req.partitions, model_bytes=model_bytes(req.neurons, req.layers))

    async def shard(self, request: Any, shard: Shard) -> dict[str, Any]:
        req = parse_request(request)
        started = time.perf_counter()
        part = await anyio.to_thread.run_sync(self.part, req, shard.index, shard.count)
        built = time.perf_counter()

        def first() -> np.ndarray:
            return local_inputs(part, inputs(req.neurons, req.batch, req.seed))

        act = await anyio.to_thread.run_sync(first)
        values_sent = 0
        for layer in range(req.layers):
            received: dict[int, Any] = {}
            if shard.count > 1:
                sending = await anyio.to_thread.run_sync(outgoing, part, layer, act)
                values_sent += sum(v[2].size for v in sending.values() if v is not None)
                received = await shard.exchange(layer, sending)
            act = await anyio.to_thread.run_sync(advance, part, layer, act, received)
        final = await anyio.to_thread.run_sync(final_payload, part, act)
        done = time.perf_counter()
        return {
            "final": final,
            "stats": {
                "sent_bytes": shard.sent_bytes,  # encoded, as the runtime counts them
                "sent_messages": shard.sent_messages,
                "sent_objects": getattr(shard, "sent_objects", 0),
                "values_sent": values_sent,  # non-zero activations, 8 bytes each in COO
                "max_neurons_owned": max(int(r.size) for r in part.rows[1:]),
                "model_bytes": part.model_bytes,
                "build_s": round(built - started, 4),
                "run_s": round(done - built, 4),
            },
        }

    def combine(self, request: Any, parts: list[Any]) -> dict[str, Any]:
        req = parse_request(request)
        final = assemble(req.neurons, req.batch, [p["final"] for p in parts])
        result = answer(final)
        if req.stats:
            shards = [p["stats"] for p in parts]
            result["stats"] = {
                "partitions": len(parts),
                "partitioner": req.partitioner if len(parts) > 1 else None,
                "bytes_moved": sum(s["sent_bytes"] for s in shards),
                "messages": sum(s["sent_messages"] for s in shards),
                "objects": sum(s["sent_objects"] for s in shards),
                "values_moved": sum(s["values_sent"] for s in shards),
                "model_bytes": model_bytes(req.neurons, req.layers),
                "shards": shards,
            }
        return result
