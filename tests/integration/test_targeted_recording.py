"""Targeted recording end to end without a browser: `voxtune data prompts | calibrate` as users run
them (real subprocesses, real espeak-ng speech, the tiny random model), and the UI's handlers
against a real `voxtune serve` — calibrate, see the words and why the next prompt was chosen,
check them with a run's model, start a round for the words still wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import requires_espeak, serving
from tests.train_fixtures import shared_home
from voxtune.errors import ExitCode
from voxtune.ui.phrases import PHRASES

pytestmark = [pytest.mark.slow, pytest.mark.espeak, requires_espeak]
TEXT = """Kubernetes
Helm chart
kubectl

The controller reconciles every FineTuneRun. The operator watches the Jobs and their Pods.
"""


def voxtune(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1",
                   **({"VOXTUNE_HOME": str(home)} if home else {})}
    return subprocess.run([sys.executable, "-m", "voxtune", *args], capture_output=True,
                          text=True, env=environment, timeout=600)


def speak(path: Path, text: str) -> Path:
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), text], check=True)
    return path


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_prompts_prints_one_prompt_per_line_users_text_first(text_file: Path) -> None:
    done = voxtune("data", "prompts", "--text", str(text_file), "--count", "5")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "Kubernetes, Helm chart, kubectl.", "The controller reconciles every FineTuneRun.",
        "The operator watches the Jobs and their Pods.", *PHRASES["en"][:2]]
    calibration = voxtune("data", "prompts", "--text", str(text_file), "--calibration",
                          "--count", "2", "--language", "de")
    # the most new words first; a tie goes to the earlier prompt
    assert calibration.stdout.splitlines() == [
        "The operator watches the Jobs and their Pods.", "Kubernetes, Helm chart, kubectl."]


@pytest.mark.parametrize("args, message", [
    (["--text", "missing.txt"], "--text missing.txt: no such file"),
    (["--language", "xx"], "--language xx: built-in sentences exist for en"),
    (["--count", "0"], "--count must be at least 1"),
])
def test_prompts_refuses_bad_input_in_one_line(args: list[str], message: str) -> None:
    done = voxtune("data", "prompts", *args)
    assert done.returncode == ExitCode.USER_ERROR
    assert message in done.stderr and "Traceback" not in done.stderr


def test_calibrate_prints_the_error_report_and_the_next_prompts(tmp_path: Path,
                                                               text_file: Path) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    for number, prompt in enumerate(["The operator watches the Jobs and their Pods.",
                                     "Kubernetes, Helm chart, kubectl."]):
        speak(clips / f"take{number}.wav", prompt)
        (clips / f"take{number}.txt").write_text(prompt + "\n", encoding="utf-8")
    (clips / "stray.wav").write_bytes(b"no transcript beside it")
    (clips / "broken.wav").write_bytes(b"not audio at all")
    (clips / "broken.txt").write_text("Helm chart.", encoding="utf-8")
    done = voxtune("data", "calibrate", "--clips", str(clips), "--text", str(text_file),
                   "--model", "tiny-random-4s", "--count", "3", home=shared_home())
    assert done.returncode == 0, done.stderr[-2000:]
    report, _, following = done.stdout.partition("next prompts (best first):")
    assert report.startswith("2 calibration clips, WER ")
    assert "kubernetes" in report and "wrong 1 of 1:" in report  # a random model: all wrong
    numbered = [line for line in following.splitlines() if line[:4].strip().endswith(".")]
    assert len(numbered) == 3
    assert "Kubernetes, Helm chart, kubectl." not in following  # recorded: never proposed
    assert following.count("why: contains '") >= 1
    assert "stray.wav: no stray.txt" in done.stderr and "broken.wav:" in done.stderr
    missing = voxtune("data", "calibrate", "--clips", str(tmp_path / "none"))
    assert missing.returncode == ExitCode.USER_ERROR and "no such folder" in missing.stderr


# --- the UI's handlers, transcribed by a real `voxtune serve` -------------------------------


@pytest.fixture(scope="module")
def tiny_server() -> Iterator[str]:
    from voxtune.models.presets import ensure_tiny_random

    # a random model, with no base to compare with: what it writes stands for the base's words
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VOXTUNE_HOME", str(shared_home()))  # its model is built once per process
        with serving(ensure_tiny_random(4), "--base", "skip") as url:
            yield url


def test_calibrate_choose_check_and_record_more_through_the_handlers(
        tiny_server: str, voxtune_home: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from voxtune.client import Client
    from voxtune.ui import handlers, views
    from voxtune.ui.demo import DemoServers
    from voxtune.ui.settings import UiSettings

    monkeypatch.setenv("VOXTUNE_UI_DEMO_URL", tiny_server)  # as on a cluster: the demo service
    ctx = handlers.Context(Client("local"), UiSettings(), voxtune_home,
                           DemoServers(voxtune_home / "ui"))
    view = handlers.start_targeted(ctx, "ana", TEXT, "en", 2, "")
    assert view.calibrating and view.state.prompts == [
        "The operator watches the Jobs and their Pods.", "Kubernetes, Helm chart, kubectl."]
    assert view.prompt == view.state.prompts[0] and "calibration prompt 1 of 2" in view.why
    with pytest.raises(handlers.UserError, match="as shown"):
        handlers.save_calibration_take(ctx, "ana", str(speak(tmp_path / "x.wav", "hello")),
                                       "something else")
    for number, prompt in enumerate(view.state.prompts):
        row = handlers.save_calibration_take(
            ctx, "ana", str(speak(tmp_path / f"{number}.wav", prompt)), prompt)
        assert row["heard"] is not None
    view = handlers.targeted(ctx, "ana")
    assert not view.calibrating and view.report.clips == 2 and view.report.errors
    assert view.prompt not in view.state.prompts and view.why.startswith("contains '")
    page = views.calibration_report(view)
    assert "2 of 2 prompts recorded" in page and "| word | wrong | heard |" in page
    # skipping moves on, and the skipped prompt is not proposed again this round
    skipped = view.prompt
    assert handlers.skip_targeted(ctx, "ana", skipped).prompt not in (skipped, None)
    # Runs: check the words with a run's model (here the demo service), then record more
    found = handlers.rescore(ctx, "ana", "ana-first")
    assert {outcome.word for outcome in found} == {e.word for e in view.report.errors}
    assert handlers.checked_words(ctx, "ana", "ana-first") == found
    text = views.calibration_outcomes("ana-first", found)
    assert f"of {len(found)} calibration words fixed" in text
    again = handlers.record_more(ctx, "ana", "ana-first")
    assert again.state.round_of == "ana-first" and again.prompt is not None
    assert "still gets wrong" in views.calibration_report(again)
    handlers.stop_targeted(ctx, "ana")
    assert handlers.targeted(ctx, "ana").prompt is None
    # calibration clips are not training data: the workspace holds none of them
    assert ctx.workspace("ana").clips() == {}


def test_a_local_runs_model_checks_the_calibration_words(voxtune_home: Path,
                                                         tmp_path: Path) -> None:
    """Without a demo service the UI serves the run's own folder (`voxtune serve RUN_DIR`)."""
    from tests.train_fixtures import prepare_samples
    from voxtune.client import Client
    from voxtune.run.layout import RunFolder
    from voxtune.ui import handlers
    from voxtune.ui.calibration import State
    from voxtune.ui.demo import DemoServers
    from voxtune.ui.settings import UiSettings

    run = RunFolder.named(voxtune_home, "local-voice")
    done = voxtune("train", "--data", str(prepare_samples(tmp_path)), "--output", str(run.path),
                   "--model", "tiny-random-4s", "--mode", "full", "--max-steps", "1",
                   "--precision", "fp32", "--language", "en", home=voxtune_home)
    assert done.returncode == 0, done.stderr[-2000:]
    ctx = handlers.Context(Client("local"), UiSettings(), voxtune_home,
                           DemoServers(voxtune_home / "ui"))
    store = handlers.calibration_of(ctx, "local")
    prompt = "The operator watches the Jobs and their Pods."
    store.start(State(text=TEXT, prompts=[prompt], model="base", active=True))
    store.add(speak(tmp_path / "take.wav", prompt), prompt, "the operator watches jobs")
    try:
        with pytest.raises(handlers.UserError, match="no trained model"):
            handlers.rescore(ctx, "local", "no-such-run")
        found = handlers.rescore(ctx, "local", "local-voice")
    finally:
        ctx.demo.stop()
    # the base left out the second "the", "and", "their" and "pods"
    assert {outcome.word for outcome in found} == {"the", "and", "their", "pods"}
    assert all(outcome.after is not None for outcome in found)  # heard by the tuned model
    tuned = store.run_transcripts()["local-voice"]
    assert list(tuned) == [next(iter(store.clips().values()))["id"]]
