"""The UI's handlers without a browser: form → RunSpec → Client, workspaces, users and auth.

Runs go to the Kubernetes API emulator (real HTTP, real client), so launching many of them
costs no training processes; the local executor is covered by the browser test."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.emulators import kube
from tests.emulators.kube import KubeEmulator
from tests.helpers import speechlike, write_audio
from voxtune.client import Client
from voxtune.data.audio import AudioRejected
from voxtune.errors import UserError
from voxtune.spec import GranarySource, HubSource
from voxtune.ui import handlers, sources, training, views
from voxtune.ui.app import build_app
from voxtune.ui.auth import check_bind, password_check, read_users
from voxtune.ui.demo import DemoServers
from voxtune.ui.handlers import Context
from voxtune.ui.phrases import PHRASES, sentence
from voxtune.ui.settings import UiSettings
from voxtune.ui.training import TrainForm
from voxtune.ui.workspace import (
    Workspace,
    add_uploads,
    safe_name,
    transcript_rows,
    transcripts_file,
)

kube_emulator = kube.kube_emulator


def context(home: Path, client: Client, **settings: object) -> Context:
    return Context(client, UiSettings(**settings), home, DemoServers(home / "ui"))


def with_dataset(ctx: Context, user: str, clips: int = 2) -> Workspace:
    workspace = ctx.workspace(user)
    for index in range(clips):
        audio = write_audio(ctx.home / "in" / f"{user}{index}.wav", speechlike(1.0 + index / 4,
                                                                               seed=index))
        workspace.add(audio, f"clip number {index}", "en")
    workspace.build("en")
    return workspace


@pytest.fixture
def cluster_ctx(kube_emulator: KubeEmulator, voxtune_home: Path) -> Context:
    client = Client("kubernetes", namespace="default", api_client=kube_emulator.api_client(),
                    home=voxtune_home)
    return context(voxtune_home, client)


# --- form → spec ---------------------------------------------------------------------------


def test_form_becomes_the_spec_and_the_finetunerun(cluster_ctx: Context) -> None:
    with_dataset(cluster_ctx, "alice")
    form = TrainForm(name="My Voice", base_model="tiny-random", mode="full", language="fr",
                     gpus="2 GPUs", max_steps=7, learning_rate=3e-5, lora_rank=16)
    spec_yaml, run_yaml = training.preview(cluster_ctx, "alice", form)
    spec = training.build_spec(cluster_ctx, "alice", form)
    assert spec.name == "alice-my-voice" and spec.mode == "full" and spec.language == "fr"
    assert spec.training.max_steps == 7 and spec.training.learning_rate == 3e-5
    assert spec.training.lora.rank == 16 and spec.resources.gpus == 2
    assert spec.steps == ["prepare", "train"]
    # on the cluster the dataset is named relative to the shared volume (VOXTUNE_HOME)
    assert spec.data.sources[0].kind == "prepared"
    assert str(spec.data.sources[0].path) == "users/alice/dataset"
    assert "max_steps: 7" in spec_yaml and "kind: FineTuneRun" in run_yaml
    assert "name: alice-my-voice" in run_yaml and "namespace: default" in run_yaml


@pytest.mark.parametrize(("form", "message"), [
    (TrainForm(name="x" * 40), "at most 40"),
    (TrainForm(gpus="16 GPUs"), "GPUs"),
    (TrainForm(learning_rate=2.0), "learning_rate: Input should be less than 1"),
    (TrainForm(eval_fraction=0.9), "eval_fraction"),
], ids=["long-name", "gpu-profile", "learning-rate", "eval-fraction"])
def test_bad_form_values_are_clear_errors(cluster_ctx: Context, form: TrainForm,
                                          message: str) -> None:
    with_dataset(cluster_ctx, "alice")
    with pytest.raises(UserError, match=message):
        training.build_spec(cluster_ctx, "alice", form)


def test_launch_without_a_dataset_says_what_to_do(cluster_ctx: Context) -> None:
    with pytest.raises(UserError, match="build the dataset first"):
        training.launch(cluster_ctx, "bob", TrainForm())


# --- runs: many users, many sessions ------------------------------------------------------------


def test_twenty_simultaneous_launches_make_twenty_runs(cluster_ctx: Context,
                                                       kube_emulator: KubeEmulator) -> None:
    users = [f"user{index}" for index in range(5)]
    for user in users:
        with_dataset(cluster_ctx, user)
    results: list[str] = []
    errors: list[Exception] = []
    start = threading.Barrier(20)

    def session(user: str) -> None:
        start.wait()
        try:  # no name given: each launch gets its own
            results.append(training.launch(cluster_ctx, user, TrainForm(max_steps=3)).name)
        except Exception as error:  # collected, asserted below
            errors.append(error)

    threads = [threading.Thread(target=session, args=(users[i % 5],)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and len(set(results)) == 20
    stored = {run["metadata"]["name"] for run in kube_emulator.list("finetuneruns", "default")}
    assert stored == set(results)
    for user in users:  # each user lists exactly their own four
        mine = {status.name for status in handlers.my_runs(cluster_ctx, user)}
        assert len(mine) == 4 and all(name.startswith(f"{user}-") for name in mine)


def test_a_run_name_belongs_to_one_user(cluster_ctx: Context) -> None:
    with_dataset(cluster_ctx, "al")
    with_dataset(cluster_ctx, "al-ice")
    training.launch(cluster_ctx, "al", TrainForm(name="ice-x"))  # → al-ice-x
    with pytest.raises(UserError, match="is taken"):
        training.launch(cluster_ctx, "al-ice", TrainForm(name="x"))  # also al-ice-x
    assert handlers.my_runs(cluster_ctx, "al-ice") == []
    for action in (handlers.run_page, handlers.cancel):
        with pytest.raises(UserError, match="among your runs"):
            action(cluster_ctx, "al-ice", "al-ice-x")


def test_same_launch_twice_is_one_run(cluster_ctx: Context) -> None:
    with_dataset(cluster_ctx, "alice")
    form = TrainForm(name="again", max_steps=2)
    assert training.launch(cluster_ctx, "alice", form).name == \
        training.launch(cluster_ctx, "alice", form).name == "alice-again"
    assert len(handlers.my_runs(cluster_ctx, "alice")) == 1


def test_a_queued_run_is_active_and_can_be_cancelled(cluster_ctx: Context,
                                                     kube_emulator: KubeEmulator) -> None:
    with_dataset(cluster_ctx, "alice")
    training.launch(cluster_ctx, "alice", TrainForm(name="waits"))
    kube_emulator.patch("finetuneruns", "default", "alice-waits",
                        {"status": {"phase": "Queued", "message": "waiting for a free slot"}},
                        status=True)
    page = handlers.run_page(cluster_ctx, "alice", "alice-waits")
    assert page.status.phase == "Queued" and not page.finished  # the page offers Cancel
    assert "waiting for a free slot" in page.explanation
    handlers.cancel(cluster_ctx, "alice", "alice-waits")


def test_publish_needs_a_run_that_succeeded_with_a_model(cluster_ctx: Context,
                                                         kube_emulator: KubeEmulator) -> None:
    with_dataset(cluster_ctx, "alice")
    training.launch(cluster_ctx, "alice", TrainForm(name="young"))
    with pytest.raises(UserError, match="no trained model yet"):
        handlers.publish(cluster_ctx, "alice", "alice-young", handlers.PublishForm())
    # succeeded, but its status says it holds no model (say, a prepare-only run)
    kube_emulator.patch("finetuneruns", "default", "alice-young",
                        {"status": {"phase": "Succeeded"}}, status=True)
    assert handlers.finished_runs(cluster_ctx, "alice") == []
    with pytest.raises(UserError, match="no trained model yet"):
        handlers.publish(cluster_ctx, "alice", "alice-young", handlers.PublishForm())


def test_a_publish_names_the_trained_run_and_writes_no_run_folder(
        cluster_ctx: Context, kube_emulator: KubeEmulator) -> None:
    with_dataset(cluster_ctx, "alice")
    training.launch(cluster_ctx, "alice", TrainForm(name="voice"))
    kube_emulator.patch("finetuneruns", "default", "alice-voice",
                        {"status": {"phase": "Succeeded", "trained": True}}, status=True)
    assert handlers.finished_runs(cluster_ctx, "alice") == ["alice-voice"]
    form = handlers.PublishForm("hub", "alice/my-voice", private=True, space=True)
    launched = handlers.publish(cluster_ctx, "alice", "alice-voice", form)
    spec = cluster_ctx.client.spec(launched.name)
    assert spec.steps == ["publish"] and spec.publish.run == "alice-voice"
    assert (spec.publish.to, spec.publish.private, spec.publish.space) == (
        "hf://alice/my-voice", True, True)
    assert not (cluster_ctx.home / "runs").exists()  # the step resolves publish.run itself
    assert handlers.owns(cluster_ctx, "alice", launched.name)


def test_the_run_page_reads_the_status(cluster_ctx: Context,
                                       kube_emulator: KubeEmulator) -> None:
    """Reason, scores and where it was published come from the FineTuneRun's status."""
    with_dataset(cluster_ctx, "alice")
    training.launch(cluster_ctx, "alice", TrainForm(name="done"))
    record = {"name": "alice-done", "model": "/data/registry/alice-done/1",
              "layout": "adapter", "version": 1, "dataset": None, "space": None, "commits": {}}
    kube_emulator.patch("finetuneruns", "default", "alice-done", {"status": {
        "phase": "Succeeded", "reason": "Completed", "message": "all steps succeeded",
        "trained": True, "metrics": {"wer": 0.12, "base_wer": 0.31}, "published": record}},
        status=True)
    page = handlers.run_page(cluster_ctx, "alice", "alice-done")
    assert page.finished and page.explanation == "Completed: all steps succeeded"
    assert page.published is not None and page.published.model == record["model"]
    assert views.published_text(page.published) == (
        "**Published** alice-done version 1 (adapter): `/data/registry/alice-done/1`")
    assert views.score_bars(page.status.metrics)["percent"].round(1).tolist() == [31.0, 12.0]
    assert views.runs_table([page.status])["WER base → tuned"].tolist() == ["31.0% → 12.0%"]


