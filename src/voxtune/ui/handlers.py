"""What the UI does with runs, as plain functions over voxtune.Client, for one user.

No gradio here: the tabs (voxtune.ui.tabs) wire these to widgets and turn UserError into
gr.Error, and the tests call them directly. The Train form and its plan are in
voxtune.ui.training, the text and tables the pages show in voxtune.ui.views. Every function
takes the `Context` (client, settings, demo servers) and the signed-in user, and only ever
touches that user's workspace and runs; what a run is doing, whether it holds a trained model
and what it published come from its status (the same on both backends), never from its folder
or its log lines:

* run names are `<user>-<name>`, and each is claimed in VOXTUNE_HOME/ui/owners/<run> (created
  exclusively) before it is submitted, so two users can never get, list or overwrite one run;
* a local folder as a data source must lie in the user's own workspace or the operator's
  shared-data folder (VOXTUNE_UI_SHARED_DATA), checked when it is added and again at launch;
* a publish of a finished run is a run of its own (`steps: [publish]`) whose spec names the
  trained run (`publish.run`), so the publish step does the work on either backend and the UI
  writes no run folder.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from voxtune.client import Client
from voxtune.errors import UserError
from voxtune.run.layout import RunFolder, registry_dir
from voxtune.run.status import Publication, RunStatus
from voxtune.run.steps import TERMINAL
from voxtune.spec import (
    RUN_NAME,
    GranarySource,
    HubSource,
    PreparedSource,
    PublishSpec,
    RunSpec,
    format_validation_error,
)
from voxtune.ui.demo import DemoServers
from voxtune.ui.settings import UiSettings
from voxtune.ui.trackio_reader import Curves, read_curves
from voxtune.ui.workspace import Workspace

OWNERS = Path("ui") / "owners"
HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
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

    @property
    def host_memory_gib(self) -> float | None:
        """The memory a run gets besides its GPUs: this machine's for local runs; unknown on
        a cluster (the pod's limit is the controller's to set)."""
        if self.kubernetes:
            return None
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30

    def workspace(self, user: str) -> Workspace:
        return Workspace(self.home, user, self.settings.max_upload_mb * 2**20,
                         self.settings.max_clips)


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


# --- sources ---------------------------------------------------------------------------------


def dataset_source(ctx: Context, user: str) -> PreparedSource:
    """The user's built dataset as a source the run's prepare step takes as it is (nothing is
    decoded twice); on Kubernetes relative to the shared volume."""
    workspace = ctx.workspace(user)
    if not workspace.manifest.is_file():
        raise UserError("build the dataset first (Dataset tab → Build dataset)")
    folder = workspace.dataset
    return PreparedSource(path=folder.relative_to(ctx.home) if ctx.kubernetes
                          else folder.resolve())


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


@dataclass(frozen=True)
class SourceForm:
    """The Dataset tab's "add a source" fields (which apply depends on `kind`)."""

    kind: str = "hub"  # or "granary"
    dataset: str = ""  # hub: a Hub id or a folder
    config: str = ""
    split: str = "train"
    text_column: str = "text"
    subset: str = ""  # granary: <lang>_<corpus>
    audio_root: str = ""
    max_samples: int = 1000  # 0: all

    def source(self) -> HubSource | GranarySource:
        """The source these fields describe; a UserError naming a field the spec refuses."""
        limit = int(self.max_samples or 0) or None
        try:
            if self.kind == "hub":
                return HubSource(dataset=self.dataset.strip(), config=self.config or None,
                                 split=self.split or "train",
                                 text_column=self.text_column or "text", max_samples=limit)
            return GranarySource(subset=self.subset.strip(),
                                 audio_root=Path(self.audio_root.strip()), max_samples=limit)
        except ValidationError as error:
            raise UserError(format_validation_error(error, f"{self.kind} source")) from None


def add_source(ctx: Context, user: str, source: HubSource | GranarySource) -> None:
    workspace = ctx.workspace(user)
    workspace.set_sources([*workspace.sources(), checked_source(ctx, user, source)])


def submit(ctx: Context, user: str, spec: RunSpec) -> RunStatus:
    """Claim the run's name for `user`, then submit it."""
    claim(ctx, user, spec.name)
    return ctx.client.submit(spec)


# --- runs: list, page, cancel --------------------------------------------------------------------


def my_runs(ctx: Context, user: str) -> list[RunStatus]:
    return [status for status in ctx.client.list() if owns(ctx, user, status.name)]


def progress(status: RunStatus) -> str:
    """Steps done, the train step's own progress and its ETA (same on both backends)."""
    text = status.progress or "not started"
    if status.eta:
        text += f", ends ≈ {status.eta[11:16]} UTC"
    return text


def finished_runs(ctx: Context, user: str) -> list[str]:
    """The user's runs that succeeded with a trained model: what can be published."""
    return [status.name for status in my_runs(ctx, user)
            if status.phase == "Succeeded" and status.trained]


@dataclass
class RunPage:
    status: RunStatus
    logs: str
    curves: Curves

    @property
    def finished(self) -> bool:
        return self.status.phase in TERMINAL

    @property
    def explanation(self) -> str:
        """Why it waits or failed, or what it is doing."""
        reason, message = self.status.reason, self.status.message
        return f"{reason}: {message}" if reason else message

    @property
    def published(self) -> Publication | None:
        return self.status.published


def run_page(ctx: Context, user: str, run: str) -> RunPage:
    status = ctx.client.status(_mine(ctx, user, run))
    tail = "\n".join(ctx.client.logs(run).splitlines()[-LOG_TAIL:])
    # the training curves are the train step's trackio store on the shared volume (the one
    # thing the status does not carry: it grows with every logged step)
    return RunPage(status, tail, read_curves(RunFolder.named(ctx.home, run).trackio))


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
    """A publish-only run (`steps: [publish]`, `publish.run` = the trained run) with the
    form's settings, for a run that has succeeded with a trained model."""
    status = ctx.client.status(_mine(ctx, user, run))
    if status.phase != "Succeeded" or not status.trained:
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
                               space=form.space, run=run)})
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
