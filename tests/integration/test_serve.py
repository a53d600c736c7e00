"""`voxtune serve` over real HTTP: base transcripts never cost a second copy memory cannot hold.

One tiny model is fully fine-tuned (the real `voxtune train`, 1 step) and served with the real
CLI in a subprocess; /healthz and /transcribe are called with urllib.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.train_fixtures import prepare_samples, shared_home
from voxtune.data.manifest import read_manifest

pytestmark = pytest.mark.slow
LISTENING = re.compile(r"on (http://127\.0\.0\.1:\d+)")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("serve-data")
    return prepare_samples(folder)


@pytest.fixture(scope="module")
def full_run(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("runs") / "full"
    done = subprocess.run(
        [sys.executable, "-m", "voxtune", "train", "--data", str(prepared), "--output",
         str(output), "--model", "tiny-random-4s", "--mode", "full", "--max-steps", "1",
         "--precision", "fp32", "--language", "en"],
        capture_output=True, text=True, env={**os.environ, "VOXTUNE_HOME": str(shared_home())})
    assert done.returncode == 0, done.stderr[-3000:]
    return output


@contextmanager
def serving(model: Path, *flags: str) -> Iterator[str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "voxtune", "serve", str(model), "--port", "0", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "VOXTUNE_HOME": str(shared_home())})
    try:
        assert server.stdout is not None
        for line in server.stdout:  # the port opens only once the model is loaded
            if found := LISTENING.search(line):
                yield found[1]
                break
        else:
            pytest.fail(f"voxtune serve exited with {server.wait()} before listening")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def call(url: str, path: str, body: bytes | None = None) -> dict[str, object]:
    with urllib.request.urlopen(urllib.request.Request(url + path, data=body), timeout=120) as r:
        return json.loads(r.read())


@pytest.mark.parametrize(("flag", "base_from"), [("skip", "skip"), ("load", "load"),
                                                 ("auto", "load")])
def test_full_weights_load_the_base_only_when_asked_or_when_memory_holds_it(
        full_run: Path, prepared: Path, flag: str, base_from: str) -> None:
    clip = prepared / read_manifest(prepared, "eval")[0].audio_path
    with serving(full_run, "--base", flag) as url:
        health = call(url, "/healthz")
        assert health["base"] == base_from, health
        assert health["base_model"] == "tiny-random-4s"
        result = call(url, "/transcribe?language=en", clip.read_bytes())
    assert isinstance(result["tuned"], str)
    if base_from == "skip":
        assert result["base"] is None  # no transcript rather than a second copy
    else:
        assert isinstance(result["base"], str)
