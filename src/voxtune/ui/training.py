"""The Train page's logic: the form → RunSpec, its resource plan, and the choices it offers.

The plan is voxtune.plan's (`plan_run`, from the model's config alone: no GPU, no weights), so
the page shows what `voxtune plan` and the controller would say. The form offers only
combinations that fit: a mode, a GPU count and a GPU profile are listed when the plan says the
run fits with them, and a choice the other fields rule out moves to one that fits (Small-24B
is never offered for full fine-tuning on one GPU). Launch refuses a spec whose plan does not
fit, with the plan's advice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import yaml
from pydantic import ValidationError

from voxtune.errors import UserError
from voxtune.plan import Plan, plan_run
from voxtune.plan.geometry import Geometry, load_geometry
from voxtune.run.status import RunStatus
from voxtune.run.steps import STEPS
from voxtune.spec import (
    DEFAULT_BASE_MODEL,
    LEARNING_RATES,
    DataSpec,
    LoraSpec,
    ResourcesSpec,
    RunSpec,
    Source,
    TrainingSpec,
    format_validation_error,
)
from voxtune.ui.handlers import Context, run_name, submit
from voxtune.ui.sources import checked_source, dataset_source

BASE_MODELS = (DEFAULT_BASE_MODEL, "mistralai/Voxtral-Small-24B-2507", "tiny-random")
GPU_COUNTS = {"CPU only": 0, "1 GPU": 1, "2 GPUs": 2, "4 GPUs": 4, "8 GPUs": 8}
AUTO_PROFILE = "smallest that fits"
MODES = {"lora": "LoRA", "qlora": "QLoRA (4-bit base; GPU only)", "full": "Full"}
PLAN_NAME = "plan"  # the name of the specs built only to be planned; never submitted


@dataclass(frozen=True)
class TrainForm:
    """The Train tab's fields; defaults are the ones the form shows."""

    name: str = ""
    base_model: str = DEFAULT_BASE_MODEL
    mode: str = "lora"
    language: str = "auto"
    gpus: str = "1 GPU"  # a GPU_COUNTS label
    gpu_profile: str = AUTO_PROFILE  # or the name of one of Context.gpu_profiles
    max_steps: int = 0  # 0: train for `epochs`
    epochs: float = 3.0
    learning_rate: float = 0.0  # 0 or empty: the mode's default (spec.LEARNING_RATES)
    batch_size: int = 2
    grad_accum: int = 4
    lora_rank: int = 8
    lora_alpha: int = 32
    eval_fraction: float = 0.1
    publish_after: bool = False


def form_of(spec: RunSpec) -> TrainForm:
    """The form that makes a run like `spec` (Clone into Train); the name is left for the new
    run."""
    gpus = next((label for label, count in GPU_COUNTS.items()
                 if count == spec.resources.gpus), TrainForm.gpus)
    training = spec.training
    return TrainForm(
        "", spec.base_model, spec.mode, spec.language or "auto", gpus,
        spec.resources.gpu_profile or AUTO_PROFILE, training.max_steps or 0, training.epochs,
        training.learning_rate or 0.0, training.batch_size, training.grad_accum,
        training.lora.rank, training.lora.alpha, spec.data.eval_fraction,
        "publish" in spec.steps)


def learning_rate_label() -> str:
    defaults = ", ".join(f"{MODES[mode].split(' ')[0]} {rate:g}"
                         for mode, rate in LEARNING_RATES.items())
    return f"Learning rate (0 = the mode's default: {defaults})"


def _spec(ctx: Context, name: str, form: TrainForm, sources: list[Source]) -> RunSpec:
    """The RunSpec of `form`; pydantic.ValidationError for values the spec refuses."""
    if form.gpus not in GPU_COUNTS:
        raise UserError(f"GPUs {form.gpus!r}: choose one of {list(GPU_COUNTS)}")
    if form.gpu_profile != AUTO_PROFILE and form.gpu_profile not in ctx.gpu_profiles:
        raise UserError(f"GPU profile {form.gpu_profile!r}: choose one of "
                        f"{[AUTO_PROFILE, *ctx.gpu_profiles]}")
    gpus = GPU_COUNTS[form.gpus]
    steps = [step for step in STEPS if form.publish_after or step != "publish"]
    return RunSpec(
        name=name, base_model=form.base_model.strip(), mode=form.mode,
        language=None if form.language in ("", "auto") else form.language, steps=steps,
        data=DataSpec(sources=sources, eval_fraction=form.eval_fraction),
        training=TrainingSpec(
            max_steps=int(form.max_steps or 0) or None, epochs=form.epochs,
            learning_rate=form.learning_rate or None,  # None: the spec fills the mode's rate
            batch_size=int(form.batch_size), grad_accum=int(form.grad_accum),
            lora=LoraSpec(rank=int(form.lora_rank), alpha=int(form.lora_alpha))),
        resources=ResourcesSpec(gpus=gpus, gpu_profile=None if form.gpu_profile == AUTO_PROFILE
                                or not gpus else form.gpu_profile))


