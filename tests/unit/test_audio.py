"""Decoding and resampling with real files of every common rate, width and channel count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import write_audio
from voxtune.data.audio import SAMPLE_RATE, AudioRejected, ClipLimits, check, decode, to_mono_16k

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
