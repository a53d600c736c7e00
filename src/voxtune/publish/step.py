"""Publish step: a trained run → local registry or Hugging Face Hub, with card, dataset and Space.

Runbook:
    voxtune publish --model runs/me                       # → $VOXTUNE_HOME/registry/me/<n>/
    voxtune publish --model runs/me --merge --space       # + merged model, Space folder in <n>/
    voxtune publish --model runs/me --to hf://alice/my-voice --dataset runs/me/prepared --space
                          # alice/my-voice, alice/my-voice-data, alice/my-voice-demo: all private
    voxtune publish --run-dir $VOXTUNE_HOME/runs/me       # what the executors run (spec.yaml)
    # a publish-only run (steps: [publish]) with publish.run: me publishes runs/me's model
    voxtune models list | voxtune models show me@2

What is published: what a user loads (adapter and/or weights, processor), README.md (the model
card), metrics.json and spec.yaml — never optimizer, scheduler or checkpoint files. Locally a
version is written aside and renamed into place; on the Hub each repo gets one commit. Where it
all went is recorded in the run folder's published.json (no token), which both executors put in
the run's status. The
token comes from HF_TOKEN or VOXTUNE_HF_TOKEN_FILE only. A private model's demo Space gets, as
`publish.space_token` says: `read` (default) the read-only token in HF_SPACE_TOKEN (or
VOXTUNE_HF_SPACE_TOKEN_FILE), or none when there is none; `none` never a token; `write` the
publishing token (an explicit opt-in); the log's "Space token:" line says which. Exit 2: bad
input, missing or rejected token, name clash; 75: network or Hub unavailable (run again).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxtune.data.manifest import Clip
from voxtune.errors import UserError
from voxtune.plan.geometry import load_geometry
from voxtune.publish.bundle import TrainedRun, read_run, stage_model
from voxtune.publish.card import loading_snippet, render_model_card
from voxtune.publish.card_facts import ModelFacts, default_language
from voxtune.publish.dataset import DataSummary, read_prepared, summarize, write_parquet
from voxtune.publish.dataset_card import render_dataset_card
from voxtune.publish.gate import check_export, run_limit
from voxtune.publish.hub import (
    SPACE_TOKEN_ENV,
    Hub,
    HubTarget,
    PublishSettings,
    parse_target,
    read_space_token,
    read_token,
    repo_id,
)
from voxtune.publish.registry import Registry, check_name
from voxtune.publish.space import (
    INFERENCE_MODULE,
    SpaceFacts,
    space_hardware_problem,
    write_space,
)
from voxtune.publish.vllm import vllm_note
from voxtune.run.layout import (
    SPEC,
    RunFolder,
    registry_dir,
)
from voxtune.run.status import Publication, format_percent
from voxtune.spec import PublishSpec

DATASET_DIR, SPACE_DIR = "dataset", "space"
LAYOUT_NAMES = {"adapter": "LoRA adapter", "merged": "merged LoRA model",
                "full": "fully fine-tuned model"}


@dataclass
class Published:
    """Where everything went; `lines()` is what the step prints."""

    name: str
    layout: str
    model: str  # the version folder, or the Hub commit URL
    metrics: dict[str, Any]
    version: int | None = None
    dataset: str | None = None
    space: str | None = None
    space_token: str | None = None  # which token the Hub Space got, in words
    commits: dict[str, str] = field(default_factory=dict)  # repo → commit URL
    vllm_note: str = ""  # what vLLM serves differently (vllm.json's note), if anything

    def record(self) -> Publication:
        """The public part, for published.json and the run's status (never the Space token
        note: it is words, but a status is no place for anything about tokens)."""
        return Publication(name=self.name, model=self.model, layout=self.layout,
                           version=self.version, dataset=self.dataset, space=self.space,
                           commits=self.commits)

    def lines(self) -> list[str]:
        where = f"version {self.version} " if self.version else ""
        lines = [f"published {self.name} {where}({LAYOUT_NAMES[self.layout]}): {self.model}"]
        lines += [f"  dataset: {self.dataset}"] if self.dataset else []
        lines += [f"  Space:   {self.space}"] if self.space else []
        lines += [f"  Space token: {self.space_token}"] if self.space_token else []
        lines += [f"  commit {repo}: {url}" for repo, url in self.commits.items()]
        lines += [f"  vLLM: {self.vllm_note}"] if self.vllm_note else []
        if "wer" in self.metrics:
            merged = "merged_wer" in self.metrics
            lines += [f"  {'':4} {'base':>8} {'tuned':>8}" + (f" {'merged':>8}" if merged else "")]
            lines += [f"  {key.upper():4} {format_percent(self.metrics.get('base_' + key)):>8} "
                      f"{format_percent(self.metrics.get(key)):>8}"
                      + (f" {format_percent(self.metrics.get('merged_' + key)):>8}"
                         if merged else "") for key in ("wer", "cer")]
        if self.metrics.get("smoke_model"):
            lines.append("  tiny-random is a random smoke-test model: the numbers only show the "
                         "pipeline works")
        return lines


@dataclass(frozen=True)
class SpaceToken:
    """The token a Hub Space gets as its HF_TOKEN secret (None: no secret), and why."""

    value: str | None = field(repr=False)  # never in a repr or a traceback
    note: str


@dataclass(frozen=True)
class Contents:
    """What goes out besides the model, gathered once for either destination."""

    run: TrainedRun
    name: str
    publish: PublishSpec
    clips: list[Clip] | None  # the prepared clips (card summary), if found
    prepared: Path | None  # publish this prepared folder as a dataset
    space: bool
    base_preset: str | None

    @property
    def summary(self) -> DataSummary | None:
        return summarize(self.clips) if self.clips else None

    def facts(self, layout: str, model_ref: str, on_hub: bool, revision: str | None = None,
              dataset_ref: str | None = None, space_ref: str | None = None) -> ModelFacts:
        return ModelFacts(
            name=self.name, spec=self.run.spec, metrics=self.run.metrics, layout=layout,
            model_ref=model_ref, on_hub=on_hub, private=self.publish.private, revision=revision,
            base_ref=self.run.base_ref, base_preset=self.base_preset,
            window_seconds=self.run.window_seconds,
            data=self.summary, dataset_ref=dataset_ref,
            space_ref=space_ref)

    def space_facts(self, layout: str, model_ref: str, on_hub: bool, revision: str | None
                    ) -> SpaceFacts:
        smoke = self.base_preset is not None or bool(self.run.metrics.get("smoke_model"))
        loading = loading_snippet(self.facts(layout, model_ref, on_hub, revision))
        return SpaceFacts(name=self.name, model_ref=model_ref, on_hub=on_hub,
                          private=self.publish.private, revision=revision,
                          language=default_language(self.run.spec, self.summary), smoke=smoke,
                          limit=run_limit(self.run), loading=loading)


# --- the step -----------------------------------------------------------------------------------


def main(run_dir: Path, publish: PublishSpec, *, prepared: Path | None = None,
         settings: PublishSettings | None = None, endpoint: str | None = None,
         echo: Callable[[str], None] = print) -> Published:
    """Publish the run in `run_dir` (or the run `publish.run` beside it) as `publish` says;
    returns where everything went, also recorded in `run_dir`'s published.json.

    `publish.name` defaults to the trained run's name; `prepared` (or its prepared/ when
    `publish.dataset`) is also published as a dataset; `publish.space_id` is a Space id for
    the Hub (`publish.space` alone picks `<owner>/<name>-demo`).
    """
    settings = settings or PublishSettings()
    name, space, space_hardware = publish.name, publish.space_id, publish.space_hardware
    # 1. the trained model and the destination
    own = RunFolder.of(run_dir)
    run = read_run(own.sibling(publish.run).path if publish.run else run_dir)
    target = parse_target(publish.to) if publish.to else None
    if target and name and name != target.name:
        raise UserError(f"--name {name!r}: on the Hub the name is part of --to ({publish.to})")
    name = check_name(target.name if target else name or run.run_dir.name)
    if target is None and (space or space_hardware):
        raise UserError("--space SPACE_ID and --space-hardware deploy to the Hub: publish the "
                        "model with --to hf://owner/name (a local registry gets a Space folder "
                        "with plain --space)")
    # 2. for the Hub: a token that works, and the Space's, before any heavy work
    hub = Hub(read_token(settings), endpoint) if target else None
    user = hub.user() if hub else ""
    wants_space = publish.space or space is not None
    token = space_token(publish, settings, hub.token) if hub and wants_space else None
    if hub and wants_space:
        check_space_hardware(run.spec.base_model, space_hardware)

    # 3. the prepared clips: summarised in the card, published as a dataset when asked
    if publish.dataset and prepared is None:
        prepared = RunFolder(run.run_dir).prepared
    summary_source = prepared or RunFolder(run.run_dir).prepared
    clips = read_prepared(summary_source) if prepared or summary_source.is_dir() else None
    contents = Contents(run, name, publish, clips, prepared, wants_space,
                        base_preset(run.spec.base_model))

    # 4. write everything aside, then make it visible in one step per destination
    if hub and target:
        published = to_hub(contents, hub, target.owner or user, target, space, space_hardware,
                           token)
    else:
        registry = Path(publish.to) if publish.to else registry_dir(settings.home)
        published = to_registry(contents, Registry(registry))
    for line in published.lines():
        echo(line)
    if own.spec_file.is_file():  # a run folder (not a bare final/ copied elsewhere)
        own.write_published(published.record())
    return published


def space_token(publish: PublishSpec, settings: PublishSettings, write_token: str) -> SpaceToken:
    """Which token a Hub Space gets to load the model: only a private model needs one, and by
    default it is the operator's read-only token, never the publishing (write) token — a
    Space's code runs on the Hub, where a write token would let it change every repo."""
    if not publish.private:
        return SpaceToken(None, "none (the model is public)")
    if publish.space_token == "none":
        return SpaceToken(None, "none (publish.space_token: none): the Space cannot load the "
                          "private model")
    if publish.space_token == "write":
        return SpaceToken(write_token, "your publishing (write) token, as publish.space_token: "
                          "write asks; prefer a read-only token (HF_SPACE_TOKEN)")
    read_only = read_space_token(settings)
    if read_only == write_token:
        raise UserError(f"{SPACE_TOKEN_ENV} holds the publishing token itself: give demo "
                        "Spaces a read-only token, or set publish.space_token: write to give "
                        "them the write token on purpose")
    if read_only is None:
        return SpaceToken(None, f"none ({SPACE_TOKEN_ENV} is not set): the Space cannot load "
                          f"the private model until it has a token. Provide a read-only token "
                          f"in {SPACE_TOKEN_ENV} or a file named by VOXTUNE_HF_SPACE_TOKEN_FILE "
                          "(in the cluster: key space-token of the Hugging Face Secret, chart "
                          "value huggingface.spaceToken) and publish again")
    return SpaceToken(read_only, f"the read-only token from {SPACE_TOKEN_ENV}")


