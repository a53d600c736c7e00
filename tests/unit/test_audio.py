"""Decoding and resampling with real files of every common rate, width and channel count."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.helpers import write_audio
from voxtune.data.audio import (
    SAMPLE_RATE,
    AudioRejected,
    ClipLimits,
    check,
    clipped_fraction,
    decode,
    to_mono_16k,
)

RATES = [8_000, 11_025, 16_000, 22_050, 32_000, 44_100, 48_000]
SUBTYPES = ["PCM_16", "PCM_24", "FLOAT"]


def tone(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * frequency * np.arange(int(seconds * rate)) / rate)
            ).astype(np.float32)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("subtype", SUBTYPES)
@pytest.mark.parametrize("rate", RATES)
def test_tone_survives_resampling(tmp_path: Path, rate: int, subtype: str) -> None:
    """A 2-s 440 Hz tone stays 2 s long, at 440 Hz, at the same level, from any rate/width."""
    path = write_audio(tmp_path / "tone.wav", tone(440, 2.0, rate), rate, subtype)
    samples, source_rate = decode(path)
    assert source_rate == rate
    out = to_mono_16k(samples, source_rate)
    assert out.dtype == np.float32
    assert len(out) == 2 * SAMPLE_RATE
    assert dominant_frequency(out, SAMPLE_RATE) == pytest.approx(440, abs=1)
    middle = out[SAMPLE_RATE // 2: -SAMPLE_RATE // 2]  # away from the filter's edges
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    reference = tone(440, 2.0, SAMPLE_RATE)[SAMPLE_RATE // 2: -SAMPLE_RATE // 2]
    error = middle - reference
    assert 10 * np.log10(np.sum(reference**2) / (np.sum(error**2) + 1e-20)) > 40  # SNR in dB


def test_frequencies_above_8khz_are_removed() -> None:
    """Resampling 44.1 kHz → 16 kHz must filter, not fold a 10 kHz tone back to 6 kHz."""
    out = to_mono_16k(tone(10_000, 1.0, 44_100)[:, None], 44_100)
    middle = out[1_000:-1_000]  # the tone's abrupt start and end are broadband clicks
    assert np.sqrt(np.mean(middle**2)) < 1e-3 * 0.5


def test_stereo_is_averaged(tmp_path: Path) -> None:
    left, right = tone(300, 1.0, 48_000), tone(300, 1.0, 48_000, amplitude=0.1)
    path = write_audio(tmp_path / "stereo.flac", np.stack([left, right], axis=1), 48_000)
    samples, rate = decode(path)
    assert samples.shape[1] == 2
    out = to_mono_16k(samples, rate)
    assert np.max(np.abs(out)) == pytest.approx(0.3, abs=0.01)


@pytest.mark.parametrize(("seconds", "amplitude", "reason"), [
    (0.2, 0.5, "too_short"),
    (31.0, 0.5, "too_long"),
    (1.0, 0.0, "silent"),
    (1.0, 0.0005, "silent"),
], ids=["short", "long", "zeros", "below-threshold"])
def test_check_rejects(seconds: float, amplitude: float, reason: str) -> None:
    with pytest.raises(AudioRejected) as rejected:
        check(tone(200, seconds, SAMPLE_RATE, amplitude), ClipLimits())
    assert rejected.value.reason == reason


def test_check_accepts_quiet_speech_level() -> None:
    check(tone(200, 1.0, SAMPLE_RATE, amplitude=0.01), ClipLimits())  # -40 dBFS is speech


# --- truncation is what the header promises versus what decodes (issue 10, item 4) ----------

ODD_WIDTH_SUBTYPES = ["ULAW", "ALAW", "PCM_U8", "PCM_24"]  # 1 or 3 bytes a frame


@pytest.mark.parametrize("frames", [16_001, 16_003])
@pytest.mark.parametrize("container", ["WAV", "WAVEX"])
@pytest.mark.parametrize("subtype", ODD_WIDTH_SUBTYPES)
def test_odd_length_wavs_are_kept(tmp_path: Path, subtype: str, container: str,
                                  frames: int) -> None:
    """An odd-sized data chunk (padded as RIFF requires) is a whole file, not a truncated one."""
    path = tmp_path / "odd.wav"
    soundfile.write(path, tone(200, frames / 16_000, 16_000)[:frames], 16_000, subtype=subtype,
                    format=container)
    assert path.stat().st_size % 2 == 0  # soundfile wrote the pad byte
    samples, _ = decode(path)
    assert len(samples) == frames


@pytest.mark.parametrize("cut", [3, 1_000], ids=["one-frame", "many-frames"])
@pytest.mark.parametrize(("container", "subtype"), [
    *[("WAV", subtype) for subtype in [*ODD_WIDTH_SUBTYPES, "PCM_16", "FLOAT"]],
    ("AIFF", "PCM_16"), ("AIFF", "PCM_24"),
])
def test_bytes_cut_off_the_end_are_truncated(tmp_path: Path, container: str, subtype: str,
                                             cut: int) -> None:
    whole = tmp_path / "whole"
    soundfile.write(whole, tone(200, 1.0, 16_000)[:16_001], 16_000, subtype=subtype,
                    format=container)
    cut_off = whole.read_bytes()[:-cut]  # past any pad byte: whole frames are lost
    path = tmp_path / f"cut.{container.lower()}"
    path.write_bytes(cut_off)
    for source in (path, cut_off):  # files, and the bytes Hub datasets hand over
        with pytest.raises(AudioRejected) as rejected:
            decode(source)
        assert rejected.value.reason == "truncated"


# --- durations in messages (item 14) --------------------------------------------------------


@pytest.mark.parametrize(("frames", "reason"), [
    (480_160, "too_long"),  # 30.01 s
    (480_001, "too_long"),  # one sample over 30 s
    (4_799, "too_short"),  # one sample under 0.3 s
], ids=["30.01s", "30s+1", "0.3s-1"])
def test_duration_messages_are_true(frames: int, reason: str) -> None:
    """The duration shown compares to the limit shown as the real one does."""
    limits = ClipLimits()
    with pytest.raises(AudioRejected) as rejected:
        check(np.full(frames, 0.1, np.float32), limits)
    assert rejected.value.reason == reason
    shown, limit = (float(number) for number in re.findall(r"(\d+(?:\.\d+)?) s\b",
                                                             str(rejected.value))[:2])
    assert shown > limit if reason == "too_long" else shown < limit
    assert limit == (limits.max_duration if reason == "too_long" else limits.min_duration)


# --- clipping -------------------------------------------------------------------------------


def overdriven(amplitude: float = 1.3) -> np.ndarray:
    """A 150 Hz sine driven past full scale and clipped, as an overloaded recorder does."""
    return np.clip(tone(150, 1.0, 16_000, amplitude=amplitude), -1.0, 1.0)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_U8", "ULAW", "ALAW", "FLOAT"])
def test_overdriven_audio_is_counted_as_clipped(tmp_path: Path, subtype: str) -> None:
    path = write_audio(tmp_path / "loud.wav", overdriven(), 16_000, subtype)
    expected = np.mean(np.abs(1.3 * tone(150, 1.0, 16_000, amplitude=1.0)) >= 1.0)  # ~44%
    assert clipped_fraction(decode(path)[0]) == pytest.approx(expected, abs=0.05)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_peaks_that_touch_full_scale_are_not_clipping(tmp_path: Path, subtype: str) -> None:
    """Audio normalised to 0 dBFS reaches full scale at each peak without a flat top. (8-bit
    and µ-law codes are too coarse to tell: their peaks flatten when normalised.)"""
    path = write_audio(tmp_path / "normalised.wav", tone(150, 1.0, 16_000, amplitude=1.0),
                       16_000, subtype)
    samples = decode(path)[0]
    assert np.max(np.abs(samples)) >= 0.9999
    assert clipped_fraction(samples) == 0.0


def test_float_overs_count_as_clipped() -> None:
    """Float audio beyond ±1.0 is clipped when stored as 16-bit PCM, flat or not."""
    assert clipped_fraction(tone(150, 1.0, 16_000, amplitude=2.0)[:, None]) > 0.5


def test_clipped_limit_rejects_with_the_share() -> None:
    samples = overdriven()
    share = clipped_fraction(samples)
    check(samples, ClipLimits(max_clipped_fraction=None), share)  # kept by default
    check(samples, ClipLimits(max_clipped_fraction=share + 0.01), share)
    with pytest.raises(AudioRejected, match=r"max_clipped_fraction=0\.1") as rejected:
        check(samples, ClipLimits(max_clipped_fraction=0.1), share)
    assert rejected.value.reason == "clipped"
