"""`voxtune run`: steps in order in VOXTUNE_HOME/runs/<name>, status.json, idempotent resubmit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from voxtune.data.synth import copy_samples
from voxtune.errors import UserError
from voxtune.executors.local import LocalExecutor
from voxtune.spec import load_user_spec


def spec_file(tmp_path: Path, **fields) -> Path:
    manifest = copy_samples(tmp_path / "samples")
    document = {"name": "my-run", "language": "en", "steps": ["prepare"],
                "data": {"sources": [str(manifest)]}, **fields}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_run_writes_run_folder_and_status(tmp_path: Path, voxtune_home: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "voxtune", "run", str(spec_file(tmp_path))],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    run = voxtune_home / "runs" / "my-run"
    status = json.loads((run / "status.json").read_text())
    assert status["phase"] == "Succeeded"
    assert status["steps"]["prepare"]["state"] == "succeeded"
    assert "kept 12 clips" in (run / "logs" / "prepare.log").read_text()
    assert (run / "prepared" / "manifest.jsonl").exists()
    assert load_user_spec(run / "spec.yaml") == load_user_spec(tmp_path / "run.yaml")

    listing = subprocess.run([sys.executable, "-m", "voxtune", "list"], capture_output=True,
                             text=True)
    assert "my-run" in listing.stdout and "Succeeded" in listing.stdout


def test_resubmit_is_a_noop_and_a_changed_spec_is_refused(tmp_path: Path) -> None:
    executor = LocalExecutor()
    spec = load_user_spec(spec_file(tmp_path))
    executor.run(spec, echo=lambda line: None)
    lines: list[str] = []
    assert executor.run(spec, echo=lines.append).phase == "Succeeded"
    assert lines == ["[prepare] already succeeded, skipping"]
    changed = spec.model_copy(update={"language": "sv"})
    with pytest.raises(UserError, match="already exists with a different spec"):
        executor.submit(changed)


def test_failed_step_reports_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"audio_path": "missing.wav", "text": "x"}\n')
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"name": "bad-run", "steps": ["prepare"],
                                    "data": {"sources": [str(bad)]}}))
    status = LocalExecutor().run(load_user_spec(path), echo=lambda line: None)
    assert status.phase == "Failed"
    assert status.steps["prepare"].exit_code == 2
    assert "bad input or config" in status.message and "no usable clips" in status.message
