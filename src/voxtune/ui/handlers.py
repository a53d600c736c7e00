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
  shared-data folder (VOXTUNE_UI_SHARED_DATA), checked when it is added and again at launch
  (voxtune.ui.sources, which also refuses a dataset older than the clips);
* a publish of a finished run is a run of its own (`steps: [publish]`) whose spec names the
  trained run (`publish.run`), so the publish step does the work on either backend and the UI
  writes no run folder.
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxtune.client import Client, cluster_gpu_profiles
from voxtune.data.calibrate import ErrorReport, Outcome
from voxtune.errors import UserError
from voxtune.plan import DEFAULT_PROFILES, GpuProfile
from voxtune.plan.geometry import TINY_PRESET
from voxtune.run.layout import SPEC, RunFolder, registry_dir
from voxtune.run.progress import LINE as PROGRESS_LINE
from voxtune.run.progress import format_duration
from voxtune.run.status import Publication, RunStatus
from voxtune.run.steps import TERMINAL
from voxtune.spec import (
    RUN_NAME,
    PublishSpec,
    RunSpec,
    read_resolved_spec,
)
from voxtune.ui.calibration import Calibration, State
from voxtune.ui.demo import DemoServers
from voxtune.ui.hardware import detect_gpus
from voxtune.ui.phrases import PHRASES
from voxtune.ui.settings import UiSettings
from voxtune.ui.trackio_reader import Curves, read_curves
from voxtune.ui.workspace import Workspace

OWNERS = Path("ui") / "owners"
PUBLISHES = Path("ui") / "publishes"  # <publish run> holds the name of the run it publishes
HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
LOG_TAIL = 20  # lines of log the run page shows, all visible at once: the latest
ERROR_LINE = re.compile(r"^(error|fatal)\b|Error\b|Exception\b|^\S+: error:", re.IGNORECASE)


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

    @functools.cached_property
    def local_gpus(self) -> list[GpuProfile]:
        """The GPUs local runs get (none on a cluster: its GPU profiles are the plan's)."""
        return [] if self.kubernetes else detect_gpus()

    @functools.cached_property
    def gpu_profiles(self) -> dict[str, GpuProfile]:
        """The GPU profiles a cluster run is planned against, by name: the controller's own
        (its job settings file, when the chart mounts it), else the plan's defaults."""
        profiles = DEFAULT_PROFILES
        if self.kubernetes and self.settings.job_settings:
            profiles = cluster_gpu_profiles(self.settings.job_settings)
        return {profile.name: profile for profile in profiles}

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
    """Whether `run` is `user`'s. Without sign-in there is one user, so the runs and models
    made with the CLI under the same VOXTUNE_HOME are theirs too."""
    path = _owner_file(ctx, run)
    if not path.is_file():
        return ctx.settings.auth == "none"
    return path.read_text(encoding="utf-8") == user


def where_runs_are(ctx: Context) -> str:
    """Where this UI looks for runs and models, for people who made some elsewhere."""
    if ctx.kubernetes:
        return (f"FineTuneRuns in namespace `{ctx.client.executor.namespace}`, the models in "
                f"`{registry_dir(ctx.home)}`")
    return f"runs in `{ctx.home / 'runs'}`, models in `{registry_dir(ctx.home)}`"


def _mine(ctx: Context, user: str, run: str) -> str:
    if not run or not owns(ctx, user, run):
        raise UserError(f"no run named {run!r} among your runs")
    return run


def submit(ctx: Context, user: str, spec: RunSpec) -> RunStatus:
    """Claim the run's name for `user`, then submit it."""
    claim(ctx, user, spec.name)
    return ctx.client.submit(spec)


# --- runs: list, page, cancel, resume, delete ---------------------------------------------------


def submitted_at(status: RunStatus) -> str:
    """When the run was last started (its first step's start, else its last update)."""
    starts = [step.started for step in status.steps.values() if step.started]
    return min(starts) if starts else status.updated


def my_runs(ctx: Context, user: str) -> list[RunStatus]:
    """The user's runs, newest first."""
    mine = [status for status in ctx.client.list() if owns(ctx, user, status.name)]
    return sorted(mine, key=submitted_at, reverse=True)


def publish_of(ctx: Context, run: str) -> str | None:
    """The trained run a publish-only run publishes (None for any other run)."""
    path = ctx.home / PUBLISHES / run
    return path.read_text(encoding="utf-8") if path.is_file() else None


def newest_training_run(ctx: Context, runs: list[RunStatus]) -> str | None:
    """What the Runs tab opens on: the newest run that trains (a publish is looked at on the
    run it publishes)."""
    return next((s.name for s in runs if publish_of(ctx, s.name) is None),
                runs[0].name if runs else None)


