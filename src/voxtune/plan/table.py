"""README's table of the GPU each model and mode needs, per GPU count — from the plan, with
every other setting at its default (`voxtune plan --table` prints it; a test checks README)."""

from __future__ import annotations

from voxtune.plan import DEFAULT_PROFILES, GpuProfile, plan_run
from voxtune.plan.geometry import PRESETS
from voxtune.spec import RunSpec

MODES = ("lora", "qlora", "full")
GPU_COUNTS = (1, 2, 8)


def published_models() -> list[str]:
    """The Hub ids whose configs ship as presets (Mini, Small)."""
    return sorted(path.stem.replace("--", "/") for path in PRESETS.glob("*--*.json"))


def cell(model: str, mode: str, gpus: int, profiles: tuple[GpuProfile, ...]) -> str:
    spec = RunSpec(name="table", base_model=model, mode=mode, resources={"gpus": gpus})
    plan = plan_run(spec, profiles=profiles)
    if not plan.fits:
        return f"does not fit (≈{plan.gpu_memory_gib:.0f} GiB)"
    sharing = f", {plan.setup.strategy.upper()}" if gpus > 1 else ""
    return f"{plan.profile.name} ({plan.gpu_memory_gib:.0f} GiB{sharing})" if plan.profile \
        else "CPU"


def gpu_table(profiles: tuple[GpuProfile, ...] = DEFAULT_PROFILES) -> str:
    """Markdown: the smallest GPU profile that holds each model × mode × GPU count, with the
    planned peak memory per GPU and how the GPUs share the work."""
    counts = [f"{n} GPU{'s' if n > 1 else ''}" for n in GPU_COUNTS]
    lines = ["| model | mode | " + " | ".join(counts) + " |",
             "|---|---|" + "---|" * len(GPU_COUNTS)]
    for model in published_models():
        for mode in MODES:
            cells = [cell(model, mode, gpus, profiles) for gpus in GPU_COUNTS]
            lines.append(f"| {model.split('/')[-1]} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