def base_preset(base_model: str) -> str | None:
    """The tiny-random preset name when the base is one (built locally, not on the Hub)."""
    from voxtune.models.presets import tiny_preset_window

    return base_model if tiny_preset_window(base_model) is not None else None


def write_dataset(contents: Contents, folder: Path, dataset_ref: str, on_hub: bool) -> None:
    """The prepared clips as parquet + dataset card + spec, in `folder`."""
    assert contents.prepared is not None and contents.clips is not None
    splits = write_parquet(contents.prepared, contents.clips, folder)
    card = render_dataset_card(contents.name, summarize(contents.clips), splits, dataset_ref,
                               contents.publish.private, on_hub,
                               smoke=contents.base_preset is not None)
    (folder / "README.md").write_text(card, encoding="utf-8")
    (folder / SPEC).write_text(contents.run.spec.to_yaml(), encoding="utf-8")


def check_space_hardware(base_model: str, hardware: str | None) -> None:
    """Refuse, before anything is published, a Space whose hardware cannot hold the model."""
    try:
        parameters = load_geometry(base_model).total_parameters
    except UserError:
        return  # a base the plan cannot size offline: the Hub's own limits apply
    problem = space_hardware_problem(parameters, hardware)
    if problem:
        raise UserError(problem)


def to_registry(contents: Contents, registry: Registry) -> Published:
    """A new version `<registry>/<name>/<n>/`: model, card, and the dataset and Space folders."""
    layouts: list[str] = []
    notes: list[str] = []

    def build(staging: Path, final: Path) -> None:
        layout = stage_model(contents.run, staging, contents.publish.merge)
        check_export(contents.run, staging, layout, contents.publish.max_wer_drift)
        layouts.append(layout)
        notes.append(vllm_note(staging))
        dataset_ref = str(final / DATASET_DIR) if contents.prepared else None
        if dataset_ref:
            write_dataset(contents, staging / DATASET_DIR, dataset_ref, on_hub=False)
        space_ref = str(final / SPACE_DIR) if contents.space else None
        if space_ref:
            write_space(staging / SPACE_DIR, contents.space_facts(layout, str(final), False,
                                                                 None))
        card = render_model_card(contents.facts(layout, str(final), False,
                                                dataset_ref=dataset_ref, space_ref=space_ref))
        (staging / "README.md").write_text(card, encoding="utf-8")

    final = registry.publish(contents.name, build)
    return Published(contents.name, layouts[-1], str(final), contents.run.metrics,
                     version=int(final.name),
                     dataset=str(final / DATASET_DIR) if contents.prepared else None,
                     space=str(final / SPACE_DIR) if contents.space else None,
                     vllm_note=notes[-1])