# --- workspace ------------------------------------------------------------------------------------


def test_uploads_are_checked_with_the_prepare_rules(tmp_path: Path, voxtune_home: Path) -> None:
    workspace = Workspace(voxtune_home, "alice", max_bytes=200_000)
    good = write_audio(tmp_path / "good.wav", speechlike(1.0))
    cases = {
        "silent": write_audio(tmp_path / "quiet.wav", np.zeros(16_000, np.float32)),
        "too_short": write_audio(tmp_path / "short.wav", speechlike(0.1)),
        "not_audio": tmp_path / "fake.wav",
        "too_large": write_audio(tmp_path / "long.wav", speechlike(8.0)),
        "empty_text": good,
    }
    cases["not_audio"].write_text("hello")
    for reason, path in cases.items():
        with pytest.raises(AudioRejected) as rejected:
            workspace.add(path, "" if reason == "empty_text" else "words", "en")
        assert rejected.value.reason == reason
    with pytest.raises(AudioRejected, match="type not accepted"):
        workspace.add(good, "words", "en", name="script.sh")
    assert workspace.clips() == {}


def test_clips_are_copied_in_edited_and_deleted(tmp_path: Path, voxtune_home: Path) -> None:
    workspace = Workspace(voxtune_home, "alice")
    upload = write_audio(tmp_path / "gradio-tmp" / "My Take (1).wav", speechlike(1.0))
    row = workspace.add(upload, " hello there ", "en", name="../../etc/My Take (1).wav")
    stored = workspace.recordings / row["audio_path"]
    assert stored.parent == workspace.recordings / "clips" and stored.name.endswith("My_Take_1.wav")
    upload.unlink()  # Gradio's temporary copy goes away; ours stays
    assert stored.is_file() and row["text"] == "hello there" and row["duration"] == 1.0
    workspace.edit(row["id"], "hello again")
    assert workspace.clips()[row["id"]]["text"] == "hello again"
    workspace.delete(row["id"])
    assert workspace.clips() == {}
    with pytest.raises(UserError, match="no clip"):
        workspace.edit(row["id"], "x")


