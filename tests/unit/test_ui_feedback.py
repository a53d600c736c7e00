"""What tells a person where a run stands, without a browser: the progress lines and the time
left, the run page's bar, per-clip marks and error-first failures, `voxtune status`'s summary,
stale datasets, re-takes, and the run actions on the local backend (real run folders)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import jiwer
import pytest
from gradio.components.native_plot import NativePlot

from tests.conftest import marked_processes
from tests.helpers import speechlike, write_audio
from voxtune.cli.runs import summary
from voxtune.client import Client
from voxtune.data.calibrate import ErrorReport
from voxtune.errors import UserError
from voxtune.run.layout import RunFolder
from voxtune.run.process import claim_run_folder, failure_message
from voxtune.run.progress import (
    PhaseProgress,
    describe,
    format_duration,
    parse,
    phase,
    report,
)
from voxtune.run.status import Publication, RunStatus, StepStatus
from voxtune.spec import RunSpec
from voxtune.ui import handlers, sources, views
from voxtune.ui.calibration import State
from voxtune.ui.demo import DemoServers
from voxtune.ui.handlers import Context, PublishForm
from voxtune.ui.settings import UiSettings

TRAINING = PhaseProgress(phase="train", done=120, total=300, elapsed_s=45.0, remaining_s=67.5)


def running(**fields: object) -> RunStatus:
    return RunStatus(**{"name": "alice-voice", "phase": "Training", "step": "train", "steps": {
        "prepare": StepStatus(state="succeeded", started="2026-03-01T10:00:00+00:00"),
        "train": StepStatus(state="running"), "publish": StepStatus()},
        "progress": "1/3 train 120/300", "current": TRAINING, **fields})


# --- the progress lines ------------------------------------------------------------------------


def test_a_phase_reports_its_pace_from_where_it_resumed(capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100.0, 110.0, 130.0])
    monkeypatch.setattr("voxtune.run.progress.time.monotonic", lambda: next(clock))
    report("train-resumed", 40, 100)  # a resumed run starts at step 40
    report("train-resumed", 50, 100)
    report("train-resumed", 100, 100)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["progress train-resumed 40/100 elapsed=0.0s",
                     "progress train-resumed 50/100 elapsed=10.0s remaining=50.0s",
                     "progress train-resumed 100/100 elapsed=30.0s"]
    assert parse("\n".join(lines[:2]), "train") == PhaseProgress(
        phase="train-resumed", done=50, total=100, elapsed_s=10.0, remaining_s=50.0)


def test_an_evaluation_reports_each_batch_with_the_time_left(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Not only 0/40 and 40/40: each batch moves the bar; two ranks' equal shares count twice."""
    clock = iter([0.0, 4.0, 8.0, 9.0])
    monkeypatch.setattr("voxtune.run.progress.time.monotonic", lambda: next(clock))
    with phase("eval-two-ranks", 40, scale=2) as advance:
        advance(8)  # this rank's first batch of its 20 clips
        advance(8)
    assert capsys.readouterr().out.splitlines() == [
        "progress eval-two-ranks 0/40 elapsed=0.0s",
        "progress eval-two-ranks 16/40 elapsed=4.0s remaining=6.0s",
        "progress eval-two-ranks 32/40 elapsed=8.0s remaining=2.0s",
        "progress eval-two-ranks 40/40 elapsed=9.0s"]


def test_old_progress_lines_and_other_output() -> None:
    assert parse("loss 1.2\nprogress 3/6\n", "train") == PhaseProgress(phase="train", done=3,
                                                                     total=6)
    assert parse("no progress here\nprogress: 3/6", "train") is None


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0 s"), (45, "45 s"), (200, "3 min 20 s"),
                                                (7500, "2 h 5 min")])
def test_durations_read_as_people_say_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_an_ended_run_has_nothing_left_to_estimate() -> None:
    assert running().current == TRAINING
    for run_phase in ("Succeeded", "Failed", "Cancelled"):
        ended = RunStatus.model_validate({**running().model_dump(), "phase": run_phase})
        assert ended.current is None
        assert "left" not in views.progress_bar(ended) and "left" not in summary(ended)


