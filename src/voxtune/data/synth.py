"""Synthesize a small speech corpus with espeak-ng, for the demo, tests and benchmarks.

    voxtune data synth --output ./synth --count 60 --kind mixed

Writes `audio/*.wav` and `data.jsonl` in the upstream format (`audio_path`, `text`), so the
result is an ordinary `jsonl` source. Same arguments → same files (seeded, deterministic).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

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


@dataclass(frozen=True)
class Utterance:
    text: str
    voice: str
    speed: int


def digit_string(rng: random.Random, length: int) -> str:
    return " ".join(rng.choice(DIGITS) for _ in range(length))


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


def synthesize(output: Path, utterances: list[Utterance]) -> Path:
    """Write the clips and data.jsonl; returns the JSONL path. Existing clips are reused."""
    binary = espeak()
    (output / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for index, utterance in enumerate(utterances):
        relative = f"audio/{index:05d}.wav"
        target = output / relative
        if not target.exists():
            temporary = target.with_suffix(".tmp.wav")
            speak(utterance, temporary, binary)
            temporary.replace(target)
        rows.append({"audio_path": relative, "text": utterance.text,
                     "voice": utterance.voice, "speed": utterance.speed})
    manifest = output / "data.jsonl"
    write_atomic(manifest, "".join(json.dumps(row) + "\n" for row in rows).encode())
    return manifest


def copy_samples(output: Path) -> Path:
    """Copy the bundled sample clips (made with this module) to `output`; returns data.jsonl."""
    bundled = resources.files("voxtune.data") / SAMPLES
    output.mkdir(parents=True, exist_ok=True)
    for entry in bundled.iterdir():
        if entry.is_file():
            (output / entry.name).write_bytes(entry.read_bytes())
    return output / "data.jsonl"
