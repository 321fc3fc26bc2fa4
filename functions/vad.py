"""vad: voice activity detection with Silero VAD — where in a recording someone speaks.

Request (msgpack or JSON)::

    {"audio": <bytes>, "threshold": 0.5}

``audio`` is either a WAV file's bytes (integer PCM, 8/16/24/32-bit, 16 kHz, any number of
channels: they are averaged) or raw 16 kHz mono PCM16 little-endian samples. msgpack carries
bytes natively; JSON clients send the same bytes base64-encoded as ``"audio_b64"`` instead.
Python clients may also send a 1-D numpy array (int16 PCM, or float32 in [-1, 1]) at 16 kHz.
``threshold`` (optional, 0 < threshold < 1, default 0.5) is the speech probability at or
above which a 32 ms window counts as speech. Audio is limited to ``MAX_SECONDS`` (10 minutes).

Answer::

    {"speech": [[start_seconds, end_seconds], ...], "duration": seconds}

Segments are in order and do not overlap; times are seconds rounded to the millisecond. They
are computed exactly as silero-vad's ``get_speech_timestamps`` with its default parameters:
the model scores 512-sample windows (32 ms at 16 kHz, the last one zero-padded); speech
starts at a window scoring >= threshold and ends after >= 100 ms below ``threshold - 0.15``;
segments of 250 ms or less are dropped; each segment is padded by 30 ms on both sides (by half
the gap where two segments are closer than 60 ms). ``duration`` is the audio's length.

Bad audio (not WAV nor PCM16, compressed formats, another sample rate, empty, too long) is
answered with an ``InvalidPayload`` error that says what to send instead.

How it runs: the handler below is light (numpy and the standard library only). It decodes and
validates the audio, cuts it into windows, and awaits the ``silero-vad`` executor with one item
per clip: ``float32 [n_windows, 512]``. The executor runs the Silero ONNX model with
onnxruntime (CUDA when the worker has a GPU, else CPU) and batches clips from many requests:
the model is recurrent over a clip's windows, so a batch of clips advances window by window in
lock-step, with one batch row per clip. It answers ``float32 [n_windows]`` speech
probabilities, and the handler turns them into segments.
"""

import base64
import binascii
import io
import wave
from typing import Any

import numpy as np

from runtime import Executor, InvalidPayload, executor, function, uses
from runtime.models import onnx_session

SAMPLE_RATE = 16000
WINDOW = 512  # samples per model window at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window the model sees in front of each window
MAX_SECONDS = 600

# get_speech_timestamps' defaults, in samples at 16 kHz.
MIN_SPEECH = SAMPLE_RATE * 250 // 1000  # segments this long or shorter are dropped
MIN_SILENCE = SAMPLE_RATE * 100 // 1000  # silence that ends a segment
SPEECH_PAD = SAMPLE_RATE * 30 // 1000  # padding added on each side of a segment

# Compressed or non-PCM containers people send by mistake, by their first bytes.
_NOT_PCM = {
    b"ID3": "an MP3 file",
    b"OggS": "an Ogg file",
    b"fLaC": "a FLAC file",
    b"FORM": "an AIFF file",
    b"caff": "a CAF file",
    b"\x1aE\xdf\xa3": "a WebM/Matroska file",
}


