"""Evaluation in a real train run: the general set ("did it forget?") scored for the base and
the tuned model, in metrics.json and in what `voxtune status` reads.

One tiny LoRA run (1 step, the real `voxtune train` in a subprocess): it is
the only way to see the general set go through prepare, base and tuned transcription, and the
metrics file together.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.train_fixtures import prepare_samples, shared_home
from voxtune.data.manifest import read_manifest
from voxtune.run.layout import RunFolder
from voxtune.run.status import headline_metrics

pytestmark = pytest.mark.slow


def hub_format_copy(prepared: Path, folder: Path) -> Path:
    """Some prepared clips as a local Hub-format dataset (parquet, Audio column of FLAC bytes),
    the way a LibriSpeech or FLEURS subset is stored."""
    from datasets import Audio, Dataset

    clips = read_manifest(prepared, "train")[:2]
    rows = {"audio": [{"bytes": (prepared / clip.audio_path).read_bytes(),
                       "path": Path(clip.audio_path).name} for clip in clips],
            "transcription": [clip.text for clip in clips]}
    dataset = Dataset.from_dict(rows).cast_column("audio", Audio(decode=False))
    (folder / "data").mkdir(parents=True)
    dataset.to_parquet(folder / "data" / "test-00000-of-00001.parquet")
    return folder


def test_the_general_set_is_scored_for_base_and_tuned(tmp_path: Path) -> None:
    prepared = prepare_samples(tmp_path)
    general = hub_format_copy(prepared, tmp_path / "general-speech")
    spec = tmp_path / "spec.yaml"
    # a few tokens per transcript: the tiny model babbles, and only the bookkeeping is tested
    spec.write_text(yaml.safe_dump({"name": "forget", "eval": {"max_new_tokens": 8, "general": {
        "dataset": str(general), "split": "test", "text_column": "transcription"}}}))
    output = tmp_path / "runs" / "forget"
    done = subprocess.run(
        [sys.executable, "-m", "voxtune", "train", "--spec", str(spec), "--data", str(prepared),
         "--output", str(output), "--model", "tiny-random-4s", "--max-steps", "1",
         "--precision", "fp32", "--language", "en"],
        capture_output=True, text=True, env={**os.environ, "VOXTUNE_HOME": str(shared_home())})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "base model, general set: WER" in done.stdout
    assert "tuned model, general set: WER" in done.stdout

    metrics = json.loads(RunFolder(output).metrics.read_text())
    assert metrics["general_clips"] == 2 and metrics["general_dataset"] == str(general)
    for key in ("general_wer", "general_cer", "base_general_wer", "base_general_cer"):
        assert isinstance(metrics[key], float), key
    assert metrics["general_normalizer"] == metrics["normalizer"]
    assert "EnglishTextNormalizer" in metrics["normalizer"]
    assert metrics["generation"]["max_new_tokens"] == 8  # the spec's fixed limit, recorded
    # the run's status (CLI, UI, FineTuneRun) carries both sets' numbers
    headline = headline_metrics(RunFolder(output).metrics)
    assert {"wer", "base_wer", "general_wer", "base_general_wer"} <= headline.keys()


def test_the_prepare_step_prepares_the_general_set_beside_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from voxtune.cli import main
    from voxtune.data.synth import copy_samples
    from voxtune.spec import RunSpec

    prepared = prepare_samples(tmp_path / "source")
    general = hub_format_copy(prepared, tmp_path / "general-speech")
    run = RunFolder(tmp_path / "runs" / "forget")
    run.path.mkdir(parents=True)
    def spec(name: str, text_column: str) -> RunSpec:
        return RunSpec(name=name, language="en", data={"sources": [str(samples)]}, eval={
            "general": {"dataset": str(general), "split": "test", "text_column": text_column}})

    samples = copy_samples(tmp_path / "samples")
    run.write_spec(spec("forget", "transcription"))
    assert main(["prepare", "--run-dir", str(run.path)]) == 0
    assert sorted(clip.text for clip in read_manifest(run.general)) == sorted(
        clip.text for clip in read_manifest(prepared, "train")[:2])
    # a general set with nothing usable stops the run here, before any training
    broken = RunFolder(tmp_path / "runs" / "broken")
    broken.path.mkdir()
    broken.write_spec(spec("broken", "nope"))
    assert main(["prepare", "--run-dir", str(broken.path)]) == 2
    assert "no column nope" in capsys.readouterr().err
