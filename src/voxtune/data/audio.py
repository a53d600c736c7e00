"""Decode any readable audio to 16 kHz mono float32 and check it is usable speech.

soundfile (libsndfile) decodes; soxr resamples. Both are what transformers and mistral-common use
themselves; torchaudio is not used because its registry wheels are CUDA builds pinned to one torch
(README "Why soundfile + soxr", docs/benchmarks.md for the measurements).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16_000  # what Voxtral's feature extractor expects
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff"})


class AudioRejected(Exception):
    """The clip cannot be used; `reason` is a stable code, the message is for people."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ClipLimits:
    min_duration: float = 0.3
    max_duration: float = 30.0
    silence_dbfs: float = -60.0


def decode(source: Path | bytes) -> tuple[np.ndarray, int]:
    """Read audio as float32 of shape (frames, channels) and its sample rate.

    Raises AudioRejected for directories, missing, non-audio, corrupt, truncated or empty input.
    """
    if isinstance(source, Path):
        if source.is_dir():
            raise AudioRejected("is_directory", f"{source.name} is a directory, not an audio file")
        if not source.exists():
            raise AudioRejected("missing", f"{source} does not exist")
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with soundfile.SoundFile(handle) as audio:
            # libsndfile reads what is there of a cut-off WAV and only notes it in its log.
            if "should be" in audio.extra_info:
                raise AudioRejected("truncated", "file is truncated (header promises more data "
                                    "than the file holds)")
            samples = audio.read(dtype="float32", always_2d=True)
            rate = audio.samplerate
    except soundfile.LibsndfileError as error:
        text = str(error)
        if "Format not recognised" in text or "unknown format" in text.lower():
            raise AudioRejected("not_audio", "not an audio format that can be read") from None
        raise AudioRejected("unreadable", f"cannot decode: {text.split(': ', 1)[-1]}") from None
    except (RuntimeError, TypeError, EOFError) as error:
        raise AudioRejected("unreadable", f"cannot decode: {error}") from None
    if samples.shape[0] == 0:
        raise AudioRejected("empty", "file contains no audio frames")
    if not np.isfinite(samples).all():
        raise AudioRejected("unreadable", "audio contains NaN or infinite samples")
    return samples, rate


def to_mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Average the channels and resample to 16 kHz with soxr's high-quality filter."""
    if samples.ndim == 2:  # indexing a single channel avoids a pass over the data (~10%)
        mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1)
    else:
        mono = samples
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if rate == SAMPLE_RATE:
        return mono
    return soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)


def check(samples: np.ndarray, limits: ClipLimits) -> None:
    """Reject 16 kHz mono clips that are too short, too long or silent."""
    duration = len(samples) / SAMPLE_RATE
    if duration < limits.min_duration:
        raise AudioRejected("too_short", f"{duration:.2f} s is shorter than the "
                            f"{limits.min_duration} s minimum")
    if duration > limits.max_duration:
        raise AudioRejected("too_long", f"{duration:.1f} s is longer than {limits.max_duration} s "
                            "(Voxtral's 30-s window); split it into shorter clips with their "
                            "own transcripts")
    peak = float(np.max(np.abs(samples)))
    peak_dbfs = 20 * np.log10(peak) if peak > 0 else -np.inf
    if peak_dbfs < limits.silence_dbfs:
        raise AudioRejected("silent", f"peak level {peak_dbfs:.0f} dBFS is below "
                            f"{limits.silence_dbfs:.0f} dBFS: the clip is silent")


def load_16k(source: Path | bytes, limits: ClipLimits) -> np.ndarray:
    """Decode, downmix, resample and check one clip."""
    samples, rate = decode(source)
    mono = to_mono_16k(samples, rate)
    check(mono, limits)
    return mono


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Quantise float samples to 16-bit PCM: what is stored, hashed and trained on."""
    return np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")


def write_flac(path: Path, pcm16: np.ndarray) -> None:
    """Write 16 kHz mono PCM as FLAC (lossless, about half the size of WAV)."""
    soundfile.write(path, pcm16, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
