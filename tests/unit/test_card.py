"""Model card, dataset card and Space files: pure rendering, checked with the Hub's own parsers."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import DatasetCard, ModelCard

from voxtune.models import inference
from voxtune.publish.card import ModelFacts, loading_snippet, render_model_card
from voxtune.publish.dataset import DataSummary
from voxtune.publish.dataset_card import render_dataset_card
from voxtune.publish.space import (
    GRADIO_VERSION,
    SPACE_PINS,
    SpaceFacts,
    render_app,
    render_readme,
    render_requirements,
)
from voxtune.spec import RunSpec

VOXTRAL = "mistralai/Voxtral-Mini-3B-2507"
METRICS = {"wer": 0.125, "cer": 0.05, "base_wer": 0.25, "base_cer": 0.1, "clips": 4,
           "train_loss": 1.5, "eval_loss": 1.7, "train_steps": 40, "wall_time_s": 61.0,
           "peak_memory_gb": 15.2, "empty": 0, "repetitive": 1, "max_length": 0,
           "smoke_model": False,
           "samples": [{"id": "a", "reference": "turn left | now", "base": "turn\nleft",
                        "tuned": "turn left now"}]}
DATA = DataSummary(clips={"train": 36, "eval": 4}, minutes={"train": 3.0, "eval": 0.3},
                   languages=("en",))


def facts(layout: str = "adapter", **changes) -> ModelFacts:
    values = {"name": "my-voice", "spec": RunSpec(name="my-voice", language="en"),
              "metrics": METRICS, "layout": layout, "model_ref": "alice/my-voice",
              "on_hub": True, "private": True, "base_ref": VOXTRAL, "data": DATA}
    return ModelFacts(**(values | changes))


def body(text: str) -> str:
    return text.split("\n---\n", 1)[1]


@pytest.mark.parametrize(("layout", "library"), [
    ("adapter", "peft"), ("merged", "transformers"), ("full", "transformers")])
def test_front_matter_parses_with_model_index(layout: str, library: str) -> None:
    card = ModelCard(render_model_card(facts(layout)))
    data = card.data
    assert (data.library_name, data.pipeline_tag) == (library, "automatic-speech-recognition")
    assert (data.base_model, data.language, data.license) == (VOXTRAL, ["en"], "apache-2.0")
    assert "voxtune" in data.tags and "smoke-test" not in data.tags
    results = {r.metric_type: r for r in data.eval_results}
    assert (results["wer"].metric_value, results["cer"].metric_value) == (12.5, 5.0)
    assert results["wer"].dataset_split == "eval" and data.model_name == "my-voice"
    assert results["wer"].task_type == "automatic-speech-recognition"


def test_results_compare_base_and_tuned_with_samples() -> None:
    text = render_model_card(facts())
    assert "| base `mistralai/Voxtral-Mini-3B-2507` | 25.0 % | 10.0 % |" in text
    assert "| **fine-tuned** | **12.5 %** | **5.0 %** |" in text
    assert "Relative WER change: -50.0 %." in text and "1 repetitive" in text
    assert "| turn left \\| now | turn left | turn left now |" in text  # one line, escaped
    assert "| train | 36 | 3.0 |" in text and "| wall time | 61 s |" in text
    assert "smoke" not in text.lower()


GENERAL = {"general_wer": 0.08, "general_cer": 0.03, "base_general_wer": 0.06,
           "base_general_cer": 0.02, "general_clips": 20,
           "general_normalizer": "whisper (Whisper's EnglishTextNormalizer)"}


def test_model_index_names_the_normaliser_for_the_eval_split_and_the_general_set() -> None:
    spec = RunSpec(name="my-voice", language="en",
                   eval={"general": "openslr/librispeech_asr?split=test&config=clean"})
    metrics = {**METRICS, **GENERAL, "normalizer": "whisper (Whisper's EnglishTextNormalizer)"}
    card = ModelCard(render_model_card(facts(spec=spec, metrics=metrics)))
    results = [(r.dataset_type, r.dataset_split, r.metric_type, r.metric_value, r.metric_args)
               for r in card.data.eval_results]
    args = {"normalizer": "whisper (Whisper's EnglishTextNormalizer)"}
    assert ("openslr/librispeech_asr", "test", "wer", 8.0, args) in results
    assert ("custom", "eval", "wer", 12.5, args) in results
    text = card.text
    assert "normalised with whisper (Whisper's EnglishTextNormalizer)" in text
    assert "did fine-tuning hurt other speech?" in text and "+2.0 points" in text
    assert "| **fine-tuned** | **8.0 %** | **3.0 %** |" in text


def test_merged_card_reports_the_re_scored_weights_and_the_cut_offs() -> None:
    metrics = {**METRICS, "merged_wer": 0.13, "merged_cer": 0.05, "merged_wer_drift": 0.5,
               "cut_off": ["clip-7"], "max_length": 1}
    text = render_model_card(facts("merged", metrics=metrics))
    assert "| merged (these weights, re-scored) | 13.0 % | 5.0 % |" in text
    assert "0.5 points from the evaluated adapter" in text
    assert "Cut off at the token limit (scored as they are): `clip-7`." in text
    results = {r.metric_type: r.metric_value for r in ModelCard(text).data.eval_results}
    assert results["wer"] == 13.0  # the model-index describes the weights published


def test_loading_snippet_uses_the_evaluation_token_limit() -> None:
    metrics = {**METRICS, "generation": {"tokens_per_second": 15.0, "min_new_tokens": 77,
                                         "max_new_tokens": None}}
    snippet = loading_snippet(facts(metrics=metrics))
    assert "max(77, math.ceil(seconds * 15))" in snippet and "do_sample=False" in snippet
    fixed = loading_snippet(facts(spec=RunSpec(name="x", eval={"max_new_tokens": 64})))
    assert "max_new_tokens = 64" in fixed and "import math" not in fixed


def test_smoke_model_says_so_and_has_no_hub_base_model() -> None:
    smoke = facts(spec=RunSpec(name="t", base_model="tiny-random-4s", language="en"),
                  base_preset="tiny-random-4s", base_ref="/home/x/models/tiny",
                  window_seconds=4.0, metrics={**METRICS, "smoke_model": True})
    text = render_model_card(smoke)
    data = ModelCard(text).data
    assert data.base_model is None  # the Hub rejects a base_model that names no Hub model
    assert {"smoke-test", "random-weights"} <= set(data.tags)
    assert "**This is a smoke-test model.**" in text and "random weights" in text
    snippet = loading_snippet(smoke)
    assert "resolve('tiny-random-4s')" in snippet and "/home/x" not in snippet
    assert "extractor.nb_max_frames" in snippet  # its 4-s window needs the processor aligned
    assert "nb_max_frames" not in loading_snippet(facts())


@pytest.mark.parametrize("layout", ["adapter", "merged", "full"])
@pytest.mark.parametrize("revision", [None, "exp-1"])
def test_loading_snippet_fits_the_layout(layout: str, revision: str | None) -> None:
    snippet = loading_snippet(facts(layout, revision=revision))
    ast.parse(snippet)
    passes = f", revision={revision!r})" if revision else ")"
    assert f"processor = VoxtralProcessor.from_pretrained(model_id{passes}" in snippet
    assert "language='en'" in snippet and "model_id = 'alice/my-voice'" in snippet
    if layout == "adapter":
        assert f"base_id = {VOXTRAL!r}" in snippet
        assert f"model = PeftModel.from_pretrained(base, model_id{passes}" in snippet
    else:
        assert "peft" not in snippet.lower()
        assert 'from_pretrained(model_id, dtype="auto"' in snippet
    card = render_model_card(facts(layout, revision=revision))  # and the OpenAI client's call
    assert card.index("from transformers import") < card.index("from openai import OpenAI")
    assert "transcriptions.create(model='alice/my-voice'" in card


@pytest.mark.parametrize(("on_hub", "private", "note"), [
    (True, True, "This repository is **private**."),
    (True, False, "This repository is **public**: make sure every speaker agreed"),
    (False, True, "This copy lives in a local model registry"),
], ids=["hub-private", "hub-public", "local"])
def test_privacy_note(on_hub: bool, private: bool, note: str) -> None:
    text = render_model_card(facts(on_hub=on_hub, private=private))
    assert note in text and "biometric" in text


def test_unevaluated_run_has_no_model_index() -> None:
    text = render_model_card(facts(metrics={"train_loss": 2.0}))
    assert "model-index" not in text and ModelCard(text).data.eval_results is None
    assert "Not evaluated: the run had no held-out clips." in text


def test_datasets_are_hub_references_only() -> None:
    spec = RunSpec(name="r", data={"sources": ["hub:mozilla-foundation/common_voice_17_0",
                                               "/data/clips.jsonl"]})
    on_hub = ModelCard(render_model_card(facts(spec=spec, dataset_ref="alice/my-voice-data")))
    assert on_hub.data.datasets == ["alice/my-voice-data", "mozilla-foundation/common_voice_17_0"]
    local = render_model_card(facts(spec=spec, on_hub=False, dataset_ref="/reg/my-voice/1/data",
                                    data=None))
    assert ModelCard(local).data.datasets == ["mozilla-foundation/common_voice_17_0"]
    assert ModelCard(local).data.language is None  # auto-detect, and no labelled clips


def test_other_base_models_do_not_claim_a_license() -> None:
    text = render_model_card(facts(spec=RunSpec(name="r", base_model="someone/voxtral-ft")))
    assert ModelCard(text).data.license == "other"
    assert "check the base model `someone/voxtral-ft`'s license" in text


def test_dataset_card_parses_with_splits() -> None:
    text = render_dataset_card("my-voice", DATA, ["train", "eval"], "alice/my-voice-data",
                               private=True, on_hub=True)
    data = DatasetCard(text).data
    assert data.task_categories == ["automatic-speech-recognition"]
    assert data.language == ["en"] and data.size_categories == ["n<1K"]
    assert [f["split"] for f in data.configs[0]["data_files"]] == ["train", "eval"]
    assert "load_dataset('alice/my-voice-data', split='train')" in text
    assert "This dataset is **private**." in text and "license" not in yaml.safe_load(
        text.split("---")[1])


def front(text: str) -> dict:
    return yaml.safe_load(text.split("---\n")[1])


@pytest.mark.parametrize("on_hub", [True, False], ids=["hub", "local"])
def test_space_files(on_hub: bool) -> None:
    model = "alice/my-voice" if on_hub else "/registry/my-voice/3"
    space = SpaceFacts("my-voice", model, on_hub=on_hub, private=True, revision="exp",
                       language="sv", smoke=True, loading="model = load_it()")
    matter = front(render_readme(space))
    assert (matter["sdk"], matter["sdk_version"], matter["app_file"]) == (
        "gradio", GRADIO_VERSION, "app.py")
    assert matter.get("models") == ([model] if on_hub else None)
    app = render_app(space)
    ast.parse(app)
    assert f"MODEL = {model!r}" in app and "REVISION = 'exp'" in app
    assert "DEFAULT_LANGUAGE = 'sv'" in app and "random weights" in app
    assert "import gradio" in app and "from voxtune_inference import" in app
    assert not re.search(r"token\s*=|hf_[A-Za-z]", app)  # the Space gets its token as a secret
    readme = render_readme(space)  # the OpenAI-client call next to the card's transformers one
    transformers = readme.index("```python\nmodel = load_it()\n```")
    assert f"voxtune serve {model} --port 7861" in readme[transformers:]
    assert f"client.audio.transcriptions.create(model={model!r}" in readme


def test_generated_app_is_lint_clean(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(render_app(SpaceFacts("my-voice", "alice/my-voice", on_hub=True,
                                         private=True, smoke=True)))
    ruff = Path(sys.executable).with_name("ruff")
    done = subprocess.run([str(ruff), "check", "--no-cache", "--isolated", "--line-length",
                           "100", "--select", "E,F,W,I,B,UP,SIM", str(app)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_space_requirements_are_pinned_to_what_is_installed() -> None:
    lines = [line for line in render_requirements().splitlines() if not line.startswith("#")]
    assert all(re.fullmatch(r"[\w\[\].-]+==[\w.]+", line) for line in lines)
    for package, version in SPACE_PINS.items():
        installed = importlib.metadata.version(package.split("[")[0])
        assert installed.split("+")[0] == version, package


def test_inference_module_stands_alone() -> None:
    source = Path(inference.__file__).read_text()
    imports = [node for node in ast.walk(ast.parse(source))
               if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = {alias.name for node in imports if isinstance(node, ast.Import)
             for alias in node.names} | {node.module for node in imports
                                         if isinstance(node, ast.ImportFrom)}
    assert not {name for name in names if name and name.split(".")[0] == "voxtune"}
