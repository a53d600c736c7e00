"""RunSpec: one model, loaded with a documented precedence, clear errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from voxtune.errors import UserError
from voxtune.spec import (
    FolderSource,
    GranarySource,
    HubSource,
    JsonlSource,
    PreparedSource,
    RecordingsSource,
    RunSpec,
    load_user_spec,
    parse_source,
    read_resolved_spec,
)


def write(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize(("text", "expected"), [
    ("data.jsonl", JsonlSource(path=Path("data.jsonl"))),
    ("clips", FolderSource(path=Path("clips"))),
    ("jsonl:list.txt", JsonlSource(path=Path("list.txt"))),
    ("recordings:rec", RecordingsSource(path=Path("rec"))),
    ("prepared:runs/a/prepared", PreparedSource(path=Path("runs/a/prepared"))),
    ("hub:org/ds?split=test&text_column=sentence&max_samples=5",
     HubSource(dataset="org/ds", split="test", text_column="sentence", max_samples=5)),
    ("granary:sv_voxpopuli?split=ast&audio_root=/audio",
     GranarySource(subset="sv_voxpopuli", split="ast", audio_root=Path("/audio"))),
], ids=["jsonl-suffix", "folder", "jsonl-prefix", "recordings", "prepared", "hub",
        "granary"])
def test_source_strings(text: str, expected: object) -> None:
    spec = RunSpec(name="r", data={"sources": [text]})
    assert spec.data.sources == [expected]
    assert parse_source(text)["kind"] == expected.kind


def test_precedence_defaults_file_env_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "run.yaml", {"name": "r", "training": {"max_steps": 10,
                                                                   "batch_size": 4}})
    assert load_user_spec(path).training.max_steps == 10
    monkeypatch.setenv("VOXTUNE_SPEC__TRAINING__MAX_STEPS", "20")
    spec = load_user_spec(path)
    assert (spec.training.max_steps, spec.training.batch_size) == (20, 4)
    spec = load_user_spec(path, {"training": {"max_steps": 30}})
    assert (spec.training.max_steps, spec.training.batch_size) == (30, 4)
    assert spec.training.learning_rate == RunSpec(name="r").training.learning_rate


@pytest.mark.parametrize(("document", "field", "words"), [
    ({"name": "r", "trainig": {}}, "trainig", "unknown field"),
    ({"name": "r", "training": {"batchsize": 2}}, "training.batchsize", "unknown field"),
    ({"name": "Bad_Name"}, "name", "lowercase"),
    ({"name": "r", "mode": "dora"}, "mode", "'lora', 'qlora' or 'full'"),
    ({"name": "r", "language": "english"}, "language", "pattern"),
    ({"name": "r", "data": {"eval_fraction": 0.9}}, "data.eval_fraction", "0.5"),
    ({"name": "r", "steps": ["train", "prepare"]}, "steps", "pipeline order"),
    ({"name": "r", "data": {"sources": [{"kind": "ftp", "path": "x"}]}}, "data.sources.0",
     "kind"),
    ({"name": "r", "publish": {"run": "../other"}}, "publish.run", "pattern"),
], ids=["typo-section", "typo-field", "name", "mode", "language", "fraction", "order", "kind",
        "publish-run"])
def test_invalid_specs_name_the_field(tmp_path: Path, document: dict, field: str,
                                      words: str) -> None:
    with pytest.raises(UserError) as error:
        load_user_spec(write(tmp_path / "run.yaml", document))
    message = str(error.value)
    assert f"  {field}" in message and words in message, message


def test_finetunerun_document_and_relative_paths(tmp_path: Path) -> None:
    path = write(tmp_path / "run.yaml", {
        "apiVersion": "voxtune.io/v1alpha1", "kind": "FineTuneRun",
        "metadata": {"name": "from-cr"},
        "spec": {"data": {"sources": ["clips/data.jsonl"]}},
    })
    spec = load_user_spec(path)
    assert spec.name == "from-cr"
    assert spec.data.sources[0].path == tmp_path / "clips" / "data.jsonl"
    # what is saved reloads to the same spec, wherever it is read from
    assert RunSpec.model_validate(yaml.safe_load(spec.to_yaml())) == spec


@pytest.mark.parametrize("content", ["{", "- a list", ""], ids=["yaml", "list", "empty"])
def test_unreadable_spec_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(content)
    with pytest.raises(UserError, match=r"run\.yaml"):
        load_user_spec(path)
    with pytest.raises(UserError, match="no such spec file"):
        load_user_spec(tmp_path / "missing.yaml")


def test_relative_registry_path_is_resolved_but_hub_targets_are_not(tmp_path: Path) -> None:
    local = load_user_spec(write(tmp_path / "a.yaml", {"name": "r", "publish": {"to": "registry"}}))
    assert local.publish.to == str(tmp_path / "registry")
    hub = load_user_spec(write(tmp_path / "b.yaml", {"name": "r", "publish": {"to": "hf://me/x"}}))
    assert hub.publish.to == "hf://me/x"


@pytest.mark.parametrize("argv", [
    ["train", "--max-steps", "5"], ["prepare", "--language", "sv"], ["publish", "--merge"],
], ids=["train", "prepare", "publish"])
def test_run_dir_runs_the_recorded_spec_and_refuses_flags_that_change_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        argv: list[str]) -> None:
    from voxtune.cli import main

    (tmp_path / "spec.yaml").write_text(RunSpec(name="recorded").to_yaml())
    monkeypatch.setenv("VOXTUNE_SPEC__TRAINING__MAX_STEPS", "7")  # user input only
    assert main([*argv, "--run-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "--run-dir runs the spec the run recorded" in error and "Traceback" not in error
    assert read_resolved_spec(tmp_path / "spec.yaml").training.max_steps is None


def test_resolved_specs_are_read_as_recorded(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "spec.yaml", {"name": "r", "data": {"sources": ["rel.jsonl"]}})
    monkeypatch.setenv("VOXTUNE_SPEC__TRAINING__MAX_STEPS", "7")
    spec = read_resolved_spec(path)
    assert spec.training.max_steps is None and str(spec.data.sources[0].path) == "rel.jsonl"
    with pytest.raises(UserError, match=r"bad\.yaml: invalid run spec"):
        read_resolved_spec(write(tmp_path / "bad.yaml", {"name": "r", "mode": "half"}))


def test_cluster_specs_keep_relative_paths(tmp_path: Path) -> None:
    path = write(tmp_path / "run.yaml", {"name": "r", "data": {"sources": ["rel.jsonl"]}})
    spec = load_user_spec(path, resolve_paths=False)
    assert str(spec.data.sources[0].path) == "rel.jsonl"


def test_specs_from_before_the_normaliser_still_load() -> None:
    """Run folders written before eval.normalizer keep loading, scored as they were."""
    old = RunSpec.model_validate({"name": "old", "eval": {"max_new_tokens": 128,
                                                         "lowercase": True,
                                                         "remove_punctuation": True}})
    assert old.eval.normalizer == "simple" and old.eval.max_new_tokens == 128
    raw = RunSpec.model_validate({"name": "raw", "eval": {"lowercase": False,
                                                         "remove_punctuation": False}})
    assert raw.eval.normalizer == "none"
    assert RunSpec.model_validate({"name": "new"}).eval.normalizer == "whisper"