def progress(status: RunStatus) -> str:
    """Steps done and the running phase with the time left (same on both backends); nothing
    is estimated for a run that has ended."""
    text = status.progress or "not started"
    current = status.current
    if current and current.remaining_s is not None:
        text += f", ~{format_duration(current.remaining_s)} left"
    return text


def finished_runs(ctx: Context, user: str) -> list[str]:
    """The user's runs that succeeded with a trained model, newest first: what can be
    published."""
    return [status.name for status in my_runs(ctx, user)
            if status.phase == "Succeeded" and status.trained]


@dataclass
class RunPage:
    status: RunStatus
    logs: str
    curves: Curves
    samples: list[dict[str, Any]]  # per held-out clip: id, reference, base, tuned
    # how the scores were measured (metrics.json): `normalizer`, `general_dataset`, …
    scoring: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status.phase in TERMINAL

    @property
    def resumable(self) -> bool:
        return self.status.phase in ("Failed", "Cancelled")

    @property
    def explanation(self) -> str:
        """Why it waits or failed, or what it is doing; for a failure the error itself first,
        then the rest of the log tail."""
        reason, message = self.status.reason, self.status.message
        if self.status.phase == "Failed":
            message = error_first(message)
        return f"{reason}: {message}" if reason else message

    @property
    def published(self) -> Publication | None:
        return self.status.published


def error_first(message: str) -> str:
    """A failure message ("train failed (…):" + log tail) with the tail's last error line
    moved up front: the tail ends in the error, after lines of retries and warnings."""
    head, _, tail = message.partition("\n")
    lines = tail.splitlines()
    errors = [line for line in lines if ERROR_LINE.search(line)]
    if not errors:
        return message
    return "\n".join([f"{head} {errors[-1].strip()}", "", "log tail:", *lines])


def run_page(ctx: Context, user: str, run: str) -> RunPage:
    status = ctx.client.status(_mine(ctx, user, run))
    # the progress lines are the bar above; the box shows the rest, newest at the bottom
    lines = [line for line in ctx.client.logs(run).splitlines() if not PROGRESS_LINE.match(line)]
    # the curves and per-clip transcripts are the train step's files on the shared volume (the
    # status carries neither: one grows with every logged step, the other with the eval set)
    folder = RunFolder.named(ctx.home, publish_of(ctx, run) or run)
    metrics = read_metrics(folder.metrics)
    return RunPage(status, "\n".join(lines[-LOG_TAIL:]), read_curves(folder.trackio),
                   samples_of(metrics), {key: metrics[key] for key in SCORING if key in metrics})


# what metrics.json says about how the run's scores were measured, for the run page
SCORING = ("normalizer", "general_dataset", "general_normalizer", "merged_wer_drift")


def read_metrics(metrics_file: Path) -> dict[str, Any]:
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # not written yet (or being replaced)
    return metrics if isinstance(metrics, dict) else {}


