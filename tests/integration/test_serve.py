"""`voxtune serve` over real HTTP, as its users call it: the official OpenAI client, `curl -F`,
Prometheus' own parser; base transcripts never cost a second copy memory cannot hold.

One tiny model is fully fine-tuned (the real `voxtune train`, 1 step) and served with the real
CLI in a subprocess, started the way the UI starts it (dying with its parent); every test checks
that no server is left once its parent is gone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import alive, speechlike, write_audio
from tests.train_fixtures import prepare_samples, shared_home
from voxtune.data.manifest import read_manifest
from voxtune.publish.card import openai_section

pytestmark = pytest.mark.slow
LISTENING = re.compile(r"on (http://127\.0\.0\.1:\d+)")
MODEL = "my-voice"  # --served-model-name
# The UI's way of starting a server (voxtune.processes.die_with_parent), in a parent of its own
# that a test can kill outright.
PARENT = textwrap.dedent("""
    import functools, os, signal, subprocess, sys
    from voxtune.processes import die_with_parent
    child = subprocess.Popen(sys.argv[1:], preexec_fn=functools.partial(
        die_with_parent, signal.SIGTERM, os.getpid()))
    print(child.pid, flush=True)
    sys.exit(child.wait())
""")


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
        capture_output=True, text=True, env={**os.environ, "VOXTUNE_HOME": str(shared_home()),
                                             # a random model never stops early: keep it short
                                             "VOXTUNE_SPEC__EVAL__MAX_NEW_TOKENS": "16"})
    assert done.returncode == 0, done.stderr[-3000:]
    return output


@pytest.fixture(scope="module")
def clip(prepared: Path) -> Path:
    return prepared / read_manifest(prepared, "eval")[0].audio_path


@contextmanager
def serving(model: Path, *flags: str) -> Iterator[str]:
    """The URL of `voxtune serve MODEL FLAGS`; afterwards its parent is killed with SIGKILL and
    the server must go with it."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, sys.executable, "-m", "voxtune", "serve", str(model),
         "--port", "0", "--served-model-name", MODEL, *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "VOXTUNE_HOME": str(shared_home())})
    assert parent.stdout is not None
    server = int(parent.stdout.readline())
    try:
        for line in parent.stdout:  # the port opens only once the model is loaded
            if found := LISTENING.search(line):
                yield found[1]
                break
        else:
            pytest.fail(f"voxtune serve exited with {parent.wait()} before listening")
    finally:
        parent.kill()  # SIGKILL: no chance to stop its child; the kernel must
        parent.wait(timeout=10)
        deadline = time.monotonic() + 30
        while alive(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = alive(server)
        if left:
            os.kill(server, signal.SIGKILL)
        assert not left, "the server outlived its parent"


def call(url: str, path: str) -> dict[str, object]:
    with urllib.request.urlopen(url + path, timeout=120) as response:
        return json.loads(response.read())


def curl(url: str, path: str, *fields: str) -> tuple[int, str]:
    """`curl -F` as a user types it: the status code and the body."""
    done = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", url + path,
                           *[part for field in fields for part in ("-F", field)]],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    body, _, code = done.stdout.rpartition("\n")
    return int(code), body


