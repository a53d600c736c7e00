"""Synthetic speech: espeak-ng corpus, the bundled samples, and the error without espeak-ng."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import soundfile

from tests.helpers import requires_espeak
from voxtune.data.manifest import read_manifest
from voxtune.data.prepare import prepare
from voxtune.data.synth import VOICES, copy_samples, plan
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
