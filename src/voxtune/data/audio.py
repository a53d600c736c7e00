"""Decode any readable audio to 16 kHz mono float32 and check it is usable speech.

soundfile (libsndfile) decodes; soxr resamples. Both are what transformers and mistral-common use
themselves; torchaudio is not used because its registry wheels are CUDA builds pinned to one torch
(README "Why soundfile + soxr", docs/benchmarks.md for the measurements).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile
import soxr
from numpy.lib.stride_tricks import sliding_window_view

SAMPLE_RATE = 16_000  # what Voxtral's feature extractor expects
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff"})
# The top code of µ-law (0.980), A-law (0.984), 8-bit (0.992) and 16/24-bit (~1.0) audio all
# count as full scale.
FULL_SCALE = 0.98
# A natural peak changes from sample to sample; a clipped one is flat: the same value this
# many times in a row.
CLIPPED_RUN = 3


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
    max_clipped_fraction: float | None = None  # None: clipped audio is kept (and reported)


def seconds(value: float, limit: float) -> str:
    """`value` with just enough decimals that it compares to `limit` as it truly does, so a
    message never reads "30.0 s is longer than 30 s"."""
    for decimals in range(1, 7):
        shown = round(value, decimals)
        if (shown > limit, shown < limit) == (value > limit, value < limit):
            return f"{value:.{decimals}f} s"
    return f"{value!r} s"


def promised_frames(stream: BinaryIO) -> int | None:
    """How many frames a WAV or AIFF header says the file holds, or None when the format has
    no such header or leaves the length open (streamed WAVs write 0 or 0xFFFFFFFF).

    libsndfile shrinks its frame count to what a cut-off file holds and only logs the
    difference, so the header has to be read here to notice the cut."""
    head = stream.read(12)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        order, info, data = "<", b"fmt ", b"data"
    elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        order, info, data = ">", b"COMM", b"SSND"
    else:
        return None
    fields = b""
    while len(chunk := stream.read(8)) == 8:
        name, size = chunk[:4], struct.unpack(f"{order}I", chunk[4:])[0]
        if name == data:
            break
        start = stream.tell()
        if name == info:
            fields = stream.read(min(size, 64))
        stream.seek(start + size + size % 2)  # chunks are padded to an even length
    else:
        return None
    if order == ">":  # AIFF's COMM: channels (2 bytes), then the frame count itself
        return struct.unpack(">I", fields[2:6])[0] if len(fields) >= 6 else None
    if len(fields) < 14 or size in (0, 0xFFFFFFFF):
        return None
    block_align = struct.unpack("<H", fields[12:14])[0]  # bytes per frame, all channels
    return size // block_align if block_align else None


def clipped_fraction(samples: np.ndarray) -> float:
    """Share of samples (frames x channels) that are clipped: flat at full scale, or beyond it
    (float audio over 1.0, which storing as 16-bit PCM will clip)."""
    clipped = np.abs(samples) > 1.0
    if len(samples) >= CLIPPED_RUN:
        windows = sliding_window_view(samples, CLIPPED_RUN, axis=0)  # (frames - 2, channels, 3)
        flat = (windows == windows[..., :1]).all(axis=-1) & (np.abs(windows[..., 0]) >= FULL_SCALE)
        for offset in range(CLIPPED_RUN):  # mark every sample of each flat run
            clipped[offset:offset + len(flat)] |= flat
    return float(clipped.mean())


def decode(source: Path | bytes) -> tuple[np.ndarray, int]:
    """Read audio as float32 of shape (frames, channels) and its sample rate.

    Raises AudioRejected for directories, missing, non-audio, corrupt, truncated or empty input.
    """
    if isinstance(source, Path):
        if source.is_dir():
            raise AudioRejected("is_directory", f"{source.name} is a directory, not an audio file")
        if not source.exists():
            raise AudioRejected("missing", f"{source} does not exist")
    try:
        with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as stream:
            promised = promised_frames(stream)
            stream.seek(0)
            with soundfile.SoundFile(stream) as audio:
                samples = audio.read(dtype="float32", always_2d=True)
                rate = audio.samplerate
    except soundfile.LibsndfileError as error:
        text = str(error)
        if "Format not recognised" in text or "unknown format" in text.lower():
            raise AudioRejected("not_audio", "not an audio format that can be read") from None
        raise AudioRejected("unreadable", f"cannot decode: {text.split(': ', 1)[-1]}") from None
    except (RuntimeError, TypeError, EOFError) as error:
        raise AudioRejected("unreadable", f"cannot decode: {error}") from None
    except OSError as error:  # unreadable file (permissions, I/O error): this item only
        raise AudioRejected("unreadable", f"cannot read: {error.strerror or error}") from None
    if promised is not None and samples.shape[0] < promised:
        raise AudioRejected("truncated", f"file is truncated: the header promises {promised} "
                            f"frames, the file holds {samples.shape[0]}")
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


def check(samples: np.ndarray, limits: ClipLimits, clipped: float = 0.0) -> None:
    """Reject 16 kHz mono clips that are too short, too long, silent or (if a limit is set) too
    clipped; `clipped` is the source's clipped_fraction."""
    duration = len(samples) / SAMPLE_RATE
    if duration < limits.min_duration:
        raise AudioRejected("too_short", f"{seconds(duration, limits.min_duration)} is shorter "
                            f"than the {limits.min_duration:g} s minimum")
    if duration > limits.max_duration:
        raise AudioRejected("too_long", f"{seconds(duration, limits.max_duration)} is longer "
                            f"than {limits.max_duration:g} s (Voxtral's 30-s window); split it "
                            "into shorter clips with their own transcripts")
    if limits.max_clipped_fraction is not None and clipped > limits.max_clipped_fraction:
        raise AudioRejected("clipped", f"a share of {clipped:.2g} of the samples is flat at "
                            "full scale (clipped), over data.max_clipped_fraction="
                            f"{limits.max_clipped_fraction:g}")
    peak = float(np.max(np.abs(samples)))
    peak_dbfs = 20 * np.log10(peak) if peak > 0 else -np.inf
    if peak_dbfs < limits.silence_dbfs:
        raise AudioRejected("silent", f"peak level {peak_dbfs:.0f} dBFS is below "
                            f"{limits.silence_dbfs:.0f} dBFS: the clip is silent")


def load_clip(source: Path | bytes, limits: ClipLimits) -> tuple[np.ndarray, float]:
    """Decode, downmix, resample and check one clip; also its clipped_fraction (measured before
    resampling, whose filter would blur the flat tops)."""
    samples, rate = decode(source)
    clipped = clipped_fraction(samples)
    mono = to_mono_16k(samples, rate)
    check(mono, limits, clipped)
    return mono, clipped


def load_16k(source: Path | bytes, limits: ClipLimits) -> np.ndarray:
    """Decode, downmix, resample and check one clip."""
    return load_clip(source, limits)[0]


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Quantise float samples to 16-bit PCM: what is stored, hashed and trained on."""
    return np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")


def flac_bytes(pcm16: np.ndarray) -> bytes:
    """16 kHz mono PCM as FLAC (lossless, about half the size of WAV).

    Encoded in memory: libsndfile reports a full disk as a generic error without errno, while
    writing the bytes with ordinary file I/O raises an OSError that says ENOSPC."""
    buffer = io.BytesIO()
    soundfile.write(buffer, pcm16, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()