def test_openai_clients_and_curl_transcribe_and_metrics_count_them(
        full_run: Path, prepared: Path, clip: Path, tmp_path: Path) -> None:
    import openai

    too_long, noise = tmp_path / "long.wav", tmp_path / "notes.wav"
    write_audio(too_long, speechlike(5.0))  # the tiny-random-4s window is 4 s
    noise.write_text("not audio at all\n")
    big = tmp_path / "big.wav"
    write_audio(big, np.zeros(16_000 * 8, dtype=np.float32), subtype="FLOAT")  # 500 KiB

    with serving(full_run, "--base", "load", "--max-upload-mb", "0.25") as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        listed = {model.id: model for model in client.models.list()}
        assert set(listed) == {MODEL, "tiny-random-4s"}  # the tuned model and its base
        with clip.open("rb") as audio:
            tuned = client.audio.transcriptions.create(model=MODEL, file=audio, language="en")
        assert isinstance(tuned.text, str)
        with clip.open("rb") as audio:
            verbose = client.audio.transcriptions.create(
                model="tiny-random-4s", file=audio, response_format="verbose_json")
        assert verbose.duration == pytest.approx(read_manifest(prepared, "eval")[0].duration,
                                                 abs=0.01)
        with clip.open("rb") as audio:
            text = client.audio.transcriptions.create(model=MODEL, file=audio, language="en",
                                                      response_format="text")
        assert text == tuned.text  # the same greedy transcript, as plain text

        refused = {}
        for name, path, error in (("long", too_long, openai.BadRequestError),
                                  ("noise", noise, openai.BadRequestError),
                                  ("big", big, openai.APIStatusError)):
            with pytest.raises(error) as raised, path.open("rb") as audio:
                client.audio.transcriptions.create(model=MODEL, file=audio)
            refused[name] = raised.value
        assert "5.0 s" in refused["long"].message and "up to 4 s" in refused["long"].message
        assert "not readable audio" in refused["noise"].message
        assert refused["big"].status_code == 413 and "limit is 0.25 MiB" in refused["big"].message
        with pytest.raises(openai.NotFoundError, match="choose one of my-voice"), \
                clip.open("rb") as audio:
            client.audio.transcriptions.create(model="whisper-1", file=audio)

        # the model card's and the Space's snippet, as published, pointed at this server
        snippet = re.search(r"```python\n(.*?)```", openai_section(MODEL), re.S)[1]
        shutil.copyfile(clip, tmp_path / "speech.wav")
        ran = subprocess.run([sys.executable, "-c", snippet.replace("http://localhost:7861",
                                                                    url)],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0 and ran.stdout.strip(), ran.stderr

        code, body = curl(url, "/v1/audio/transcriptions", f"file=@{clip}", f"model={MODEL}",
                          "language=en")
        assert code == 200 and json.loads(body) == {"text": tuned.text}
        code, body = curl(url, "/v1/audio/transcriptions", f"file=@{noise}", f"model={MODEL}")
        assert code == 400 and json.loads(body)["error"]["code"] == "invalid_audio"
        code, body = curl(url, "/v1/audio/transcriptions", f"file=@{clip}", f"model={MODEL}",
                          "language=English")
        assert code == 400 and "not an ISO 639-1 code" in json.loads(body)["error"]["message"]
        code, body = curl(url, "/compare", f"file=@{clip}", "language=en")
        compared = json.loads(body)
        assert code == 200 and compared["tuned"] == tuned.text
        assert isinstance(compared["base"], str) and compared["base_model"] == "tiny-random-4s"

        with urllib.request.urlopen(url + "/readyz", timeout=10) as ready:
            assert ready.status == 200
        with urllib.request.urlopen(url + "/metrics", timeout=10) as scraped:
            families = {family.name: family
                        for family in text_string_to_metric_families(scraped.read().decode())}

    def value(family: str, sample: str, **labels: str) -> float:
        return sum(s.value for s in families[family].samples if s.name == sample
                   and all(s.labels.get(k) == v for k, v in labels.items()))

    endpoint = "/v1/audio/transcriptions"
    assert value("voxtune_serve_requests", "voxtune_serve_requests_total", endpoint=endpoint,
                 code="200") == 5  # client json, verbose, text; the card's snippet; curl
    assert value("voxtune_serve_requests", "voxtune_serve_requests_total", endpoint=endpoint,
                 code="400") == 4  # too long, noise twice, a language name
    assert value("voxtune_serve_errors", "voxtune_serve_errors_total",
                 reason="audio_too_long") == 1
    assert value("voxtune_serve_errors", "voxtune_serve_errors_total",
                 reason="model_not_found") == 1
    assert value("voxtune_serve_request_duration_seconds",
                 "voxtune_serve_request_duration_seconds_count", endpoint=endpoint) == 11
    audio = value("voxtune_serve_audio_seconds", "voxtune_serve_audio_seconds_total",
                  model=MODEL)
    # json, text, the snippet, curl, compare (verbose asked the base)
    assert audio == pytest.approx(5 * verbose.duration, rel=1e-3)
    assert value("voxtune_serve_queue_depth", "voxtune_serve_queue_depth") == 0
    assert value("voxtune_serve_batch_size", "voxtune_serve_batch_size_count") >= 6
    assert value("voxtune_serve_audio_seconds", "voxtune_serve_audio_seconds_total",
                 model="tiny-random-4s") == pytest.approx(2 * verbose.duration, rel=1e-3)


@pytest.mark.parametrize(("flag", "base_from"), [("skip", "skip"), ("auto", "load")])
def test_full_weights_load_the_base_only_when_asked_or_when_memory_holds_it(
        full_run: Path, clip: Path, flag: str, base_from: str) -> None:
    with serving(full_run, "--base", flag) as url:
        health = call(url, "/healthz")
        assert health["base"] == base_from, health
        assert health["base_model"] == "tiny-random-4s"
        models = [model["id"] for model in call(url, "/v1/models")["data"]]
        code, body = curl(url, "/compare", f"file=@{clip}", "language=en")
    assert code == 200
    result = json.loads(body)
    assert isinstance(result["tuned"], str)
    if base_from == "skip":
        assert result["base"] is None  # no transcript rather than a second copy
        assert models == [MODEL]
    else:
        assert isinstance(result["base"], str)
        assert models == [MODEL, "tiny-random-4s"]