@executor(name="silero-vad", engine="onnxruntime", max_batch=16, max_wait_ms=5)
class SileroVAD:
    """Silero VAD on onnxruntime. Item: one clip's windows, ``float32 [n_windows, 512]``;
    result: the speech probability of each window, ``float32 [n_windows]``."""

    def setup(self) -> None:
        import importlib.util
        from pathlib import Path

        import onnxruntime as ort

        spec = importlib.util.find_spec("silero_vad")  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("the silero-vad package is not installed: pip install silero-vad")
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"

        opts = ort.SessionOptions()
        # As silero-vad's own OnnxWrapper: the model is tiny and sequential, so more threads
        # only add synchronisation; throughput comes from batching clips instead.
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if (
            getattr(self, "device", "cpu") == "cuda"
            and "CUDAExecutionProvider" in ort.get_available_providers()
        ):
            providers.insert(0, "CUDAExecutionProvider")
        # Optimized once and kept in the executor's model cache (runtime.models).
        cache = getattr(self, "model_cache", None)
        self.session = onnx_session(path, providers=providers, options=opts, cache=cache)
        self.provider = self.session.get_providers()[0]
        self.sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def __call__(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        clips = []
        for item in batch:
            clip = np.asarray(item)
            if clip.ndim != 2 or clip.shape[1] != WINDOW or clip.shape[0] == 0:
                raise ValueError(f"expected float32 [n_windows, {WINDOW}], got {clip.shape}")
            clips.append(clip.astype(np.float32, copy=False))

        # Longest clips first, so the clips still running at any step are a prefix of the
        # batch and finished ones are simply left out of the next model call.
        order = sorted(range(len(clips)), key=lambda i: -len(clips[i]))
        running = [clips[i] for i in order]
        lengths = [len(c) for c in running]
        probs = np.zeros((len(running), lengths[0]), dtype=np.float32)
        # Each model input is [context | window]: the last 64 samples of the clip's previous
        # window (zeros before the first), as silero-vad's OnnxWrapper feeds it.
        x = np.zeros((len(running), CONTEXT + WINDOW), dtype=np.float32)
        state = np.zeros((2, len(running), 128), dtype=np.float32)
        active = len(running)
        for t in range(lengths[0]):
            while lengths[active - 1] <= t:
                active -= 1
            x[:active, :CONTEXT] = x[:active, WINDOW:]
            for row in range(active):
                x[row, CONTEXT:] = running[row][t]
            out, new_state = self.session.run(
                None, {"input": x[:active], "state": state[:, :active], "sr": self.sr}
            )
            state[:, :active] = new_state
            probs[:active, t] = out[:, 0]

        results: list[np.ndarray] = [np.empty(0, dtype=np.float32)] * len(clips)
        for row, i in enumerate(order):
            results[i] = probs[row, : lengths[row]].copy()
        return results


@function(name="vad", timeout=60)
async def vad(
    event: Any, silero: Executor[np.ndarray, np.ndarray] = uses(SileroVAD)
) -> dict[str, Any]:
    audio = decode_audio(event)
    threshold = _threshold(event)
    windows = to_windows(audio)
    probs = np.asarray(await silero(windows), dtype=np.float32)
    if probs.shape != (len(windows),):
        raise RuntimeError(f"silero-vad answered shape {probs.shape} for {len(windows)} windows")
    segments = speech_segments(probs, len(audio), threshold)
    return {
        "speech": [[_seconds(start), _seconds(end)] for start, end in segments],
        "duration": _seconds(len(audio)),
    }


def decode_audio(event: Any) -> np.ndarray:
    """The request's audio as float32 samples in [-1, 1] at 16 kHz, or InvalidPayload."""
    if not isinstance(event, dict):
        raise InvalidPayload(_USAGE)
    if "audio" in event and "audio_b64" in event:
        raise InvalidPayload('send either "audio" or "audio_b64", not both')
    if "audio_b64" in event:
        text = event["audio_b64"]
        if not isinstance(text, str):
            raise InvalidPayload('"audio_b64" must be a base64 string')
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidPayload('"audio_b64" is not valid base64') from None
    elif "audio" in event:
        data = event["audio"]
    else:
        raise InvalidPayload(_USAGE)

    if isinstance(data, np.ndarray):
        audio = _from_array(data)
    elif isinstance(data, bytes | bytearray | memoryview):
        data = bytes(data)
        if data[:4] == b"RIFF":
            audio = _from_wav(data)
        else:
            audio = _from_pcm16(data)
    elif isinstance(data, str):
        raise InvalidPayload(
            '"audio" must be bytes (msgpack); JSON clients send base64 in "audio_b64"'
        )
    else:
        raise InvalidPayload(f'"audio" must be bytes, got {type(data).__name__}')

    if audio.size == 0:
        raise InvalidPayload("the audio is empty")
    if audio.size > MAX_SECONDS * SAMPLE_RATE:
        raise InvalidPayload(
            f"the audio is {audio.size / SAMPLE_RATE:.0f} s long; at most {MAX_SECONDS} s "
            "per request: split longer recordings"
        )
    return audio


_USAGE = (
    'vad expects {"audio": <16 kHz mono PCM16 or WAV bytes>} '
    '(JSON: {"audio_b64": "<base64>"}), optionally with "threshold"'
)


def _from_pcm16(data: bytes) -> np.ndarray:
    for magic, what in _NOT_PCM.items():
        if data.startswith(magic):
            raise InvalidPayload(
                f"the audio looks like {what}; send 16 kHz mono PCM16 or a PCM WAV file "
                "(decode it first, e.g. ffmpeg -i in -ar 16000 -ac 1 -f wav out.wav)"
            )
    if data[4:8] == b"ftyp":
        raise InvalidPayload("the audio looks like an MP4/M4A file; send 16 kHz PCM16 or WAV")
    if len(data) % 2:
        raise InvalidPayload(
            f"raw audio must be 16-bit samples, but has an odd length ({len(data)} bytes)"
        )
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def _from_wav(data: bytes) -> np.ndarray:
    if data[8:12] != b"WAVE":
        raise InvalidPayload("the audio is a RIFF file but not a WAV file")
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError, ValueError) as e:
        raise InvalidPayload(
            f"cannot read the WAV file ({e}); send integer PCM WAV or raw PCM16"
        ) from None
    if rate != SAMPLE_RATE:
        raise InvalidPayload(
            f"the WAV file is sampled at {rate} Hz; vad needs {SAMPLE_RATE} Hz: resample it "
            "first (e.g. ffmpeg -i in.wav -ar 16000 out.wav)"
        )
    if channels < 1 or width not in (1, 2, 3, 4):
        raise InvalidPayload(f"unsupported WAV layout: {channels} channels, {width}-byte samples")
    n = len(frames) // (width * channels)  # a truncated file may end inside a frame
    raw = np.frombuffer(frames[: n * width * channels], dtype=np.uint8)
    if width == 1:  # 8-bit WAV is unsigned
        samples = (raw.astype(np.float32) - 128.0) / 128.0
    elif width == 3:  # 24-bit little-endian: widen to int32 by placing the bytes high
        wide = np.zeros((raw.size // 3, 4), dtype=np.uint8)
        wide[:, 1:] = raw.reshape(-1, 3)
        samples = wide.view("<i4")[:, 0].astype(np.float32) / 2.0**31
    else:
        ints = raw.view("<i2" if width == 2 else "<i4")
        samples = ints.astype(np.float32) / float(2 ** (8 * width - 1))
    mono: np.ndarray = samples.reshape(n, channels).mean(axis=1, dtype=np.float32)
    return mono


def _from_array(arr: np.ndarray) -> np.ndarray:
    if arr.ndim != 1:
        raise InvalidPayload(f"an audio array must be 1-D (mono, 16 kHz), got shape {arr.shape}")
    if arr.dtype == np.int16:
        return arr.astype(np.float32) / 32768.0
    if arr.dtype in (np.float32, np.float64):
        audio = arr.astype(np.float32)
        if not np.isfinite(audio).all() or np.abs(audio).max(initial=0.0) > 1.0:
            raise InvalidPayload("a float audio array must hold finite samples in [-1, 1]")
        return audio
    raise InvalidPayload(f"an audio array must be int16 or float32, got {arr.dtype}")


def _threshold(event: Any) -> float:
    threshold = event.get("threshold", 0.5)
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0.0 < threshold < 1.0
    ):
        raise InvalidPayload(f'"threshold" must be a number between 0 and 1, got {threshold!r}')
    return float(threshold)


def to_windows(audio: np.ndarray) -> np.ndarray:
    """float32 [n_windows, 512]: the audio cut into windows, the last one zero-padded."""
    n_windows = -(-len(audio) // WINDOW)
    windows = np.zeros((n_windows, WINDOW), dtype=np.float32)
    windows.reshape(-1)[: len(audio)] = audio
    return windows


def speech_segments(probs: np.ndarray, n_samples: int, threshold: float = 0.5) -> list[list[int]]:
    """Speech segments ``[[start, end], ...]`` in samples from per-window speech probabilities.

    The segment logic of silero-vad's ``get_speech_timestamps`` with its default parameters
    (no maximum segment length, so none of its segment-splitting applies).
    """
    neg_threshold = max(threshold - 0.15, 0.01)
    segments: list[list[int]] = []
    start = None  # first sample of the segment in progress
    silence_from = None  # where the silence that may end it began
    for i, p in enumerate(probs):
        here = i * WINDOW
        if p >= threshold:
            silence_from = None
            if start is None:
                start = here
                continue
        if start is None or p >= neg_threshold:
            continue  # not in speech, or not sure enough of silence to count it
        if silence_from is None:
            silence_from = here
        if here - silence_from >= MIN_SILENCE:
            if silence_from - start > MIN_SPEECH:
                segments.append([start, silence_from])
            start = silence_from = None
    if start is not None and n_samples - start > MIN_SPEECH:
        segments.append([start, n_samples])

    # Pad each segment, sharing the gap between neighbours closer than two paddings.
    for i, seg in enumerate(segments):
        if i == 0:
            seg[0] = max(0, seg[0] - SPEECH_PAD)
        if i + 1 < len(segments):
            after = segments[i + 1]
            gap = after[0] - seg[1]
            if gap < 2 * SPEECH_PAD:
                seg[1] += gap // 2
                after[0] = max(0, after[0] - gap // 2)
            else:
                seg[1] = min(n_samples, seg[1] + SPEECH_PAD)
                after[0] = max(0, after[0] - SPEECH_PAD)
        else:
            seg[1] = min(n_samples, seg[1] + SPEECH_PAD)
    return segments


def _seconds(samples: int) -> float:
    return round(samples / SAMPLE_RATE, 3)
