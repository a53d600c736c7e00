"""What the UI does, as plain functions: form → RunSpec → voxtune.Client, for one user.

No gradio here: app.py wires these to widgets and turns UserError into gr.Error, and the tests
call them directly. Every function takes the `Context` (client, settings, demo servers) and the
signed-in user, and only ever touches that user's workspace and runs:

* run names are `<user>-<name>`, and each is claimed in VOXTUNE_HOME/ui/owners/<run> (created
  exclusively) before it is submitted, so two users can never get, list or overwrite one run;
* a local folder as a data source must lie in the user's own workspace or the operator's
  shared-data folder (VOXTUNE_UI_SHARED_DATA), checked when it is added and again at launch;
* a publish of a finished run is a run of its own (`steps: [publish]`) whose final/ links to the
  trained run's, so the existing publish step does the work on either backend.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from voxtune.client import Client
from voxtune.errors import UserError
from voxtune.run.layout import FINAL, RunFolder, registry_dir
from voxtune.run.status import RunStatus, headline_metrics
from voxtune.run.steps import STEPS, TERMINAL
from voxtune.spec import (
    DEFAULT_BASE_MODEL,
    RUN_NAME,
    DataSpec,
    GranarySource,
    HubSource,
    JsonlSource,
    LoraSpec,
    PublishSpec,
    ResourcesSpec,
    RunSpec,
    TrainingSpec,
    format_validation_error,
)
from voxtune.ui.demo import DemoServers
from voxtune.ui.settings import UiSettings
from voxtune.ui.trackio_reader import Curves, read_curves
from voxtune.ui.workspace import Workspace

OWNERS = Path("ui") / "owners"
GPU_PROFILES = {"CPU only": 0, "1 GPU": 1, "2 GPUs": 2, "4 GPUs": 4, "8 GPUs": 8}
BASE_MODELS = (DEFAULT_BASE_MODEL, "mistralai/Voxtral-Small-24B-2507", "tiny-random")
HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
PUBLISHED_LINES = ("published ", "  dataset:", "  Space:", "  commit ")
LOG_TAIL = 200  # lines of log shown on the run page


@dataclass
class Context:
    client: Client
    settings: UiSettings
    home: Path
    demo: DemoServers

    @property
    def kubernetes(self) -> bool:
        return self.client.backend == "kubernetes"

    def workspace(self, user: str) -> Workspace:
        return Workspace(self.home, user, self.settings.max_upload_mb * 2**20,
                         self.settings.max_clips)


@dataclass(frozen=True)
class TrainForm:
    """The Train tab's fields; defaults are the ones the form shows."""

    name: str = ""
    base_model: str = DEFAULT_BASE_MODEL
    mode: str = "lora"
    language: str = "auto"
    gpu_profile: str = "1 GPU"
    max_steps: int = 0  # 0: train for `epochs`
    epochs: float = 3.0
    learning_rate: float = 1e-4
    batch_size: int = 2
    grad_accum: int = 4
    lora_rank: int = 8
    lora_alpha: int = 32
    eval_fraction: float = 0.1
    publish_after: bool = False


# --- runs: names and ownership --------------------------------------------------------------


def run_name(user: str, name: str) -> str:
    """`<user>-<name>`; an empty name gets a random one, so fast clicks never collide."""
    name = re.sub(r"[^a-z0-9]+", "-", name.strip().lower()).strip("-")
    name = name or f"run-{secrets.token_hex(3)}"
    full = f"{user}-{name}"
    if not RUN_NAME.match(full):
        raise UserError(f"run name {name!r}: with your user prefix it must be at most 40 "
                        "lowercase letters, digits or '-'")
    return full


def _owner_file(ctx: Context, run: str) -> Path:
    return ctx.home / OWNERS / run


