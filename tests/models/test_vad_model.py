"""functions/vad.py against silero-vad itself: same probabilities, same speech segments.

Needs silero-vad (with torch) and onnxruntime; skipped where they are not installed. The speech
is a committed espeak-ng recording (data/speech.wav, made by data/make_speech.py); where
espeak-ng is installed, a freshly synthesized longer clip joins the batch. The function served
whole, in process (runtime.testing.TestApp): the last test here.
"""

import asyncio
import base64
import io
import os
import struct
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
silero_vad = pytest.importorskip("silero_vad")

from functions import vad as V  # noqa: E402
from runtime import InvalidPayload  # noqa: E402
from runtime.define.decorator import definition_of  # noqa: E402
from runtime.testing import TestApp  # noqa: E402
from runtime.wire import codec  # noqa: E402
from tests.models.data import make_speech  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "data" / "speech.wav"
SR = V.SAMPLE_RATE
WINDOW_S = V.WINDOW / SR  # 32 ms


# -- helpers ----------------------------------------------------------------------------------


def fixture_audio() -> np.ndarray:
    with wave.open(str(FIXTURE), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768


def pcm16(audio: np.ndarray) -> bytes:
    return np.round(np.clip(audio, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()


def wav(frames: bytes, *, rate: int = SR, channels: int = 1, width: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)
    return buf.getvalue()


def wire(value):
    """What an item or result looks like after crossing the wire (read-only numpy arrays)."""
    return codec.decode(codec.encode(value, "msgpack"), "application/msgpack")[0]


class Batcher:
    """Stands in for the runtime's executor proxy: holds items until ``size`` handlers are
    waiting, then runs them through the executor as one batch, over the wire format."""

    def __init__(self, model: V.SileroVAD, size: int):
        self.model, self.size = model, size
        self.waiting: list[tuple[object, asyncio.Future]] = []
        self.batches: list[int] = []

    async def __call__(self, item):
        fut = asyncio.get_running_loop().create_future()
        self.waiting.append((wire(item), fut))
        if len(self.waiting) == self.size:
            batch, self.waiting = self.waiting, []
            self.batches.append(len(batch))
            results = self.model([i for i, _ in batch])
            for (_, f), r in zip(batch, results, strict=True):
                f.set_result(wire(r))
        return await fut


async def never_called(item):
    raise AssertionError("the executor must not be called for invalid input")


def run_handlers(model, events):
    async def main():
        batcher = Batcher(model, len(events))
        answers = await asyncio.gather(*(V.vad(e, batcher) for e in events))
        return answers, batcher.batches

    return asyncio.run(main())


def reference_probs(ref, audio: np.ndarray) -> np.ndarray:
    """silero-vad's OnnxWrapper over the same zero-padded windows, one at a time."""
    ref.reset_states()
    with torch.no_grad():
        return np.array(
            [ref(torch.from_numpy(w.copy()), SR).item() for w in V.to_windows(audio)],
            dtype=np.float32,
        )


def reference_segments(ref, audio: np.ndarray, threshold: float = 0.5) -> list[list[float]]:
    stamps = silero_vad.get_speech_timestamps(
        torch.from_numpy(audio), ref, threshold=threshold, return_seconds=True, time_resolution=3
    )
    return [[s["start"], s["end"]] for s in stamps]


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> V.SileroVAD:
    m = V.SileroVAD()
    m.device = "cpu"
    m.setup()
    return m


@pytest.fixture(scope="module")
def ref():
    return silero_vad.load_silero_vad(onnx=True)


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    """Speech clips of different lengths, each with at least two segments."""
    speech = fixture_audio()
    out = {
        "fixture": speech,
        # Ends mid-utterance, at a length that is not a whole number of windows.
        "cut": speech[: int(2.3 * SR) + 77],
        # Two copies with a long pause, louder: four segments.
        "joined": np.concatenate([speech, np.zeros(SR, np.float32), speech]) * 1.5,
    }
    if make_speech.have_espeak():
        out["espeak"] = make_speech.make_clip(
            ("Shoal answers events.", "Models run in batches.", "Good night."), gap=0.8
        )
    return out


# -- the fixture ------------------------------------------------------------------------------


def test_fixture_is_a_small_16k_pcm16_wav_with_two_utterances(ref):
    assert FIXTURE.stat().st_size < 100_000
    with wave.open(str(FIXTURE), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SR, 1, 2)
    assert len(reference_segments(ref, fixture_audio())) >= 2


# -- parity with silero-vad -------------------------------------------------------------------


def test_batched_probabilities_match_silero_onnx_wrapper(model, ref, clips):
    items = [wire(V.to_windows(a)) for a in clips.values()]
    assert len({len(i) for i in items}) == len(items), "clips should differ in length"
    probs = model(items)
    assert len(probs) == len(items)
    for (name, audio), p in zip(clips.items(), probs, strict=True):
        assert p.dtype == np.float32 and p.shape == (len(V.to_windows(audio)),), name
        expected = reference_probs(ref, audio)
        assert np.abs(p - expected).max() <= 1e-4, name
        assert p.max() > 0.9 and p.min() < 0.1, f"{name}: expected speech and silence"


def test_a_clip_gets_the_same_probabilities_alone_or_batched(model, clips):
    items = [V.to_windows(a) for a in clips.values()]
    together = model(items)
    for item, p in zip(items, together, strict=True):
        np.testing.assert_allclose(model([item])[0], p, atol=1e-6)


def test_handler_segments_match_get_speech_timestamps(model, ref, clips):
    events = [{"audio": pcm16(a)} for a in clips.values()]
    answers, batches = run_handlers(model, events)
    assert batches == [len(events)]  # all clips went through the executor as one batch
    for (name, audio), answer in zip(clips.items(), answers, strict=True):
        decoded = V.decode_audio({"audio": pcm16(audio)})  # what the handler analysed
        expected = reference_segments(ref, decoded)
        assert len(expected) >= 2, name
        assert answer["duration"] == pytest.approx(len(audio) / SR, abs=1e-3)
        got = answer["speech"]
        assert len(got) == len(expected), f"{name}: {got} != {expected}"
        for g, e in zip(got, expected, strict=True):
            assert abs(g[0] - e[0]) <= WINDOW_S and abs(g[1] - e[1]) <= WINDOW_S, (name, g, e)
        starts_ends = [t for seg in got for t in seg]
        assert starts_ends == sorted(starts_ends) and 0 <= got[0][0] and got[-1][1] <= len(audio)


@pytest.mark.parametrize("threshold", [0.3, 0.8])
def test_threshold_is_passed_on(model, ref, clips, threshold):
    audio = clips["fixture"]
    [answer], _ = run_handlers(model, [{"audio": pcm16(audio), "threshold": threshold}])
    expected = reference_segments(ref, V.decode_audio({"audio": pcm16(audio)}), threshold)
    assert len(answer["speech"]) == len(expected)
    for g, e in zip(answer["speech"], expected, strict=True):
        assert abs(g[0] - e[0]) <= WINDOW_S and abs(g[1] - e[1]) <= WINDOW_S


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.005, 0.2, 0.5, 0.9])
def test_segment_logic_equals_silero_on_any_probabilities(seed, threshold):
    """The port, sample for sample, on probability runs that exercise every branch: short
    blips, short and long pauses, speech at both ends, values between the two thresholds."""
    rng = np.random.default_rng(seed)
    runs = rng.integers(1, 40, size=40)
    levels = rng.choice([0.0, 0.004, 0.3, 0.45, 0.55, 0.95], size=len(runs))
    probs = np.repeat(levels, runs) + rng.normal(0, 0.02, size=runs.sum())
    probs = np.clip(probs, 0, 1).astype(np.float32)
    n_samples = len(probs) * V.WINDOW - int(rng.integers(0, V.WINDOW))
    expected = silero_vad.get_speech_timestamps_from_probs(
        probs.tolist(), threshold=threshold, audio_length_samples=n_samples
    )
    got = V.speech_segments(probs, n_samples, threshold)
    assert got == [[s["start"], s["end"]] for s in expected]


# -- decoding and validation ------------------------------------------------------------------


def test_every_accepted_encoding_decodes_to_the_same_samples():
    audio = fixture_audio()[: SR // 2]
    ints = np.frombuffer(pcm16(audio), "<i2")
    expected = V.decode_audio({"audio": pcm16(audio)})
    stereo = np.repeat(ints, 2).tobytes()  # both channels equal: their mean is the signal
    i24 = (ints.astype("<i4") << 8).view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    i32 = (ints.astype("<i4") << 16).tobytes()
    u8 = (np.round(audio * 127) + 128).astype(np.uint8).tobytes()
    same = [
        {"audio": wav(pcm16(audio))},
        {"audio": bytearray(pcm16(audio))},
        {"audio_b64": base64.b64encode(pcm16(audio)).decode()},
        {"audio_b64": base64.b64encode(wav(pcm16(audio))).decode()},
        {"audio": wav(stereo, channels=2)},
        {"audio": wav(i24, width=3)},
        {"audio": wav(i32, width=4)},
        {"audio": ints.copy()},
        {"audio": wire(ints)},
        {"audio": expected.copy()},
    ]
    for event in same:
        got = V.decode_audio(event)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=1e-6)
    # 8-bit keeps only 8 bits.
    np.testing.assert_allclose(V.decode_audio({"audio": wav(u8, width=1)}), audio, atol=1 / 128)


def test_windows_are_zero_padded_512_sample_frames():
    audio = np.arange(1, 1100, dtype=np.float32)
    w = V.to_windows(audio)
    assert w.shape == (3, 512) and w.dtype == np.float32
    assert w.reshape(-1)[:1099].tolist() == audio.tolist() and not w.reshape(-1)[1099:].any()


def float_wav(samples: np.ndarray) -> bytes:
    """An IEEE-float WAV file (format 3), which the handler does not take."""
    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, SR, SR * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


SILENCE = np.zeros(SR, dtype="<i2").tobytes()

BAD_EVENTS = {
    "not a dict": [b"\x00\x01"],
    "no audio": {"wav": SILENCE},
    "audio as text": {"audio": "UklGRiQAAABXQVZF"},
    "audio as number": {"audio": 3},
    "audio as list": {"audio": [0, 1, 2]},
    "both keys": {"audio": SILENCE, "audio_b64": ""},
    "bad base64": {"audio_b64": "not base64!"},
    "base64 not a string": {"audio_b64": SILENCE},
    "empty bytes": {"audio": b""},
    "empty base64": {"audio_b64": ""},
    "empty wav": {"audio": wav(b"")},
    "odd length pcm": {"audio": SILENCE + b"\x00"},
    "mp3": {"audio": b"ID3\x04\x00\x00\x00\x00\x00\x00" + SILENCE},
    "ogg": {"audio": b"OggS\x00\x02" + SILENCE},
    "flac": {"audio": b"fLaC\x00\x00\x00\x22" + SILENCE},
    "m4a": {"audio": b"\x00\x00\x00\x20ftypM4A " + SILENCE},
    "riff but not wave": {"audio": b"RIFF\x24\x00\x00\x00AVI LIST" + SILENCE},
    "corrupt wav": {"audio": b"RIFF\x24\x00\x00\x00WAVEjunk" + SILENCE[:64]},
    "float wav": {"audio": float_wav(np.zeros(SR))},
    "wav at 44.1 kHz": {"audio": wav(SILENCE, rate=44100)},
    "wav at 8 kHz": {"audio": wav(SILENCE, rate=8000)},
    "wav at 48 kHz": {"audio": wav(SILENCE, rate=48000)},
    "2-d array": {"audio": np.zeros((2, 100), np.int16)},
    "int32 array": {"audio": np.zeros(100, np.int32)},
    "float array out of range": {"audio": np.full(100, 2.0, np.float32)},
    "float array with nan": {"audio": np.full(100, np.nan, np.float32)},
    "empty array": {"audio": np.zeros(0, np.int16)},
    "too long": {"audio": np.zeros(V.MAX_SECONDS * SR + 1, np.int16)},
    "threshold as text": {"audio": SILENCE, "threshold": "0.5"},
    "threshold zero": {"audio": SILENCE, "threshold": 0},
    "threshold above one": {"audio": SILENCE, "threshold": 1.5},
    "threshold bool": {"audio": SILENCE, "threshold": True},
}


@pytest.mark.parametrize("event", BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_bad_input_is_invalid_payload_before_the_executor(event):
    with pytest.raises(InvalidPayload) as err:
        asyncio.run(V.vad(event, never_called))
    assert len(err.value.message) > 15


def test_wrong_sample_rate_message_says_what_to_do():
    with pytest.raises(InvalidPayload, match=r"44100 Hz.*16000 Hz"):
        V.decode_audio({"audio": wav(SILENCE, rate=44100)})


def test_executor_rejects_items_that_are_not_windows(model):
    for item in (np.zeros(512, np.float32), np.zeros((3, 256), np.float32)):
        with pytest.raises(ValueError, match="n_windows"):
            model([item])


def test_silence_and_noise_have_no_speech(model):
    rng = np.random.default_rng(1)
    events = [
        {"audio": SILENCE},
        {"audio": pcm16(rng.normal(0, 0.01, SR * 2).astype(np.float32))},
        {"audio": np.zeros(100, np.int16)},  # shorter than one window
    ]
    answers, _ = run_handlers(model, events)
    assert answers == [
        {"speech": [], "duration": 1.0},
        {"speech": [], "duration": 2.0},
        {"speech": [], "duration": 0.006},
    ]


def test_declared_as_a_function_using_the_silero_executor():
    d = definition_of(V.vad)
    assert d is not None and d.spec.uses == ("silero-vad",)
    e = definition_of(V.SileroVAD)
    assert e is not None and e.spec.kind == "executor" and e.spec.engine == "onnxruntime"


def test_handler_side_does_not_import_torch_or_onnxruntime():
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from functions import vad\n"
        f"data = open({str(FIXTURE)!r}, 'rb').read()\n"
        "audio = vad.decode_audio({'audio': data})\n"
        "windows = vad.to_windows(audio)\n"
        "vad.speech_segments(np.zeros(len(windows), np.float32), len(audio))\n"
        "print(sorted(m for m in sys.modules\n"
        "    if m.split('.')[0] in ('torch', 'onnxruntime', 'silero_vad')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.anyio
async def test_in_process_with_its_executor():
    async with TestApp(V.vad, encoding="msgpack") as app:
        got = await app.call({"audio": FIXTURE.read_bytes()})
        with pytest.raises(InvalidPayload, match="either"):
            await app.call({"audio": b"", "audio_b64": ""})
    assert got["duration"] > 0 and got["speech"]  # the recording holds speech
    assert all(0 <= start < end <= got["duration"] for start, end in got["speech"])