def build_spec(ctx: Context, user: str, form: TrainForm) -> RunSpec:
    # checked again: sources.json may predate the rule, or the shared folder may have moved
    sources = [dataset_source(ctx, user),
               *(checked_source(ctx, user, source) for source in ctx.workspace(user).sources())]
    try:
        return _spec(ctx, run_name(user, form.name), form, sources)
    except ValidationError as error:
        raise UserError(format_validation_error(error, "form")) from None


# --- the plan and the choices -----------------------------------------------------------------


def plan_of(ctx: Context, spec: RunSpec, geometry: Geometry | None = None) -> Plan:
    """voxtune.plan's plan for `spec` on its GPU profile (none named: the smallest that fits),
    against this machine's memory for local runs. UserError when the model's config is not
    known here (a custom model id that is not cached)."""
    profile = ctx.gpu_profiles.get(spec.resources.gpu_profile or "")
    if ctx.local_gpus and spec.resources.gpus:  # a local run gets this machine's GPU
        profile = ctx.local_gpus[0]
    return plan_run(spec, profile, tuple(ctx.gpu_profiles.values()),
                    host_limit_gib=ctx.host_memory_gib, geometry=geometry)


def gpu_counts(ctx: Context) -> list[str]:
    """The GPU counts a run can ask for here: on this machine, no more than it has."""
    if ctx.kubernetes:
        return list(GPU_COUNTS)
    return [label for label, count in GPU_COUNTS.items() if count <= len(ctx.local_gpus)]


def hardware_text(ctx: Context) -> str:
    """What the runs launched here will run on."""
    if ctx.kubernetes:
        profiles = ", ".join(f"{p.name} ({p.memory_gib:g} GiB)"
                             for p in ctx.gpu_profiles.values())
        whose = ("the controller's" if ctx.settings.job_settings else
                 "the defaults (VOXTUNE_UI_JOB_SETTINGS is unset, so the controller may differ)")
        return f"**Runs on:** the cluster's GPU nodes — profiles {profiles}: {whose}."
    memory = f"{ctx.host_memory_gib:.0f} GiB RAM"
    if not ctx.local_gpus:
        return (f"**Runs on:** this machine — CPU only, {memory}. Training the real Voxtral "
                "on a CPU is very slow; `tiny-random` is the smoke test.")
    gpus = ", ".join(f"{gpu.name} ({gpu.memory_gib:g} GiB)" for gpu in ctx.local_gpus)
    return f"**Runs on:** this machine — {gpus}, {memory}."


def _fits(ctx: Context, form: TrainForm, geometry: Geometry) -> bool:
    try:
        spec = _spec(ctx, PLAN_NAME, form, [])
    except (ValidationError, UserError):  # e.g. qlora without a GPU
        return False
    return plan_of(ctx, spec, geometry).fits


@dataclass(frozen=True)
class Offer:
    """What the Train form offers for `form`, and `form` moved to a combination that fits."""

    form: TrainForm
    modes: list[str]
    gpus: list[str]
    profiles: list[str]
    plan: Plan | None  # None: no plan (see `problem`)
    problem: str = ""


