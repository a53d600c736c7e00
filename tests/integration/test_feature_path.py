"""The train step takes the feature path the plan picks: a cache only where it is read again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_fixtures import shared_home, shared_tiny_home  # noqa: F401 (fixture)
from voxtune.data.prepare import prepare
from voxtune.data.synth import copy_samples
from voxtune.spec import DataSpec
from voxtune.train.recipe import FEATURES

pytestmark = pytest.mark.usefixtures("shared_tiny_home")


@pytest.mark.slow
@pytest.mark.parametrize(("epochs", "cached"), [("1", False), ("3", True)],
                         ids=["one-pass-on-device", "three-passes-cached"])
def test_cpu_run_caches_log_mels_only_when_it_reads_clips_again(
        tmp_path: Path, epochs: str, cached: bool) -> None:
    prepared = tmp_path / "prepared"
    prepare(DataSpec(sources=[str(copy_samples(tmp_path / "samples"))], eval_fraction=0.25),
            prepared, language="en")
    done = subprocess.run(
        [sys.executable, "-m", "voxtune", "train", "--data", str(prepared), "--output",
         str(tmp_path / "run"), "--language", "en", "--model", "tiny-random-4s",
         "--epochs", epochs, "--batch-size", "4", "--grad-accum", "1"],
        capture_output=True, text=True, env={**os.environ, "VOXTUNE_HOME": str(shared_home())})
    assert done.returncode == 0, done.stderr[-3000:]
    cache = prepared / FEATURES
    if cached:
        assert f"features: cached in {cache}" in done.stdout
        assert list(cache.glob("*.pt"))
    else:
        assert "features: computed per batch on cpu" in done.stdout
        assert not cache.exists()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train_steps"] > 0 and metrics["eval_loss"] is not None
