"""runtime.models: an onnxruntime graph optimized once and loaded optimized from then on, a
torch module built once and memory-mapped from then on; a damaged entry is prepared again, a
changed model or engine never loads a stale one, and the cache can be switched off."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from runtime.models import ModelCache, file_digest, onnx_session, torch_module

if TYPE_CHECKING:
    from pathlib import Path


def tiny_onnx(path: Path, seed: int = 0) -> Path:
    """x float [n, 16] -> relu(x @ W + B): a MatMul and Add that optimization fuses."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "B"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Add", ["h", "B"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


X = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)


def run(session: Any) -> np.ndarray:
    (y,) = session.run(["y"], {"x": X})
    return np.asarray(y)


@pytest.fixture
def ort() -> Any:
    return pytest.importorskip("onnxruntime")


def entries(cache: ModelCache, suffix: str) -> list[Path]:
    return sorted(cache.folder.glob(f"*{suffix}"))


def test_the_optimized_graph_is_saved_once_then_loaded(ort, tmp_path) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    cache = ModelCache(tmp_path / "cache")
    plain = run(onnx_session(model))
    first = onnx_session(model, cache=cache)
    assert first._model_path == str(model)  # optimized from the model, and saved
    (entry,) = entries(cache, ".optimized")
    assert not list(cache.folder.glob(".*"))  # nothing half-written left
    second = onnx_session(model, cache=cache)
    assert second._model_path == str(entry / "model.onnx")  # the optimized graph, as it is
    assert sorted(p.name for p in entry.iterdir()) == ["model.onnx", "model.onnx.data"]
    assert entries(cache, ".optimized") == [entry]
    np.testing.assert_allclose(run(first), plain, rtol=1e-6)
    np.testing.assert_allclose(run(second), plain, rtol=1e-6)


def test_the_saved_weights_are_pre_packed(ort, tmp_path) -> None:
    """The entry's graph names pre-packed copies of its matrix weights in the weights file, so
    a session loading it does not pack them again."""
    onnx = pytest.importorskip("onnx")
    model = tiny_onnx(tmp_path / "tiny.onnx")
    cache = ModelCache(tmp_path / "cache")
    onnx_session(model, cache=cache)
    (entry,) = entries(cache, ".optimized")
    graph = onnx.load(str(entry / "model.onnx"), load_external_data=False)
    keys = {e.key for t in graph.graph.initializer for e in t.external_data}
    assert any(k.startswith("prepacked") for k in keys), keys


def test_another_cpu_never_loads_an_entry(ort, tmp_path, monkeypatch) -> None:
    """Pre-packed layouts follow the instruction sets: the CPU's features are in the key."""
    from runtime import models

    model = tiny_onnx(tmp_path / "tiny.onnx")
    cache = ModelCache(tmp_path / "cache")
    onnx_session(model, cache=cache)
    (mine,) = entries(cache, ".optimized")
    monkeypatch.setattr(models, "cpu_features", lambda: "another cpu")
    assert onnx_session(model, cache=cache)._model_path == str(model)  # prepared anew
    assert mine not in entries(cache, ".optimized")


@pytest.mark.parametrize("damage", ["garbage", "cut short", "empty", "weights missing"])
def test_a_damaged_entry_is_optimized_again(ort, tmp_path, damage) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    cache = ModelCache(tmp_path / "cache")
    onnx_session(model, cache=cache)
    (entry,) = entries(cache, ".optimized")
    graph, weights = entry / "model.onnx", entry / "model.onnx.data"
    if damage == "weights missing":
        weights.unlink()
    else:
        good = weights.read_bytes()
        cut = {"garbage": b"x" * 10, "cut short": good[: len(good) // 2], "empty": b""}
        (graph if damage == "garbage" else weights).write_bytes(cut[damage])
    again = onnx_session(model, cache=cache)  # no error: prepared again
    assert again._model_path == str(model)
    np.testing.assert_allclose(run(again), run(onnx_session(model)), rtol=1e-6)
    assert onnx_session(model, cache=cache)._model_path == str(graph)


def test_a_changed_model_or_engine_never_loads_a_stale_entry(ort, tmp_path, monkeypatch) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx", seed=0)
    cache = ModelCache(tmp_path / "cache")
    onnx_session(model, cache=cache)
    (old,) = entries(cache, ".optimized")
    tiny_onnx(model, seed=1)  # new weights, same file name and size
    changed = onnx_session(model, cache=cache)
    assert changed._model_path == str(model)
    np.testing.assert_allclose(run(changed), run(onnx_session(model)), rtol=1e-6)
    (new,) = entries(cache, ".optimized")  # the stale entry is gone, not only passed over
    assert new != old
    monkeypatch.setattr(ort, "__version__", "0.0.1")  # another onnxruntime
    assert onnx_session(model, cache=cache)._model_path == str(model)
    assert new not in entries(cache, ".optimized")
    assert model.exists()  # an entry's pruning leaves what is not an entry


def test_providers_and_optimization_level_are_part_of_the_key(ort, tmp_path) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    cache = ModelCache(tmp_path / "cache")
    onnx_session(model, cache=cache)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert onnx_session(model, cache=cache, options=options)._model_path == str(model)
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC


def test_a_disabled_cache_writes_and_reads_nothing(ort, tmp_path) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    cache = ModelCache(tmp_path / "cache", enabled=False)
    assert onnx_session(model, cache=cache)._model_path == str(model)
    assert not cache.folder.exists()


def test_the_cache_settings() -> None:
    env = {"SHOAL_MODEL_CACHE": "~/models", "SHOAL_MODEL_CACHE_ENABLED": "0"}
    cache = ModelCache.from_env(env)
    assert not cache.enabled and cache.folder.is_absolute() and cache.folder.name == "models"
    default = ModelCache.from_env({})
    assert default.enabled and default.folder.parts[-3:] == (".cache", "shoal", "models")


def test_a_file_digest_is_remembered_until_the_file_changes(tmp_path, monkeypatch) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(b"a" * 1000)
    memo = tmp_path / "digests"
    reads: list[str] = []
    real = hashlib.file_digest

    def counting(fileobj: Any, digest: str) -> Any:
        reads.append(digest)
        return real(fileobj, digest)

    monkeypatch.setattr(hashlib, "file_digest", counting)
    assert file_digest(f, memo) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert file_digest(f, memo) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert len(reads) == 1  # the second time from the note
    f.write_bytes(b"b" * 1000)  # same size; its change time moves
    assert file_digest(f, memo) == hashlib.sha256(b"b" * 1000).hexdigest()
    assert len(reads) == 2


def test_a_torch_module_is_built_once_then_memory_mapped(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    source = tmp_path / "weights.bin"
    source.write_bytes(b"the weights")
    cache = ModelCache(tmp_path / "cache")
    built: list[int] = []

    def build() -> Any:
        built.append(1)
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()

    x = torch.ones(2, 8)
    first = torch_module("tiny", [source], build, cache=cache)
    (entry,) = entries(cache, ".pt")
    second = torch_module("tiny", [source], build, cache=cache)
    assert len(built) == 1
    assert torch.equal(first(x), second(x))

    entry.write_bytes(b"damaged")
    third = torch_module("tiny", [source], build, cache=cache)
    assert len(built) == 2 and torch.equal(third(x), first(x))

    source.write_bytes(b"other weights")  # a new model: built again, the old entry pruned
    torch_module("tiny", [source], build, cache=cache)
    assert len(built) == 3 and entry not in entries(cache, ".pt")
    torch_module("tiny", [source], build, cache=ModelCache(cache.folder, enabled=False))
    assert len(built) == 4