def samples_of(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    samples = metrics.get("samples")
    return [row for row in samples if isinstance(row, dict)] if isinstance(samples, list) \
        else []


def spec_of(ctx: Context, user: str, run: str) -> RunSpec:
    """The spec one of the user's runs was submitted with (Clone into Train)."""
    return ctx.client.spec(_mine(ctx, user, run))


def cancel(ctx: Context, user: str, run: str) -> RunStatus:
    return ctx.client.cancel(_mine(ctx, user, run))


def resume(ctx: Context, user: str, run: str) -> RunStatus:
    """Submit a failed or cancelled run again: finished steps are kept, training resumes from
    its last checkpoint. Local runs only: the controller does not restart a FineTuneRun that
    has ended (submitting it again is a no-op there)."""
    if ctx.kubernetes:
        raise UserError("on Kubernetes a run that ended is not started again; clone its "
                        "settings into Train and launch a new one")
    status = ctx.client.status(_mine(ctx, user, run))
    if status.phase not in ("Failed", "Cancelled"):
        raise UserError(f"run {run!r} is {status.phase}; only a failed or cancelled run is "
                        "launched again")
    return ctx.client.submit(ctx.client.spec(run))


def delete(ctx: Context, user: str, run: str) -> None:
    """Remove the run (a running one is cancelled first) and its ownership record."""
    ctx.client.delete(_mine(ctx, user, run))
    _owner_file(ctx, run).unlink(missing_ok=True)
    (ctx.home / PUBLISHES / run).unlink(missing_ok=True)


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
        if not ctx.kubernetes:  # a local publish step reads this process's token
            from voxtune.publish.hub import PublishSettings, read_token

            read_token(PublishSettings())  # the UserError that says how to provide one
        to = f"hf://{form.hub_repo.strip()}"
    else:
        to = None
    spec = ctx.client.spec(run).model_copy(update={
        "name": f"{run[:34]}-p{secrets.token_hex(2)}", "steps": ["publish"],
        "publish": PublishSpec(to=to, private=form.private, dataset=form.dataset,
                               space=form.space, run=run)})
    claim(ctx, user, spec.name)
    record = ctx.home / PUBLISHES / spec.name
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(run, encoding="utf-8")
    return ctx.client.submit(spec)


def publish_outcome(ctx: Context, user: str, run: str) -> str | None:
    """What became of a publish run, once it has ended (None while it runs)."""
    status = ctx.client.status(_mine(ctx, user, run))
    if status.phase not in TERMINAL:
        return None
    if status.phase == "Succeeded" and status.published:
        where = status.published
        return (f"Published **{where.name}**" + (f" version {where.version}" if where.version
                                                 else "") + f": `{where.model}`")
    return f"Publishing **{run}** {status.phase.lower()}: {error_first(status.message)}"


def my_models(ctx: Context, user: str) -> list[str]:
    """`name@version` of the user's models in the local registry, newest first."""
    from voxtune.publish.registry import Registry

    entries = Registry(registry_dir(ctx.home)).entries()
    return [f"{entry.name}@{entry.version}" for entry in reversed(entries)
            if owns(ctx, user, entry.name)]


def is_smoke_test(ctx: Context, model: str) -> bool:
    """Whether registry model `name@version` was trained from the tiny random preset (a smoke
    test of the pipeline, whose transcripts are noise by design), from the spec beside it."""
    spec_file = registry_dir(ctx.home) / model.replace("@", os.sep) / SPEC
    try:
        return bool(TINY_PRESET.match(read_resolved_spec(spec_file).base_model))
    except (OSError, UserError, ValueError):
        return False


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


# --- targeted recording ---------------------------------------------------------------------
# Calibrate on the user's voice, then prompt what the model gets wrong (voxtune.data.calibrate);
# the transcripts come from `voxtune serve` (the demo service on a cluster), never from torch
# here. The files are voxtune.ui.calibration's.


@dataclass
class Targeted:
    """Where the user's targeted recording stands, and what to read next."""

    state: State
    recorded: int  # calibration prompts recorded
    prompt: str | None  # what to read next; None while targeted recording is off
    why: str  # why that prompt
    report: ErrorReport  # the words of the round being recorded for

    @property
    def calibrating(self) -> bool:
        return self.state.active and self.recorded < len(self.state.prompts)


def calibration_of(ctx: Context, user: str) -> Calibration:
    return Calibration(ctx.workspace(user))


def _transcriber(ctx: Context, user: str, model: str) -> str:
    """The URL of the server that transcribes the calibration clips: the demo service when the
    UI has one, else `voxtune serve` of one of the user's published models or a Hub id (the
    base transcripts of a tuned model are its base's)."""
    if ctx.settings.demo_url:
        return ctx.settings.demo_url
    if ctx.kubernetes:
        raise UserError("calibration on a cluster transcribes with the demo service: enable it "
                        "in the chart (demo.enabled)")
    if model in my_models(ctx, user):
        return ctx.demo.ensure(str(registry_dir(ctx.home) / model.replace("@", os.sep)))
    if HUB_REPO.match(model.strip()):
        return ctx.demo.ensure(model.strip())
    raise UserError(f"model {model!r}: choose one of your published models, or a Hub id "
                    "(owner/name) such as the base model you will fine-tune")


def targeted(ctx: Context, user: str) -> Targeted:
    """The next prompt: the first calibration prompt not recorded yet, then the candidates
    ranked by the words the model got wrong (recorded clips' words earn less)."""
    from voxtune.data.calibrate import rank
    from voxtune.data.prompts import pool

    workspace = ctx.workspace(user)
    store = Calibration(workspace)
    state, clips = store.state(), store.clips()
    report = store.report(state.round_of)
    recorded = sum(prompt in clips for prompt in state.prompts)
    if not state.active:
        return Targeted(state, recorded, None, "", report)
    left = [prompt for prompt in state.prompts if prompt not in clips]
    if left:
        return Targeted(state, recorded, left[0], f"calibration prompt {recorded + 1} of "
                        f"{len(state.prompts)}: chosen to cover your text's words", report)
    choices = rank(pool(state.text, PHRASES.get(state.language, ())), report,
                   recorded=[row["text"] for row in workspace.clips().values()],
                   skip=[*state.prompts, *state.skipped], language=state.language)
    if not choices:
        return Targeted(state, recorded, None, "every prompt is recorded or skipped: add more "
                        "text and start again", report)
    return Targeted(state, recorded, choices[0].prompt, choices[0].why, report)


def start_targeted(ctx: Context, user: str, text: str, language: str, count: int,
                   model: str) -> Targeted:
    """A new calibration: `count` prompts covering `text`'s words (built-in sentences top it
    up), transcribed by `model`. The server is started now, so a model that cannot be served
    fails before anything is recorded."""
    from voxtune.data.calibrate import calibration_set
    from voxtune.data.prompts import cut

    if language not in PHRASES:
        raise UserError(f"language {language!r}: built-in sentences exist for "
                        f"{', '.join(PHRASES)}")
    if not 1 <= int(count or 0) <= 50:
        raise UserError("calibration prompts: between 1 and 50")
    _transcriber(ctx, user, model)
    prompts = calibration_set(cut(text), PHRASES[language], int(count), language=language)
    calibration_of(ctx, user).start(State(text=text, language=language,
                                          model=ctx.settings.demo_url or model.strip(),
                                          prompts=prompts, active=True))
    return targeted(ctx, user)


def save_calibration_take(ctx: Context, user: str, audio: str | None,
                          text: str) -> dict[str, Any]:
    """Check a take of a calibration prompt with the prepare step's audio rules, have it
    transcribed, keep both."""
    from voxtune.data.audio import ClipLimits, load_16k

    store = calibration_of(ctx, user)
    state = store.state()
    if not audio:
        raise UserError("record something first (click the microphone's record button)")
    if text.strip() not in state.prompts:
        raise UserError("read the calibration prompt as shown: the report compares what the "
                        "model heard with it")
    load_16k(Path(audio), ClipLimits())  # AudioRejected with the reason
    reply = ctx.demo.transcribe(_transcriber(ctx, user, state.model), Path(audio),
                                state.language)
    heard = reply["base"] if reply.get("base") is not None else reply["tuned"]
    return store.add(Path(audio), text.strip(), heard)


def skip_targeted(ctx: Context, user: str, prompt: str) -> Targeted:
    """Pass over `prompt`: a calibration prompt leaves the calibration set, a targeted one is
    not proposed again this round."""
    store = calibration_of(ctx, user)
    state, prompt = store.state(), prompt.strip()
    if prompt in state.prompts and prompt not in store.clips():
        state.prompts.remove(prompt)
    elif prompt not in state.prompts:
        state.skipped.append(prompt)
    store.save(state)
    return targeted(ctx, user)


def stop_targeted(ctx: Context, user: str) -> None:
    store = calibration_of(ctx, user)
    state = store.state()
    state.active = False
    store.save(state)


def rescore(ctx: Context, user: str, run: str) -> list[Outcome]:
    """Transcribe the calibration clips with `run`'s tuned model (`voxtune serve` of its
    folder; on a cluster the demo service, which must be serving that run's model) and compare
    with the base's words."""
    from voxtune.data.calibrate import outcomes

    _mine(ctx, user, run)
    store = calibration_of(ctx, user)
    clips = store.clips()
    if not clips:
        raise UserError("no calibration clips yet: record them on the Record page (Targeted "
                        "recording)")
    folder = RunFolder.named(ctx.home, publish_of(ctx, run) or run)
    if not ctx.kubernetes and folder.final.is_dir():
        url = ctx.demo.ensure(str(folder.path))
    elif ctx.settings.demo_url:
        # the UI pod loads no model: the demo service answers, so it must serve this run's
        url = ctx.settings.demo_url
    else:
        raise UserError(f"run {run!r} has no trained model to check yet")
    language = store.state().language
    store.set_run_transcripts(run, {row["id"]: ctx.demo.transcribe(
        url, store.audio(row), language)["tuned"] for row in clips.values()})
    return outcomes(store.report(), store.report(run))


def checked_words(ctx: Context, user: str, run: str) -> list[Outcome] | None:
    """The last check of the calibration words with `run`'s model (None: not checked)."""
    from voxtune.data.calibrate import outcomes

    store = calibration_of(ctx, user)
    if run not in store.run_transcripts():
        return None
    return outcomes(store.report(), store.report(run))


def record_more(ctx: Context, user: str, run: str) -> Targeted:
    """A new targeted round for the words `run`'s model still gets wrong."""
    _mine(ctx, user, run)
    store = calibration_of(ctx, user)
    if run not in store.run_transcripts():
        raise UserError("check the calibration words with this run's model first")
    state = store.state()
    state.round_of, state.active, state.skipped = run, True, []
    store.save(state)
    return targeted(ctx, user)