def offer(ctx: Context, form: TrainForm) -> Offer:
    """The modes, GPU counts and profiles that fit with the rest of `form`, cheapest first;
    a field whose value does not fit moves to the first that does (mode, then GPUs, then
    profile, so the model picked last decides)."""
    try:
        geometry = load_geometry(form.base_model.strip())
    except UserError as error:  # nothing to plan with: offer everything, say why
        return Offer(form, list(MODES), list(GPU_COUNTS), [AUTO_PROFILE, *ctx.gpu_profiles], None,
                     str(error))

    def fitting(field: str, values: list[str], **others: str) -> list[str]:
        return [value for value in values
                if _fits(ctx, replace(form, **{field: value, **others}), geometry)]

    counts = gpu_counts(ctx)
    if form.gpus not in counts:  # more GPUs than this machine has
        form = replace(form, gpus=counts[-1])
    modes = fitting("mode", list(MODES), gpu_profile=AUTO_PROFILE)
    if modes and form.mode not in modes:
        form = replace(form, mode=modes[0])
    gpus = fitting("gpus", counts, gpu_profile=AUTO_PROFILE)
    if gpus and form.gpus not in gpus:
        form = replace(form, gpus=gpus[0])
    # a local run has this machine's GPU, not a profile to choose
    choosable = GPU_COUNTS.get(form.gpus) and ctx.kubernetes
    profiles = [AUTO_PROFILE, *(fitting("gpu_profile", list(ctx.gpu_profiles))
                                if choosable else [])]
    if form.gpu_profile not in profiles:
        form = replace(form, gpu_profile=AUTO_PROFILE)
    try:
        plan = plan_of(ctx, _spec(ctx, PLAN_NAME, form, []), geometry)
    except ValidationError as error:
        return Offer(form, modes, gpus, profiles, None, format_validation_error(error, "form"))
    return Offer(form, modes or list(MODES), gpus or counts, profiles, plan)


def plan_text(plan: Plan | None, problem: str = "") -> str:
    """The plan panel: per-GPU memory against the profile, host RAM, disk, verdict, advice."""
    if plan is None:
        return f"**No plan** for this model: {problem}"
    data = plan.to_json()
    verdict = "fits" if plan.fits else "does **not** fit"
    where = (f"{plan.setup.gpus} × {plan.profile.name}" if plan.profile else "CPU only")
    rows = ["| | needs | has |", "|---|---|---|"]
    if plan.profile:
        rows.append(f"| memory per GPU | {data['gpu_memory_gb']:.1f} GiB | "
                    f"{plan.profile.memory_gib:g} GiB ({plan.profile.name}) |")
    limit = f"{plan.host_limit_gib:.0f} GiB" if plan.host_limit_gib else "the pod's limit"
    rows.append(f"| host RAM | {data['host_memory_gb']:.1f} GiB | {limit} |")
    disk = data["disk_gb"]
    rows.append(f"| disk | {disk['checkpoints'] + disk['final'] + disk['publish']:.1f} GiB "
                f"(checkpoints {disk['checkpoints']:.1f}, final {disk['final']:.1f}, publish "
                f"{disk['publish']:.1f}) | the shared volume |")
    lines = [f"**Plan: {verdict}** on {where} · {data['parameters']['trainable']:,} trainable "
             f"of {data['parameters']['total'] / 1e9:.2f} B parameters · optimizer "
             f"{data['optimizer']}", "", *rows]
    lines += ["", *(f"- {sentence}" for sentence in plan.advice)] if plan.advice else []
    return "\n".join(lines)


# --- preview and launch ----------------------------------------------------------------------


def preview(ctx: Context, user: str, form: TrainForm) -> tuple[str, str]:
    """The exact spec, and on Kubernetes the FineTuneRun that Launch creates."""
    spec = build_spec(ctx, user, form)
    return spec.to_yaml(), run_yaml(ctx, spec)


def run_yaml(ctx: Context, spec: RunSpec) -> str:
    document = ctx.client.resource(spec)
    return "" if document is None else yaml.safe_dump(document, sort_keys=False,
                                                       allow_unicode=True)


def launch(ctx: Context, user: str, form: TrainForm) -> RunStatus:
    """Submit the form's run, unless its plan says it cannot fit (then the plan's advice)."""
    spec = build_spec(ctx, user, form)
    try:
        plan = plan_of(ctx, spec)
    except UserError:  # no config to plan with: the controller has the last word
        plan = None
    if plan is not None and not plan.fits:
        advice = "; ".join(plan.advice) or "see the plan"
        raise UserError(f"this run does not fit ({plan.gpu_memory_gib:.0f} GiB per GPU, "
                        f"{plan.estimate.host_gib:.0f} GiB host RAM): {advice}")
    return submit(ctx, user, spec)
