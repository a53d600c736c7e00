"""Synthetic speech: espeak-ng corpus, the bundled samples and digit words, and the error without
espeak-ng."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from importlib import resources
from pathlib import Path

import soundfile

from tests.helpers import requires_espeak
from voxtune.data.manifest import read_manifest
from voxtune.data.prepare import prepare
from voxtune.data.synth import (
    DIGIT_WORDS,
    VOICES,
    bundle_digit_words,
    bundled_digit_voices,
    compose,
    copy_samples,
    digit_utterances,
    plan,
)
from voxtune.demo import Recipe
from voxtune.spec import DataSpec


def test_plan_is_deterministic_and_varied() -> None:
    utterances = plan(24, "mixed", seed=3)
    assert utterances == plan(24, "mixed", seed=3)
    assert {u.voice for u in utterances} == set(VOICES)
    assert len({u.speed for u in utterances}) > 1
    digits = [u for u in utterances if u.text.split()[0] in {"zero", "one", "two", "three",
                                                              "four", "five", "six", "seven",
                                                              "eight", "nine"}]
    assert 0 < len(digits) < len(utterances)


@requires_espeak
def test_synth_cli_makes_a_preparable_corpus(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "voxtune", "data", "synth", "--output",
                           str(tmp_path / "synth"), "--count", "6"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "synth" / "data.jsonl").open()]
    assert len(rows) == 6
    info = soundfile.info(tmp_path / "synth" / rows[0]["audio_path"])
    assert info.duration > 0.5
    summary = prepare(DataSpec(sources=[str(tmp_path / "synth" / "data.jsonl")]),
                      tmp_path / "out", language="en")
    assert summary.kept == 6 and not summary.rejected


def test_missing_espeak_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "voxtune", "data", "synth", "--output",
                           str(tmp_path)], capture_output=True, text=True,
                          env={"PATH": str(tmp_path), "VOXTUNE_HOME": str(tmp_path)})
    assert done.returncode == 2
    assert "espeak-ng is not installed" in done.stderr and "Traceback" not in done.stderr


def test_bundled_samples_prepare_cleanly(tmp_path: Path) -> None:
    manifest = copy_samples(tmp_path / "samples")
    summary = prepare(DataSpec(sources=[str(manifest)]), tmp_path / "out", language="en")
    assert summary.kept == 12 and not summary.rejected
    assert len(read_manifest(tmp_path / "out", "eval")) >= 1


def test_bundled_digit_words_cover_the_demo() -> None:
    bundled = bundled_digit_voices()
    for voice in (*Recipe().voices, Recipe().held_out_voice):
        assert bundled[voice] == list(Recipe().speeds), voice


def test_compose_says_digit_strings_without_espeak(tmp_path: Path) -> None:
    recipe = Recipe()
    utterances = digit_utterances(8, recipe.voices, recipe.speeds, random.Random(0), set(),
                                  (1, 6))
    manifest = compose(tmp_path / "composed", utterances)
    assert compose(tmp_path / "composed", utterances) == manifest  # reused, same files
    rows = [json.loads(line) for line in manifest.open()]
    assert [row["text"] for row in rows] == [u.text for u in utterances]
    for row in rows:  # about as long as espeak-ng says them: 0.3-0.6 s a word
        words = len(row["text"].split())
        assert 0.25 * words < soundfile.info(tmp_path / "composed" / row["audio_path"]).duration \
            < 0.7 * words
    summary = prepare(DataSpec(sources=[str(manifest)]), tmp_path / "out", language="en")
    assert summary.kept == 8 and not summary.rejected


@requires_espeak
def test_bundled_digit_words_are_what_bundle_digit_words_makes(tmp_path: Path) -> None:
    bundle_digit_words(tmp_path, ("en-us",), (160,))
    bundled = resources.files("voxtune.data") / DIGIT_WORDS
    for made in sorted(tmp_path.iterdir()):
        again, rate = soundfile.read(made)
        committed, _ = soundfile.read(io.BytesIO((bundled / made.name).read_bytes()))
        assert rate == 16_000 and len(again) == len(committed), made.name
