"""Synthesize a small speech corpus with espeak-ng, for the demo, tests and benchmarks.

    voxtune data synth --output ./synth --count 60 --kind mixed

Writes `audio/*.wav` and `data.jsonl` in the upstream format (`audio_path`, `text`), so the
result is an ordinary `jsonl` source. Same arguments → same files (seeded, deterministic).

Without espeak-ng, `compose` says digit strings from the bundled word clips (data/digits/: each
digit word in every voice and speed of the demo, made by `bundle_digit_words`): a few hundred
kilobytes instead of the megabytes that thousands of whole clips would take.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import soundfile

from voxtune.data.audio import SAMPLE_RATE, to_mono_16k
from voxtune.errors import UserError
from voxtune.files import write_atomic

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things.",
    "She sells sea shells by the sea shore.",
    "The weather is cold and windy this morning.",
    "Open the window and let the fresh air in.",
    "My train leaves the station at half past nine.",
    "Turn left at the second traffic light.",
    "We need three apples, two pears and a lemon.",
    "The meeting has been moved to Thursday afternoon.",
    "Could you repeat that a little more slowly?",
    "The library closes early on Sundays.",
    "Put the red book on the top shelf.",
    "It takes twenty minutes to walk to the park.",
    "Remember to water the plants before you leave.",
    "The children are playing football in the garden.",
    "I would like a cup of tea with milk.",
    "The doctor will see you in ten minutes.",
    "Write your name at the top of the page.",
    "The bus was late again this evening.",
    "Switch off the lights when you go to bed.",
)
# espeak-ng voice variants give different pitch/timbre; speeds are words per minute.
VOICES = ("en-us", "en-us+f3", "en+m3", "en-us+f5", "en+m7", "en-us+m2")
SPEEDS = (140, 160, 180)
SAMPLES = "samples"  # package folder with a few committed clips, for machines without espeak-ng
DIGIT_WORDS = "digits"  # package folder: every digit word per voice and speed, for `compose`
SILENCE = 0.01  # peak level below which a word clip's edges count as silence
PAUSE_S = (0.03, 0.12)  # pause between composed words: espeak-ng's own is about that long


@dataclass(frozen=True)
class Utterance:
    text: str
    voice: str
    speed: int


def digit_string(rng: random.Random, length: int, words: tuple[str, ...] = DIGITS) -> str:
    return " ".join(rng.choice(words) for _ in range(length))


def digit_utterances(count: int, voices: tuple[str, ...], speeds: tuple[int, ...],
                     rng: random.Random, avoid: set[str], digits: tuple[int, int],
                     words: tuple[str, ...] = DIGITS,
                     containing: str | None = None) -> list[Utterance]:
    """`count` different utterances of digit strings (`digits` words long, drawn from `words`)
    not in `avoid`; with `containing`, only strings that hold that word."""
    chosen: dict[Utterance, None] = {}  # ordered set: same arguments, same corpus
    while len(chosen) < count:
        text = digit_string(rng, rng.randint(*digits), words)
        if text not in avoid and (containing is None or containing in text.split()):
            chosen.setdefault(Utterance(text, rng.choice(voices), rng.choice(speeds)))
    return list(chosen)


def plan(count: int, kind: str = "mixed", voices: tuple[str, ...] = VOICES,
         seed: int = 0) -> list[Utterance]:
    """Decide what to say, in which voice, at which speed — deterministic for a seed."""
    rng = random.Random(seed)
    utterances = []
    for index in range(count):
        sentence = kind == "sentences" or (kind == "mixed" and index % 2 == 0)
        text = SENTENCES[index // 2 % len(SENTENCES)] if sentence else digit_string(
            rng, rng.randint(3, 6))
        utterances.append(Utterance(text, voices[index % len(voices)], rng.choice(SPEEDS)))
    return utterances


def espeak() -> str:
    found = shutil.which("espeak-ng")
    if not found:
        raise UserError("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng; "
                        "macOS: brew install espeak-ng); or use the bundled clips with "
                        "`voxtune data samples --output DIR`")
    return found


def speak(utterance: Utterance, path: Path, binary: str) -> None:
    """Render one utterance to a WAV file (espeak-ng writes 22.05 kHz 16-bit mono)."""
    subprocess.run([binary, "-v", utterance.voice, "-s", str(utterance.speed), "-w", str(path),
                    utterance.text], check=True, capture_output=True)


def synthesize(output: Path, utterances: list[Utterance],
               on_clip: Callable[[], None] = lambda: None) -> Path:
    """Write the clips and data.jsonl; returns the JSONL path. Existing clips are reused.

    One espeak-ng process per clip, as many at once as there are CPUs (each takes ~25 ms, most
    of it starting up); `on_clip` is called as each clip is done (a progress bar).
    """
    binary = espeak()

    def render(target: Path, utterance: Utterance) -> None:
        temporary = target.with_suffix(".tmp.wav")
        speak(utterance, temporary, binary)
        temporary.replace(target)

    return _write_corpus(output, utterances, ".wav", render, on_clip, os.cpu_count() or 1)


def compose(output: Path, utterances: list[Utterance],
            on_clip: Callable[[], None] = lambda: None) -> Path:
    """`synthesize` without espeak-ng: each utterance is its words' bundled clips in its voice
    and speed, with short random pauses between them. Utterances must be digit strings in the
    voices and speeds of `bundled_digit_voices()`."""
    words = resources.files("voxtune.data") / DIGIT_WORDS
    cache: dict[str, np.ndarray] = {}

    def word(voice: str, speed: int, text: str) -> np.ndarray:
        name = word_file(voice, speed, text)
        if name not in cache:
            entry = words / name
            if not entry.is_file():
                raise UserError(f"no bundled clip of {text!r} in voice {voice} at {speed} wpm; "
                                f"the bundled voices and speeds: {bundled_digit_voices()}")
            samples, rate = soundfile.read(io.BytesIO(entry.read_bytes()), dtype="float32")
            cache[name] = to_mono_16k(samples, rate)
        return cache[name]

    def render(target: Path, utterance: Utterance) -> None:
        rng = random.Random(repr(utterance))  # the same pauses whenever it is composed again
        pieces = []
        for text in utterance.text.split():
            pieces += [word(utterance.voice, utterance.speed, text),
                       np.zeros(int(rng.uniform(*PAUSE_S) * SAMPLE_RATE), np.float32)]
        buffer = io.BytesIO()
        soundfile.write(buffer, np.concatenate(pieces[:-1]), SAMPLE_RATE, format="FLAC")
        write_atomic(target, buffer.getvalue())

    return _write_corpus(output, utterances, ".flac", render, on_clip, 1)


def _write_corpus(output: Path, utterances: list[Utterance], suffix: str,
                  render: Callable[[Path, Utterance], None], on_clip: Callable[[], None],
                  workers: int) -> Path:
    (output / "audio").mkdir(parents=True, exist_ok=True)
    rows = []

    def clip(index: int, utterance: Utterance) -> None:
        target = output / rows[index]["audio_path"]
        if not target.exists():
            render(target, utterance)
        on_clip()

    for index, utterance in enumerate(utterances):
        rows.append({"audio_path": f"audio/{index:05d}{suffix}", "text": utterance.text,
                     "voice": utterance.voice, "speed": utterance.speed})
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(clip, range(len(utterances)), utterances))  # list(): raise what failed
    manifest = output / "data.jsonl"
    write_atomic(manifest, "".join(json.dumps(row) + "\n" for row in rows).encode())
    return manifest


def word_file(voice: str, speed: int, word: str) -> str:
    return f"{voice}_{speed}_{word}.ogg"


def bundled_digit_voices() -> dict[str, list[int]]:
    """The voices of the bundled digit words, each with its speeds (words per minute)."""
    found: dict[str, set[int]] = {}
    for entry in (resources.files("voxtune.data") / DIGIT_WORDS).iterdir():
        voice, speed, _ = entry.name.rsplit("_", 2)
        found.setdefault(voice, set()).add(int(speed))
    return {voice: sorted(speeds) for voice, speeds in sorted(found.items())}


def bundle_digit_words(output: Path, voices: tuple[str, ...], speeds: tuple[int, ...]) -> None:
    """Speak every digit word in each voice and speed with espeak-ng, trimmed of the silence
    around it, as small Ogg/Opus files: how data/digits/ was made (the demo's voices)."""
    binary = espeak()
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for voice, speed, word in itertools.product(voices, speeds, DIGITS):
            spoken = Path(scratch) / "word.wav"
            speak(Utterance(word, voice, speed), spoken, binary)
            samples, rate = soundfile.read(spoken, dtype="float32")
            samples = to_mono_16k(samples, rate)
            voiced = np.flatnonzero(np.abs(samples) > SILENCE)
            margin = SAMPLE_RATE // 50  # 20 ms: keep the soft start and end of the word
            samples = samples[max(0, voiced[0] - margin):voiced[-1] + margin]
            # the lowest Opus bitrate: ~1 kB a word, and still a clear (robotic) voice
            soundfile.write(output / word_file(voice, speed, word), samples, SAMPLE_RATE,
                            format="OGG", subtype="OPUS", compression_level=1.0)


def copy_samples(output: Path) -> Path:
    """Copy the bundled sample clips (made with this module) to `output`; returns data.jsonl."""
    bundled = resources.files("voxtune.data") / SAMPLES
    output.mkdir(parents=True, exist_ok=True)
    for entry in bundled.iterdir():
        if entry.is_file():
            (output / entry.name).write_bytes(entry.read_bytes())
    return output / "data.jsonl"
