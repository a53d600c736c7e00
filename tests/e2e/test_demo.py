"""`voxtune demo` (what `make demo` runs): the whole local pipeline, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_demo_runs_the_pipeline_and_says_where_results_are(voxtune_home: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "voxtune", "demo"], capture_output=True,
                          text=True, env={**os.environ, "VOXTUNE_HOME": str(voxtune_home)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = voxtune_home / "runs" / "demo"
    assert f"run folder:  {run}" in done.stdout
    assert "WER" in done.stdout and "smoke-test model" in done.stdout
    status = json.loads((run / "status.json").read_text())
    assert status["phase"] == "Succeeded"
    assert set(status["metrics"]) == {"wer", "cer", "base_wer", "base_cer"}
    assert (run / "final" / "adapter_model.safetensors").exists()
    assert (run / "prepared" / "manifest.jsonl").read_text().count("\n") >= 12
    published = voxtune_home / "registry" / "demo" / "1"
    assert f"published:   {published}" in done.stdout
    assert {"README.md", "adapter_model.safetensors", "metrics.json", "space", "dataset"} <= {
        p.name for p in published.iterdir()}
    assert (published / "space" / "app.py").exists()
    # running it again is idempotent: every step is skipped
    again = subprocess.run([sys.executable, "-m", "voxtune", "demo"], capture_output=True,
                           text=True, env={**os.environ, "VOXTUNE_HOME": str(voxtune_home)})
    assert again.returncode == 0 and again.stdout.count("already succeeded") == 3