# --- the run page ---------------------------------------------------------------------------------


def test_the_bar_shows_the_phase_and_the_time_left_not_a_clock() -> None:
    bar = views.progress_bar(running())
    assert 'value="47"' in bar  # 1 of 3 steps, then 40% of the second
    assert "step 2 of 3 (train): training 120/300" in bar
    assert "45 s elapsed · about 1 min 8 s left" in bar and "UTC" not in bar
    assert handlers.progress(running()) == "1/3 train 120/300, ~1 min 8 s left"
    unknown = running(current=TRAINING.model_copy(update={"remaining_s": None}))
    assert "estimating the time left" in views.progress_bar(unknown)


def test_score_and_loss_frames_are_numeric_however_the_page_was_reached() -> None:
    # the empty WER/CER chart: an empty frame made Gradio type the y-axis as categories
    plot = NativePlot(x="score", y="percent")
    for metrics in ({}, {"wer": 0.2, "base_wer": 0.5, "cer": 0.1, "base_cer": 0.3}):
        assert plot.postprocess(views.score_bars(metrics)).datatypes["percent"] == \
            "quantitative"
    page = handlers.RunPage(running(), "", {}, [])
    assert plot.postprocess(views.loss_curve(page)).datatypes == {
        "step": "quantitative", "value": "quantitative", "metric": "nominal"}


@pytest.mark.parametrize(("hypothesis", "marked"), [
    ("the quick brown fox", "the quick brown fox"),
    ("The quick, brown fox.", "The quick, brown fox."),  # case and punctuation aside
    ("the quick brawn fox", 'the quick <mark class="vt-wrong">brawn</mark> fox'),
    ("the brown fox", 'the <mark class="vt-missing">[…]</mark> brown fox'),
    ("", '<mark class="vt-missing">(nothing)</mark>'),
    ("a <b>", '<mark class="vt-wrong">a &lt;b&gt;</mark>'),  # escaped
], ids=["same", "case-punctuation", "substituted", "missing", "empty", "escaped"])
def test_per_clip_errors_are_marked(hypothesis: str, marked: str) -> None:
    reference = "the quick brown fox" if hypothesis != "a <b>" else "x"
    assert views.marked(reference, hypothesis) == marked


def test_the_marked_words_are_the_edits_wer_counts() -> None:
    # WER's minimal alignment: "three" inserted, one → "two", "two" deleted (3 edits);
    # difflib's longest-block matching made it 4
    reference, hypothesis = "one one two", "three two one"
    measured = jiwer.process_words(reference, hypothesis)
    shown = views.marked(reference, hypothesis)
    marked_words = sum(len(part.split()) for part in re.findall(
        r'<mark class="vt-wrong">(.*?)</mark>', shown))
    assert marked_words == measured.substitutions + measured.insertions == 2
    assert shown.count("[…]") == measured.deletions == 1
    assert shown.endswith("one <mark class=\"vt-missing\">[…]</mark>")


def test_the_per_clip_table() -> None:
    table = views.samples_table([{"id": "c1", "reference": "one two", "base": "one too",
                                  "tuned": "one two"}])
    assert "<td>c1</td><td>one two</td>" in table and "vt-wrong\">too</mark>" in table
    assert "appear here" in views.samples_table([])


def test_a_failure_shows_the_error_before_the_retries() -> None:
    tail = "\n".join([*(f"Retrying ({n}/6) in 2s…" for n in range(6)),
                      "error: Hub repository alice/x: 403 Forbidden", "exit"])
    page = handlers.RunPage(RunStatus(name="alice-x", phase="Failed", reason="StepFailed",
                                      message=failure_message("publish", 2, tail)), "", {}, [])
    first, *rest = page.explanation.splitlines()
    assert first == ("StepFailed: publish failed (bad input or config): error: Hub repository "
                     "alice/x: 403 Forbidden")
    assert "Retrying (5/6) in 2s…" in rest  # the whole tail is still there, after it


