"""Generate ``speech.wav``, the speech fixture of the VAD tests, with espeak-ng.

Two short English utterances separated by 0.5 s of near-silence, 16 kHz mono PCM16, about
3 s (~96 KB). Run from the repository root to regenerate it::

    python tests/models/data/make_speech.py            # writes tests/models/data/speech.wav
    python tests/models/data/make_speech.py out.wav

Needs the ``espeak-ng`` program and numpy. The tests import :func:`make_clip` too, to build
longer clips when espeak-ng is installed.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
TEXTS = ("Hello from Shoal.", "Voice activity.")
HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "speech.wav"


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def synthesize(text: str, *, voice: str = "en-us", words_per_minute: int = 175) -> np.ndarray:
    """One utterance as float32 samples at 16 kHz, trimmed to the voiced part (+50 ms)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "utterance.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(path), text],
            check=True,
            capture_output=True,
        )
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise RuntimeError("espeak-ng wrote something other than mono PCM16")
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    x = resample(pcm.astype(np.float64) / 32768.0, rate, SAMPLE_RATE)
    voiced = np.flatnonzero(np.abs(x) > 0.01)
    if voiced.size == 0:
        raise RuntimeError(f"espeak-ng produced silence for {text!r}")
    margin = SAMPLE_RATE // 20
    return x[max(0, voiced[0] - margin) : voiced[-1] + margin].astype(np.float32)


def resample(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Band-limited resampling by truncating/zero-padding the spectrum (fine for a whole clip
    that starts and ends near silence)."""
    if src_rate == dst_rate:
        return x
    n_out = round(len(x) * dst_rate / src_rate)
    spectrum = np.fft.rfft(x)
    out = np.zeros(n_out // 2 + 1, dtype=complex)
    keep = min(len(spectrum), len(out))
    out[:keep] = spectrum[:keep]
    return np.fft.irfft(out, n_out) * (n_out / len(x))


def make_clip(
    texts: tuple[str, ...] = TEXTS,
    *,
    lead: float = 0.3,
    gap: float = 0.5,
    tail: float = 0.15,
    noise: float = 1e-3,
    seed: int = 0,
) -> np.ndarray:
    """Utterances joined by ``gap`` seconds of faint noise, float32 in [-1, 1] at 16 kHz."""
    parts: list[np.ndarray] = [np.zeros(int(lead * SAMPLE_RATE), np.float32)]
    for i, text in enumerate(texts):
        if i:
            parts.append(np.zeros(int(gap * SAMPLE_RATE), np.float32))
        parts.append(synthesize(text))
    parts.append(np.zeros(int(tail * SAMPLE_RATE), np.float32))
    x = np.concatenate(parts)
    x += np.random.default_rng(seed).normal(0.0, noise, size=x.shape).astype(np.float32)
    return np.clip(x, -1.0, 32767 / 32768)


def wav_bytes(x: np.ndarray) -> bytes:
    """float samples in [-1, 1] as a 16 kHz mono PCM16 WAV file."""
    pcm = np.round(np.clip(x, -1.0, 32767 / 32768) * 32768).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def main(argv: list[str]) -> None:
    if not have_espeak():
        sys.exit("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)")
    out = Path(argv[1]) if len(argv) > 1 else FIXTURE
    data = wav_bytes(make_clip())
    out.write_bytes(data)
    print(f"wrote {out} ({len(data)} bytes, {(len(data) - 44) / 2 / SAMPLE_RATE:.2f} s)")


if __name__ == "__main__":
    main(sys.argv)