def claim(ctx: Context, user: str, run: str) -> None:
    """Make `run` this user's, atomically; a name another user holds is refused."""
    path = _owner_file(ctx, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8") as owner:
            owner.write(user)
    except FileExistsError:
        if path.read_text(encoding="utf-8") != user:
            raise UserError(f"the run name {run!r} is taken; pick another") from None


def owns(ctx: Context, user: str, run: str) -> bool:
    path = _owner_file(ctx, run)
    return path.is_file() and path.read_text(encoding="utf-8") == user


def _mine(ctx: Context, user: str, run: str) -> str:
    if not run or not owns(ctx, user, run):
        raise UserError(f"no run named {run!r} among your runs")
    return run


# --- train: form → spec → preview → launch ---------------------------------------------------


def dataset_source(ctx: Context, user: str) -> JsonlSource:
    """The user's prepared dataset as a source; on Kubernetes relative to the shared volume."""
    manifest = ctx.workspace(user).manifest
    if not manifest.is_file():
        raise UserError("build the dataset first (Dataset tab → Build dataset)")
    path = manifest.relative_to(ctx.home) if ctx.kubernetes else manifest.resolve()
    return JsonlSource(path=path)


def _allowed_folder(ctx: Context, user: str, path: Path, what: str, other: str = "") -> Path:
    """`path` with symlinks resolved, if it lies in the user's workspace or the shared-data
    folder; the server can read every user's folders, so nothing else may be named."""
    resolved = path.resolve()
    roots = [ctx.workspace(user).root, ctx.settings.shared_data]
    if not any(root is not None and resolved.is_relative_to(root.resolve()) for root in roots):
        shared = f" or the shared data folder {ctx.settings.shared_data}" \
            if ctx.settings.shared_data else ""
        raise UserError(f"{what} {str(path)!r} is not a folder inside your workspace{shared}"
                        f"{other}")
    if not resolved.is_dir():
        raise UserError(f"{what} {str(path)!r}: no such folder")
    return resolved


def _hub_id_or_folder(ctx: Context, user: str, dataset: str, what: str) -> str:
    # A name that exists as a folder is read as that folder (datasets.load_dataset does the
    # same, relative to the working directory the steps inherit), even when it looks like org/name.
    if HUB_REPO.match(dataset) and not Path(dataset).exists():
        return dataset
    return str(_allowed_folder(ctx, user, Path(dataset), what, ", nor a Hub id (org/name)"))


def checked_source(ctx: Context, user: str,
                   source: HubSource | GranarySource) -> HubSource | GranarySource:
    """`source` with its local folders resolved, or a UserError for one the user may not read."""
    dataset = _hub_id_or_folder(ctx, user, source.dataset, "dataset")
    if isinstance(source, HubSource):
        return source.model_copy(update={"dataset": dataset})
    return source.model_copy(update={
        "dataset": dataset,
        "audio_root": _allowed_folder(ctx, user, source.audio_root, "Granary audio root")})


def add_source(ctx: Context, user: str, source: HubSource | GranarySource) -> None:
    workspace = ctx.workspace(user)
    workspace.set_sources([*workspace.sources(), checked_source(ctx, user, source)])


def build_spec(ctx: Context, user: str, form: TrainForm) -> RunSpec:
    if form.gpu_profile not in GPU_PROFILES:
        raise UserError(f"GPU profile {form.gpu_profile!r}: choose one of {list(GPU_PROFILES)}")
    # checked again: sources.json may predate the rule, or the shared folder may have moved
    sources = [dataset_source(ctx, user),
               *(checked_source(ctx, user, source) for source in ctx.workspace(user).sources())]
    steps = [step for step in STEPS if form.publish_after or step != "publish"]
    try:
        return RunSpec(
            name=run_name(user, form.name), base_model=form.base_model.strip(),
            mode=form.mode, language=None if form.language in ("", "auto") else form.language,
            steps=steps, data=DataSpec(sources=sources, eval_fraction=form.eval_fraction),
            training=TrainingSpec(
                max_steps=int(form.max_steps) or None, epochs=form.epochs,
                learning_rate=form.learning_rate, batch_size=int(form.batch_size),
                grad_accum=int(form.grad_accum),
                lora=LoraSpec(rank=int(form.lora_rank), alpha=int(form.lora_alpha))),
            resources=ResourcesSpec(gpus=GPU_PROFILES[form.gpu_profile]))
    except ValidationError as error:
        raise UserError(format_validation_error(error, "form")) from None


def preview(ctx: Context, user: str, form: TrainForm) -> tuple[str, str]:
    """The exact spec, and on Kubernetes the FineTuneRun that Launch creates."""
    spec = build_spec(ctx, user, form)
    return spec.to_yaml(), run_yaml(ctx, spec)


def run_yaml(ctx: Context, spec: RunSpec) -> str:
    if not ctx.kubernetes:
        return ""
    from voxtune.controller.crd import run_object

    document = run_object(spec, ctx.client.executor.namespace)
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def submit(ctx: Context, user: str, spec: RunSpec) -> RunStatus:
    claim(ctx, user, spec.name)
    return ctx.client.submit(spec)


def launch(ctx: Context, user: str, form: TrainForm) -> RunStatus:
    return submit(ctx, user, build_spec(ctx, user, form))


# --- runs: list, page, cancel --------------------------------------------------------------------


def my_runs(ctx: Context, user: str) -> list[RunStatus]:
    return [status for status in ctx.client.list() if owns(ctx, user, status.name)]


def progress(status: RunStatus) -> str:
    """Steps done, the train step's own progress and its ETA (same on both backends)."""
    text = status.progress or "not started"
    if status.eta:
        text += f", ends ≈ {status.eta[11:16]} UTC"
    return text


@dataclass
class RunPage:
    status: RunStatus
    progress: str
    explanation: str  # why it waits or failed, or what it is doing
    logs: str
    curves: Curves
    metrics: dict[str, float]
    published: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status.phase in TERMINAL


def run_page(ctx: Context, user: str, run: str) -> RunPage:
    status = ctx.client.status(_mine(ctx, user, run))
    logs = ctx.client.logs(run)
    folder = RunFolder.named(ctx.home, run)
    reason = getattr(status, "reason", "")
    explanation = f"{reason}: {status.message}" if reason else status.message
    metrics = status.metrics or headline_metrics(folder.metrics)
    published = [line for line in logs.splitlines() if line.startswith(PUBLISHED_LINES)]
    tail = "\n".join(logs.splitlines()[-LOG_TAIL:])
    return RunPage(status, progress(status), explanation, tail, read_curves(folder.trackio),
                   metrics, published)


def cancel(ctx: Context, user: str, run: str) -> RunStatus:
    return ctx.client.cancel(_mine(ctx, user, run))


# --- publish -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishForm:
    destination: str = "local"  # "local" registry or "hub"
    hub_repo: str = ""  # owner/name on the Hub
    private: bool = True
    dataset: bool = False
    space: bool = False


def publish(ctx: Context, user: str, run: str, form: PublishForm) -> RunStatus:
    """A publish run for a finished run (its final/ linked in), with the form's settings."""
    status = ctx.client.status(_mine(ctx, user, run))
    trained = RunFolder.named(ctx.home, run).final
    if status.phase != "Succeeded" or not trained.is_dir():
        raise UserError(f"run {run!r} has no trained model yet (it is {status.phase}); publish "
                        "a run that has succeeded")
    if form.destination == "hub":
        if not HUB_REPO.match(form.hub_repo.strip()):
            raise UserError(f"Hub repository {form.hub_repo!r}: use owner/name")
        to = f"hf://{form.hub_repo.strip()}"
    else:
        to = None
    spec = ctx.client.spec(run).model_copy(update={
        "name": f"{run[:34]}-p{secrets.token_hex(2)}", "steps": ["publish"],
        "publish": PublishSpec(to=to, private=form.private, dataset=form.dataset,
                               space=form.space)})
    folder = RunFolder.named(ctx.home, spec.name)
    folder.path.mkdir(parents=True)
    # relative, so it resolves on the shared volume wherever it is mounted
    folder.final.symlink_to(Path("..") / run / FINAL, target_is_directory=True)
    return submit(ctx, user, spec)


def my_models(ctx: Context, user: str) -> list[str]:
    """`name@version` of the user's models in the local registry, newest first."""
    from voxtune.publish.registry import Registry

    entries = Registry(registry_dir(ctx.home)).entries()
    return [f"{entry.name}@{entry.version}" for entry in reversed(entries)
            if owns(ctx, user, entry.name)]


# --- try it -----------------------------------------------------------------------------------


def try_it(ctx: Context, user: str, model: str, audio: str | None,
           language: str) -> dict[str, Any]:
    """Base and fine-tuned transcripts of one recording from the `voxtune serve` API."""
    if not audio:
        raise UserError("record or upload a clip first")
    if ctx.settings.demo_url:
        url = ctx.settings.demo_url
    else:
        if model not in my_models(ctx, user):
            raise UserError("choose one of your published models (Publish tab first)")
        url = ctx.demo.ensure(str(registry_dir(ctx.home) / model.replace("@", os.sep)))
    return ctx.demo.transcribe(url, Path(audio), language)