def test_voxtune_status_reads_as_a_summary() -> None:
    status = running(metrics={"wer": 0.12, "base_wer": 0.31, "cer": 0.05},
                     published=Publication(name="alice-voice", model="/r/alice-voice/1",
                                           layout="adapter", version=1))
    assert summary(status).splitlines() == [
        "alice-voice: Training",
        "  [########............] training 120/300 (40%), 45 s elapsed, about 1 min 8 s left",
        "  steps: prepare succeeded, train running, publish pending",
        "  base → tuned: WER 31.0% → 12.0%, CER - → 5.0%",
        "  published: alice-voice → /r/alice-voice/1",
        f"  updated {status.updated}"]
    assert describe(TRAINING) in summary(status)
    forgot = running(metrics={"wer": 0.12, "base_wer": 0.31, "general_wer": 0.061,
                              "base_general_wer": 0.052, "merged_wer": 0.121})
    assert "  general set, base → tuned: WER 5.2% → 6.1%" in summary(forgot).splitlines()
    assert "  merged model: WER 12.1%" in summary(forgot).splitlines()


# --- the workspace -----------------------------------------------------------------------------


def local_ctx(home: Path, **settings: object) -> Context:
    return Context(Client("local", home=home), UiSettings(**settings), home,
                   DemoServers(home / "ui"))


def test_a_dataset_older_than_the_clips_is_refused_at_launch(voxtune_home: Path) -> None:
    ctx = local_ctx(voxtune_home)
    workspace = ctx.workspace("local")
    for index in range(2):
        workspace.add(write_audio(voxtune_home / f"in{index}.wav", speechlike(1.0, seed=index)),
                      f"clip {index}", "en")
    workspace.build("en")
    assert not workspace.stale() and sources.dataset_source(ctx, "local")
    workspace.add(write_audio(voxtune_home / "late.wav", speechlike(1.2, seed=5)), "late", "en")
    assert workspace.stale()
    assert "changed since the dataset was built" in views.dataset_total(workspace.clips(), True)
    with pytest.raises(UserError, match=r"now 3 clips\): rebuild it first"):
        sources.dataset_source(ctx, "local")


def test_a_new_take_of_a_sentence_replaces_its_clip(voxtune_home: Path) -> None:
    workspace = local_ctx(voxtune_home).workspace("local")
    audio = write_audio(voxtune_home / "take.wav", speechlike(1.0))
    first = workspace.add(audio, "Read this.", "en", name="recording.wav")
    assert workspace.take_of("Read this.") == first["id"]
    workspace.add(audio, "Read this.", "en", name="recording.wav",
                  clip_id=workspace.take_of("Read this."))
    assert list(workspace.clips()) == [first["id"]]
    assert views.record_count(workspace.clips(), 1, 30).startswith(
        "Sentence 2 of 30 · **1 recorded**, 1 clips in all (0.0 min) — ~50 phrases")


def test_the_counter_says_where_targeted_recording_stands() -> None:
    state = State(prompts=["one", "two"], active=True)
    calibrating = handlers.Targeted(state, 1, "two", "", ErrorReport({}, 0, 0.0))
    assert views.record_count({}, 4, 30, calibrating).startswith("Calibration prompt 2 of 2 ·")
    ranked = handlers.Targeted(state, 2, "three", "contains 'x'", ErrorReport({}, 0, 0.0))
    assert views.record_count({}, 4, 30, ranked).startswith("Targeted prompt ·")
    off = handlers.Targeted(State(prompts=["one"]), 1, None, "", ErrorReport({}, 0, 0.0))
    assert views.record_count({}, 4, 30, off).startswith("Sentence 5 of 30 ·")


# --- runs on the local backend ------------------------------------------------------------------


def finished_run(ctx: Context, name: str, phase: str = "Succeeded",
                 started: str = "10:00") -> RunFolder:
    """A run folder as a CLI run leaves it (no UI owner record)."""
    folder = RunFolder.named(ctx.home, name)
    claim_run_folder(folder, RunSpec(name=name, base_model="tiny-random", steps=["prepare"]))
    folder.write_status(RunStatus(name=name, phase=phase, trained=phase == "Succeeded",
                                  steps={"prepare": StepStatus(
                                      state="succeeded" if phase == "Succeeded" else "failed",
                                      started=f"2026-03-01T{started}:00+00:00")}))
    return folder


