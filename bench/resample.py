"""Compare resamplers for the prepare step: speed, quality and install size.

What prepare does to every clip is decode it and resample it to 16 kHz, so this measures exactly
that on 8 / 22.05 / 44.1 / 48 kHz input, one thread per resampler (× real time per core).

    .venv/bin/python bench/resample.py                 # what the project venv has (soxr)

torchaudio, torchcodec (what `datasets` decodes with) and scipy are not project dependencies;
measure them once in a throw-away venv outside the repo (torchaudio's registry wheels pin one
CUDA torch, ≈7 GB). torchcodec also needs FFmpeg's shared libraries: Debian's can be unpacked
without installing them (`apt-get install -d -o Dir::Cache::archives=/tmp/ffdebs libavdevice59
libavfilter8`, then `dpkg -x` each .deb into /tmp/ffroot):

    python3 -m venv /tmp/ta-venv
    /tmp/ta-venv/bin/pip install torch==2.9.1 torchaudio==2.9.1 soxr soundfile numpy scipy \
        datasets torchcodec==0.8.1
    L=/tmp/ffroot/usr/lib/x86_64-linux-gnu
    LD_LIBRARY_PATH=$L:$L/blas:$L/lapack /tmp/ta-venv/bin/python bench/resample.py

Only numpy, soundfile and soxr are required; absent or broken libraries are skipped with a note.
Output is Markdown tables; docs/benchmarks.md ("Resampler choice") records a run and the decision.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
import soundfile
import soxr

TARGET = 16_000
RATES = (8_000, 22_050, 44_100, 48_000)  # telephone, espeak-ng/older corpora, CD, video/browser
HIGH_TONE = {8_000: 3_000.0}  # default 7 kHz: near the top of the 16 kHz band, where filters differ
ALIAS_TONE = 9_000.0  # above 8 kHz: a correct resampler removes it, a sloppy one folds it to 7 kHz
VANISHED_DB = -60.0  # alias residue below this is under a quiet recording's own noise floor
SHARED = {"numpy"}  # every option needs numpy anyway: not counted in install sizes

Resampler = Callable[[np.ndarray, int], np.ndarray]


# --- the candidates ----------------------------------------------------------------------------

def soxr_resampler(quality: str) -> Resampler:
    def run(samples: np.ndarray, rate: int) -> np.ndarray:
        return soxr.resample(samples, rate, TARGET, quality=quality)
    return run


@dataclass
class Candidates:
    resamplers: dict[str, Resampler] = field(default_factory=dict)
    # options that decode and resample in one call (FFmpeg), timed from the file itself
    decoders: dict[str, Callable[[Path], np.ndarray]] = field(default_factory=dict)
    packages: dict[str, list[str]] = field(default_factory=dict)  # label → distributions
    notes: list[str] = field(default_factory=list)


def find_candidates() -> Candidates:
    """The resamplers that import here, the distributions behind each, and skip notes."""
    found = Candidates(
        resamplers={"soxr HQ": soxr_resampler("HQ"), "soxr VHQ": soxr_resampler("VHQ")},
        packages={"soxr": ["soxr"], "soundfile (decoder, all options)": ["soundfile"]})
    try:
        import torch
        import torchaudio.functional as taf
    except Exception as error:  # a broken wheel raises OSError/RuntimeError, not only ImportError
        found.notes.append(f"torchaudio skipped: {type(error).__name__}: {_first_line(error)}")
    else:
        torch.set_num_threads(1)  # per-core numbers, like the other single-threaded libraries

        def torchaudio_sinc(samples: np.ndarray, rate: int) -> np.ndarray:
            return taf.resample(torch.from_numpy(samples), rate, TARGET).numpy()

        def torchaudio_kaiser(samples: np.ndarray, rate: int) -> np.ndarray:
            # the "kaiser_best" settings from torchaudio's resampling tutorial (librosa's)
            return taf.resample(torch.from_numpy(samples), rate, TARGET,
                                lowpass_filter_width=64, rolloff=0.9475937167399596,
                                resampling_method="sinc_interp_kaiser",
                                beta=14.769656459379492).numpy()

        found.resamplers["torchaudio sinc (default)"] = torchaudio_sinc
        found.resamplers["torchaudio kaiser_best"] = torchaudio_kaiser
        cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ", CPU build"
        found.notes.append(f"torch {torch.__version__}{cuda}, {torch.get_num_threads()} thread")
        found.packages["torchaudio (+ the torch it pins)"] = ["torchaudio"]
        found.packages["torchaudio alone"] = ["torchaudio!"]
    try:
        from torchcodec.decoders import AudioDecoder
    except Exception as error:  # without FFmpeg libraries the import raises RuntimeError
        found.notes.append(f"torchcodec skipped: {type(error).__name__}: {_first_line(error)}")
    else:
        def torchcodec_decode(path: Path) -> np.ndarray:
            decoder = AudioDecoder(str(path), sample_rate=TARGET)
            return decoder.get_all_samples().data.mean(dim=0).numpy()

        name = "torchcodec (datasets' decoder)"
        found.decoders[name] = torchcodec_decode
        found.resamplers[name] = via_file(torchcodec_decode)
        found.packages["torchcodec alone (+ FFmpeg libs from the OS)"] = ["torchcodec!"]
    try:
        from scipy.signal import resample_poly
    except ImportError as error:
        found.notes.append(f"scipy skipped: {_first_line(error)}")
    else:
        def scipy_poly(samples: np.ndarray, rate: int) -> np.ndarray:
            common = gcd(rate, TARGET)
            return resample_poly(samples, TARGET // common, rate // common)

        found.resamplers["scipy resample_poly"] = scipy_poly
        found.packages["scipy"] = ["scipy"]
    return found


def via_file(decode: Callable[[Path], np.ndarray]) -> Resampler:
    """A decoder that resamples as it reads, fed from a float WAV so no precision is lost."""
    def run(samples: np.ndarray, rate: int) -> np.ndarray:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "tone.wav"
            soundfile.write(path, samples, rate, subtype="FLOAT")
            return decode(path)
    return run


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0][:160]


# --- signals -----------------------------------------------------------------------------------

def speech_like(rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A deterministic stand-in for a speech clip: voiced harmonics + noise, syllable rhythm.

    Resampling cost does not depend on content; the broadband noise keeps energy up to the
    source's Nyquist so the anti-aliasing filter has real work, as with fricatives in speech.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    pitch = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 30))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) ** 2
    signal = 0.1 * envelope * voiced + 0.02 * rng.standard_normal(t.size)
    return (signal / np.max(np.abs(signal)) * 0.8).astype(np.float32)


def db(value: float) -> str:
    """dB rounded; beyond ±140 dB float32 rounding dominates, so larger figures mean nothing."""
    return f"{value:.0f}" if abs(value) < 140 else ("≥140" if value > 0 else "≤-140")


def tone(frequency: float, rate: int, seconds: float) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


# --- measurements ------------------------------------------------------------------------------

def seconds_per_call(function: Callable[[], object], min_time: float, rounds: int = 3) -> float:
    """Best of `rounds` averages, each over enough calls to last `min_time`."""
    function()  # warm-up: first-call setup (kernel construction caches, page faults)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_time:
        function()
        calls += 1
    best = (time.perf_counter() - start) / calls
    for _ in range(rounds - 1):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def measure_speed(found: Candidates, seconds: float,
                  min_time: float) -> tuple[dict[int, float], dict[str, dict[int, float]]]:
    """× real time of decoding alone, and of decode + resample, per source rate."""
    decode: dict[int, float] = {}
    total: dict[str, dict[int, float]] = {name: {} for name in found.resamplers}
    with tempfile.TemporaryDirectory() as folder:
        for rate in RATES:
            path = Path(folder) / f"clip-{rate}.wav"
            soundfile.write(path, speech_like(rate, seconds), rate, subtype="PCM_16")

            def read(path: Path = path) -> np.ndarray:
                return soundfile.read(path, dtype="float32")[0]

            decode_time = seconds_per_call(read, min_time)
            decode[rate] = seconds / decode_time
            samples = read()
            for name, resample in found.resamplers.items():
                if name in found.decoders:  # reads the file itself: time it from the file
                    call = found.decoders[name]
                    total[name][rate] = seconds / seconds_per_call(
                        lambda c=call, p=path: c(p), min_time)
                else:
                    resample_time = seconds_per_call(
                        lambda r=resample, s=samples, q=rate: r(s, q), min_time)
                    total[name][rate] = seconds / (decode_time + resample_time)
    return decode, total


def tone_quality(output: np.ndarray, frequency: float,
                 seconds: float) -> tuple[float, float, float]:
    """(SNR vs the ideal 16 kHz tone, THD+N, gain), all in dB, over the clip minus 0.1-s edges.

    SNR counts every difference (level, delay, distortion, noise); THD+N is what is left after
    the best-fitting sinusoid at `frequency` is removed, so it excludes level and delay.
    """
    ideal = tone(frequency, TARGET, seconds)
    edge = TARGET // 10
    count = min(len(output), len(ideal))
    got = output[edge:count - edge].astype(np.float64)
    want = ideal[edge:count - edge].astype(np.float64)
    snr = 10 * np.log10(np.sum(want ** 2) / max(np.sum((got - want) ** 2), 1e-30))
    t = np.arange(edge, count - edge) / TARGET
    basis = np.stack([np.sin(2 * np.pi * frequency * t), np.cos(2 * np.pi * frequency * t)], 1)
    weights = np.linalg.lstsq(basis, got, rcond=None)[0]
    fitted = basis @ weights
    residual = got - fitted
    thdn = 10 * np.log10(max(np.sum(residual ** 2), 1e-30) / np.sum(fitted ** 2))
    gain = 20 * np.log10(np.hypot(*weights) / 0.5)
    return snr, thdn, gain


def measure_quality(resamplers: dict[str, Resampler], seconds: float = 2.0) -> list[list[str]]:
    rows = []
    for name, resample in resamplers.items():
        for rate in RATES:
            high = HIGH_TONE.get(rate, 7_000.0)
            outputs = {f: resample(tone(f, rate, seconds), rate) for f in (1_000.0, high)}
            lengths = {len(out) - int(TARGET * seconds) for out in outputs.values()}
            low_snr, low_thdn, _ = tone_quality(outputs[1_000.0], 1_000.0, seconds)
            high_snr, high_thdn, high_gain = tone_quality(outputs[high], high, seconds)
            rows.append([name, f"{rate / 1000:g}", "exact" if lengths == {0} else
                         "off by " + "/".join(f"{d:+d}" for d in sorted(lengths)),
                         db(low_snr), db(low_thdn), f"{high / 1000:g}", db(high_snr),
                         db(high_thdn), f"{high_gain:+.3f}"])
    return rows


def measure_aliasing(resamplers: dict[str, Resampler], seconds: float = 2.0) -> list[list[str]]:
    """Level of what is left of a 9 kHz tone after resampling to 16 kHz (it must vanish)."""
    rows = []
    for name, resample in resamplers.items():
        row = [name]
        for rate in (44_100, 48_000):
            source = tone(ALIAS_TONE, rate, seconds)
            output = resample(source, rate)[TARGET // 10:-TARGET // 10].astype(np.float64)
            level = 10 * np.log10(max(np.mean(output ** 2), 1e-30) /
                                  np.mean(source.astype(np.float64) ** 2))
            row.append(db(level) + (" ✓" if level < VANISHED_DB else " ✗ audible alias"))
        rows.append(row)
    return rows


# --- install size ------------------------------------------------------------------------------

def installed_size(names: list[str]) -> tuple[int, list[str]]:
    """Bytes on disk of the distributions and everything they require (minus SHARED).

    A name ending in "!" counts that distribution alone, without its requirements.
    """
    seen: set[str] = set()
    pending = list(names)
    total = 0
    while pending:
        name = pending.pop()
        alone = name.endswith("!")
        key = re.sub(r"[-_.]+", "-", name.rstrip("!")).lower()
        if key in seen or key in SHARED:
            continue
        try:
            distribution = importlib.metadata.distribution(key)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional or platform-specific requirement that is not installed
        seen.add(key)
        for file in distribution.files or []:
            path = Path(str(file.locate()))
            if path.is_file():
                total += path.stat().st_size
        if not alone:
            for requirement in distribution.requires or []:
                if "extra ==" not in requirement:
                    pending.append(re.split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0])
    return total, sorted(seen)


def version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "-"


# --- report ------------------------------------------------------------------------------------

def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (bench/prepare.py uses it too), ready to paste into docs/benchmarks.md."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="Length of the speed-test clip; typical ASR clips are 2–15 s.")
    parser.add_argument("--min-time", type=float, default=0.3,
                        help="Seconds per timing round; raise it on a noisy machine.")
    args = parser.parse_args()

    # 1. what is here
    found = find_candidates()
    print(f"# Resampler comparison — Python {platform.python_version()}, {platform.machine()}, "
          f"{sys.executable}")
    libraries = ("numpy", "soundfile", "soxr", "torch", "torchaudio", "torchcodec", "scipy")
    print("versions: " + ", ".join(f"{name} {version(name)}" for name in libraries))
    for note in found.notes:
        print(f"note: {note}")

    # 2. speed: decode (soundfile, 16-bit WAV) + resample to 16 kHz, one thread
    decode, speed = measure_speed(found, args.seconds, args.min_time)
    rates = [f"{rate / 1000:g} kHz" for rate in RATES]
    print(f"\n## Speed: × real time per core, {args.seconds:g}-s clip, decode + resample\n")
    rows = [["decode only (soundfile)"] + [f"{decode[rate]:,.0f}" for rate in RATES]]
    rows += [[name] + [f"{by_rate[rate]:,.0f}" for rate in RATES]
             for name, by_rate in speed.items()]
    print(table(["resampler", *rates], rows))

    # 3. quality: length, known tones, aliasing
    print("\n## Quality: 2-s tones at amplitude 0.5 → 16 kHz (dB; SNR vs the ideal tone)\n")
    print(table(["resampler", "from kHz", "length", "1 kHz SNR", "1 kHz THD+N", "high kHz",
                 "high SNR", "high THD+N", "high gain"], measure_quality(found.resamplers)))
    print(f"\n## Aliasing: a {ALIAS_TONE / 1000:g} kHz tone must vanish (output level dB re input; "
          f"✓ below {VANISHED_DB:g})\n")
    print(table(["resampler", "from 44.1 kHz", "from 48 kHz"], measure_aliasing(found.resamplers)))

    # 4. install size (files on disk of the distributions and what they pull in, numpy aside)
    print("\n## Install size (MB on disk, with requirements, numpy not counted)\n")
    rows = []
    for label, names in found.packages.items():
        size, members = installed_size(names)
        shown = ", ".join(members) if len(members) <= 4 else f"{len(members)} distributions"
        rows.append([label, f"{size / 1e6:,.1f}", shown])
    print(table(["option", "MB", "distributions"], rows))


if __name__ == "__main__":
    main()