def staging_folder(run: TrainedRun) -> tempfile.TemporaryDirectory:
    """Where a Hub upload is staged: beside the run, on the volume sized for models (a merged
    Mini is ≈19 GB with Mistral's layout beside transformers'), not the pod's /tmp scratch
    (8 GiB); /tmp only when the run's folder cannot be written."""
    try:
        return tempfile.TemporaryDirectory(dir=run.run_dir, prefix=".publish-")
    except OSError:
        return tempfile.TemporaryDirectory(prefix="voxtune-publish-")


def to_hub(contents: Contents, hub: Hub, owner: str, target: HubTarget, space: str | None,
           hardware: str | None, token: SpaceToken | None) -> Published:
    """Model repo (+ dataset repo, + Space), each in one commit; all checked before any write."""
    private, revision = contents.publish.private, target.revision
    model_repo = f"{owner}/{target.name}"
    dataset_repo = f"{model_repo}-data" if contents.prepared else None
    space_repo = repo_id(space or f"{target.name}-demo", owner) if contents.space else None

    # 1. nothing is written unless every repo may be: no clash, no visibility surprise
    hub.check(model_repo, "model", private, SPEC)
    if dataset_repo:
        hub.check(dataset_repo, "dataset", private, SPEC)
    if space_repo:
        hub.check(space_repo, "space", private, INFERENCE_MODULE)

    commits: dict[str, str] = {}
    token_note = None
    with staging_folder(contents.run) as scratch:
        # 2. stage every file set first (merging can fail; then nothing was committed)
        staging = Path(scratch)
        layout = stage_model(contents.run, staging / "model", contents.publish.merge)
        check_export(contents.run, staging / "model", layout, contents.publish.max_wer_drift)
        note = vllm_note(staging / "model")
        facts = contents.facts(layout, model_repo, True, revision, dataset_repo, space_repo)
        (staging / "model" / "README.md").write_text(render_model_card(facts), encoding="utf-8")
        if dataset_repo:
            write_dataset(contents, staging / DATASET_DIR, dataset_repo, on_hub=True)
        if space_repo:
            write_space(staging / SPACE_DIR, contents.space_facts(layout, model_repo, True,
                                                                 revision))

        # 3. commit: the dataset before the model whose card names it, the Space last
        if dataset_repo:
            commits[dataset_repo] = hub.commit_folder(
                dataset_repo, "dataset", staging / DATASET_DIR, private=private,
                message=f"Publish {contents.name} speech dataset ({len(contents.clips or [])} "
                        "clips)", description="Prepared by voxtune: 16 kHz FLAC in parquet.")
        commits[model_repo] = hub.commit_folder(
            model_repo, "model", staging / "model", private=private, revision=revision,
            message=commit_message(contents, layout), description=commit_description(contents))
        if space_repo:
            # secret and hardware before the files, so the Space's first build has them
            assert token is not None  # main() decides it whenever there is a Space
            hub.create(space_repo, "space", private=private, space_sdk="gradio")
            removed = hub.space_settings(space_repo, token=token.value, hardware=hardware)
            token_note = token.note + ("; removed the HF_TOKEN secret an earlier publish gave "
                                       "it" if removed else "")
            commits[space_repo] = hub.commit_folder(
                space_repo, "space", staging / SPACE_DIR, private=private, space_sdk="gradio",
                message=f"Demo of {model_repo}", description="Generated by voxtune.")
    return Published(contents.name, layout, commits[model_repo], contents.run.metrics,
                     dataset=dataset_repo, space=space_repo, space_token=token_note,
                     commits=commits, vllm_note=note)


def commit_message(contents: Contents, layout: str) -> str:
    spec, metrics = contents.run.spec, contents.run.metrics
    text = f"Publish {contents.name}: {LAYOUT_NAMES[layout]} of {spec.base_model}"
    if "wer" in metrics:
        text += (f" (WER {format_percent(metrics.get('base_wer'))} → "
                 f"{format_percent(metrics['wer'])})")
    return text


def commit_description(contents: Contents) -> str:
    spec, metrics = contents.run.spec, contents.run.metrics
    return (f"Run {spec.name}: {spec.mode}, {metrics.get('train_steps', '?')} steps, language "
            f"{spec.language or 'auto'}. Published by voxtune; spec.yaml reproduces it.")