def test_workspaces_of_users_never_mix(tmp_path: Path, voxtune_home: Path) -> None:
    audio = write_audio(tmp_path / "a.wav", speechlike(1.0))
    Workspace(voxtune_home, "alice").add(audio, "alice speaking", "en")
    assert Workspace(voxtune_home, "bob").clips() == {}
    assert len(Workspace(voxtune_home, "alice").clips()) == 1


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("t.csv", b"file_name,text\na.wav,hello\nsub/b.flac,world\n",
     {"a.wav": "hello", "b.flac": "world"}),
    ("t.jsonl", b'{"audio_path": "a.wav", "text": "hi"}\n\n{"file": "c.wav", "sentence": "yo"}\n',
     {"a.wav": "hi", "c.wav": "yo"}),
], ids=["csv", "jsonl"])
def test_transcripts_files(name: str, content: bytes, expected: dict[str, str]) -> None:
    assert transcripts_file(name, content) == expected


def test_transcripts_file_without_columns_is_refused() -> None:
    with pytest.raises(UserError, match="no rows with a file column"):
        transcripts_file("t.csv", b"name,words\na.wav,hi\n")


@pytest.mark.parametrize(("raw", "safe"), [("../../x.wav", "x.wav"), ("a b?.FLAC", "a_b.flac"),
                                           ("...", "clip"), ("evil.exe", "evil")])
def test_safe_names(raw: str, safe: str) -> None:
    assert safe_name(raw) == safe


# --- users and auth ------------------------------------------------------------------------