def test_cli_runs_are_the_local_users_without_sign_in(voxtune_home: Path) -> None:
    ctx = local_ctx(voxtune_home)
    finished_run(ctx, "from-cli")
    assert [s.name for s in handlers.my_runs(ctx, "local")] == ["from-cli"]
    assert str(voxtune_home / "runs") in handlers.where_runs_are(ctx)
    signed_in = local_ctx(voxtune_home, auth="password")
    assert handlers.my_runs(signed_in, "alice") == []  # never another user's by default


def test_runs_come_newest_first_and_publishes_are_not_the_default(voxtune_home: Path) -> None:
    ctx = local_ctx(voxtune_home)
    finished_run(ctx, "older", started="10:05")
    finished_run(ctx, "newer-one", started="10:09")
    finished_run(ctx, "newest-pub", started="11:00")  # a publish of newer-one
    (voxtune_home / handlers.PUBLISHES).mkdir(parents=True)
    (voxtune_home / handlers.PUBLISHES / "newest-pub").write_text("newer-one")
    runs = handlers.my_runs(ctx, "local")
    assert [s.name for s in runs] == ["newest-pub", "newer-one", "older"]
    assert handlers.newest_training_run(ctx, runs) == "newer-one"


def test_a_failed_run_is_launched_again_and_a_run_deleted(voxtune_home: Path) -> None:
    ctx = local_ctx(voxtune_home)
    finished_run(ctx, "broken", phase="Failed")
    finished_run(ctx, "fine")
    with pytest.raises(UserError, match="only a failed or cancelled run"):
        handlers.resume(ctx, "local", "fine")
    assert handlers.resume(ctx, "local", "broken").phase == "Pending"  # submitted again
    ctx.client.wait("broken", timeout=120)
    handlers.delete(ctx, "local", "broken")
    assert not RunFolder.named(voxtune_home, "broken").path.exists()
    assert [s.name for s in handlers.my_runs(ctx, "local")] == ["fine"]


def test_publishing_to_the_hub_without_a_token_is_refused_at_once(
        voxtune_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("VOXTUNE_HF_TOKEN_FILE", raising=False)
    ctx = local_ctx(voxtune_home)
    finished_run(ctx, "voice")
    with pytest.raises(UserError, match="needs a write token: set HF_TOKEN"):
        handlers.publish(ctx, "local", "voice", PublishForm("hub", "alice/voice"))
    assert [s.name for s in handlers.my_runs(ctx, "local")] == ["voice"]  # no run was made


def test_the_suite_sees_a_detached_child(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; print(flush=True); "
                              "time.sleep(60)"], start_new_session=True, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        child.stdout.readline()  # started: mid-exec, /proc/PID/environ may read empty
        assert child.pid in marked_processes(os.environ["VOXTUNE_TEST_SESSION"])
    finally:
        child.kill()
        child.wait()
    assert child.pid not in marked_processes(os.environ["VOXTUNE_TEST_SESSION"])


def test_the_run_page_says_how_it_was_scored_and_shows_the_general_set() -> None:
    status = RunStatus(name="alice-x", phase="Succeeded", metrics={
        "wer": 0.1, "base_wer": 0.3, "general_wer": 0.052, "base_general_wer": 0.05})
    page = handlers.RunPage(status, "", {}, [], {
        "normalizer": "whisper (Whisper's EnglishTextNormalizer)",
        "general_dataset": "openslr/librispeech_asr"})
    heading = views.run_heading(page)
    assert "normaliser: whisper (Whisper's EnglishTextNormalizer)" in heading
    assert "General speech (openslr/librispeech_asr): WER 5.0% base → 5.2% tuned" in heading
    bars = views.score_bars(status.metrics)
    assert list(bars["score"]) == ["WER base", "WER tuned", "general WER base",
                                   "general WER tuned"]
    # a run without a general set or a recorded normaliser reads as before
    plain = views.run_heading(handlers.RunPage(RunStatus(name="alice-y"), "", {}, []))
    assert "normaliser" not in plain and "General speech" not in plain