def test_users_file_and_password_check(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("# team\nalice:s3cret:with:colons\n\nbob:hunter2\n")
    users = read_users(UiSettings(auth="password", users_file=path))
    check = password_check(users)
    assert check("alice", "s3cret:with:colons") and not check("alice", "hunter2")
    assert not check("carol", "")
    path.write_text("alice\n")
    with pytest.raises(UserError, match="expected user:password"):
        read_users(UiSettings(auth="password", users_file=path))


@pytest.mark.parametrize(("host", "settings", "allowed"), [
    ("127.0.0.1", {}, True), ("localhost", {}, True), ("0.0.0.0", {}, False),
    ("0.0.0.0", {"auth": "proxy"}, True), ("0.0.0.0", {"allow_remote_without_auth": True}, True),
], ids=["loopback", "localhost", "any-no-auth", "any-proxy", "any-allowed"])
def test_remote_binding_needs_auth(host: str, settings: dict, allowed: bool) -> None:
    if allowed:
        check_bind(host, UiSettings(**settings))
    else:
        with pytest.raises(UserError, match="VOXTUNE_UI_AUTH"):
            check_bind(host, UiSettings(**settings))


def test_ui_refuses_a_public_address_without_auth(voxtune_home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXTUNE_UI_")}
    done = subprocess.run([sys.executable, "-m", "voxtune", "ui", "--host", "0.0.0.0"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "VOXTUNE_UI_AUTH" in done.stderr


def test_no_usage_reports_to_gradio(cluster_ctx: Context,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "True")
    assert build_app(cluster_ctx).analytics_enabled is False


def test_the_ui_never_imports_torch() -> None:
    probe = ("import sys, voxtune.ui.app, voxtune.cli; voxtune.cli.build_parser(); "
             "print(sorted({'torch', 'transformers', 'peft'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == "[]", done.stderr[-2000:]
    help_probe = ("import sys, voxtune.cli\ntry:\n    voxtune.cli.main(['ui', '--help'])\n"
                  "except SystemExit:\n    pass\n"
                  "print(sorted({'torch', 'gradio'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", help_probe], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip().endswith("[]"), done.stderr[-2000:]


# --- the pages' pieces ----------------------------------------------------------------------------


def test_uploads_are_added_with_their_transcripts_and_refused_with_a_reason(
        tmp_path: Path, voxtune_home: Path) -> None:
    workspace = Workspace(voxtune_home, "alice")
    good = write_audio(tmp_path / "good.wav", speechlike(1.0))
    untitled = write_audio(tmp_path / "untitled.wav", speechlike(1.2, seed=3))
    sheet = tmp_path / "texts.csv"
    sheet.write_text("file_name,text\ngood.wav,hello there\n")
    rows = transcript_rows(["good.wav", "untitled.wav"], sheet)
    assert rows == [("good.wav", "hello there"), ("untitled.wav", "")]
    added, refused = add_uploads(workspace, [good, untitled], dict(rows), "en")
    assert added == 1 and [(r.name, r.reason) for r in refused] == [("untitled.wav",
                                                                      "empty_text")]
    clips = workspace.clips()
    assert views.dataset_total(clips).startswith("**1 clips, 0.0 minutes**")
    assert views.clips_table(clips)["transcript"].tolist() == ["hello there"]


@pytest.mark.parametrize(("form", "expected"), [
    (sources.SourceForm("hub", dataset=" org/speech ", max_samples=0),
     HubSource(dataset="org/speech")),
    (sources.SourceForm("granary", subset="sv_voxpopuli", audio_root="/audio",
                         max_samples=5),
     GranarySource(subset="sv_voxpopuli", audio_root=Path("/audio"), max_samples=5)),
], ids=["hub", "granary"])
def test_source_fields_become_a_source(form: sources.SourceForm, expected: object) -> None:
    assert form.source() == expected


def test_bad_source_fields_are_a_clear_error() -> None:
    with pytest.raises(UserError, match=r"(?s)granary source.*subset: String should match"):
        sources.SourceForm("granary", subset="swedish", audio_root="/audio").source()


@pytest.mark.parametrize(("names", "current", "chosen"), [
    (["b", "a"], "a", "a"), (["b", "a"], "gone", "b"), ([], None, None)],
    ids=["kept", "newest", "none"])
def test_the_run_being_looked_at_stays_chosen(names: list[str], current: str | None,
                                              chosen: str | None) -> None:
    assert views.chosen_run(names, current, names[0] if names else None) == chosen


def test_sentences_wrap_around() -> None:
    count = len(PHRASES["en"])
    assert sentence("en", count + 1) == (1, PHRASES["en"][1])
