"""Will this run fit, and what will it cost? Answered from the spec and the model's config alone.

    voxtune plan my-run.yaml                  # per-GPU memory, host RAM, disk, verdict
    voxtune plan my-run.yaml --gpu-profile 48gb --json
    voxtune plan --run-dir ~/.voxtune/runs/me

`plan_run(spec, profile)` is a pure function (shapes from geometry.py, bytes from memory.py);
the CLI prints it. A run that does not fit is refused with what would make it fit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

from voxtune.errors import UserError
from voxtune.plan.geometry import Geometry, load_geometry
from voxtune.plan.memory import Estimate, Setup, estimate
from voxtune.spec import RunSpec

DEFAULT_WRITE_MB_PER_S = 500.0  # a network volume's sustained write; measure yours and pass it


@dataclass(frozen=True)
class GpuProfile:
    """A kind of GPU node: usable memory per GPU (GiB, as nvidia-smi reports it) and the
    `nvidia.com/gpu.product` label that selects it."""

    name: str
    memory_gib: float
    product: str = ""


# What ships; the chart's job defaults can replace them with a cluster's own.
DEFAULT_PROFILES = (
    GpuProfile("24gb", 22.0, "NVIDIA-L4"),
    GpuProfile("48gb", 44.5, "NVIDIA-L40S"),
    GpuProfile("80gb", 79.1, "NVIDIA-H100-80GB-HBM3"),
    GpuProfile("141gb", 139.8, "NVIDIA-H200"),
)


@dataclass(frozen=True)
class Plan:
    spec: RunSpec
    geometry: Geometry
    setup: Setup
    estimate: Estimate
    profile: GpuProfile | None  # None: a CPU run (gpus: 0), checked against host memory
    host_limit_gib: float | None
    write_mb_per_s: float
    advice: tuple[str, ...]

    @property
    def gpu_memory_gib(self) -> float:
        return self.estimate.gpu_total_gib if self.profile else 0.0

    @property
    def fits(self) -> bool:
        return fits(self.estimate, self.profile, self.host_limit_gib)

    @property
    def checkpoint_write_s(self) -> float:
        return self.estimate.checkpoint_gib * 2**30 / (self.write_mb_per_s * 1e6)

    def to_json(self) -> dict[str, Any]:
        """The machine-readable plan; these key names are a contract for scripts."""
        e, g = self.estimate, self.geometry
        return {
            "base_model": self.spec.base_model, "mode": self.spec.mode,
            "parameters": {"total": e.parameters_total, "trainable": e.parameters_trainable,
                           "encoder": g.encoder_parameters,
                           "projector": g.projector_parameters,
                           "language_model": g.language_model_parameters,
                           "head": g.head_parameters},
            "gpu_memory_gb": round(self.gpu_memory_gib, 2),
            "gpu_memory_breakdown_gb": {k: round(v, 3) for k, v in e.gpu.items()},
            "gpu_profile": None if self.profile is None else {
                "name": self.profile.name, "memory_gb": self.profile.memory_gib,
                "product": self.profile.product},
            "gpus": self.setup.gpus,
            "host_memory_gb": round(e.host_gib, 2),
            "host_memory_limit_gb": self.host_limit_gib,
            "checkpoint_gb": round(e.checkpoint_gib, 3),
            "checkpoint_write_s": round(self.checkpoint_write_s, 1),
            "write_mb_per_s": self.write_mb_per_s,
            "disk_gb": {"checkpoints": round(e.checkpoint_gib * (self.setup.keep_checkpoints
                                                                 + 1), 3),
                        "final": round(e.final_gib, 3),
                        "feature_cache_per_1000_clips": round(
                            e.feature_cache_gib_per_1000_clips, 3)},
            "sequence_tokens": e.sequence_tokens,
            "tokens_per_step": e.sequence_tokens * self.setup.batch_size,
            "optimizer": e.optimizer,
            "precision_bytes": self.setup.compute_bytes,
            "fits": self.fits,
            "advice": list(self.advice),
        }

    def lines(self) -> list[str]:
        """The human-readable plan."""
        data, e = self.to_json(), self.estimate
        p = data["parameters"]
        lines = [
            f"{self.spec.base_model} · {self.spec.mode} · batch {self.setup.batch_size} × "
            f"{e.sequence_tokens} tokens · gradient checkpointing "
            f"{'on' if self.setup.gradient_checkpointing else 'off'}",
            f"parameters  {p['total'] / 1e9:.3f} B (encoder {p['encoder'] / 1e9:.3f} B, "
            f"projector {p['projector'] / 1e6:.1f} M, language model "
            f"{p['language_model'] / 1e9:.3f} B, head {p['head'] / 1e6:.1f} M); trainable "
            f"{p['trainable']:,}",
        ]
        if self.profile:
            parts = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in e.gpu.items() if v)
            lines.append(f"per GPU     {self.gpu_memory_gib:.1f} GiB of {self.profile.memory_gib}"
                         f" ({self.profile.name}, {self.setup.gpus} GPU"
                         f"{'s' if self.setup.gpus > 1 else ''}): {parts}")
        limit = f" of {self.host_limit_gib} GiB" if self.host_limit_gib else ""
        lines += [
            f"host RAM    {e.host_gib:.1f} GiB per pod{limit}",
            f"disk        checkpoint {e.checkpoint_gib:.2f} GiB "
            f"(×{self.setup.keep_checkpoints} kept, +1 while writing; "
            f"{self.checkpoint_write_s:.0f} s at {self.write_mb_per_s:g} MB/s), final "
            f"{e.final_gib:.2f} GiB, feature cache {e.feature_cache_gib_per_1000_clips:.2f} "
            "GiB per 1,000 clips",
            f"optimizer   {e.optimizer}",
            "verdict     " + ("fits" if self.fits else "does NOT fit"),
        ]
        lines += [f"  - {sentence}" for sentence in self.advice]
        return lines


# Kubernetes memory quantities (binary and decimal suffixes). kubernetes.utils.parse_quantity
# does this, but the train image carries no kubernetes client and plans too.
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_FACTORS = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6,
            "G": 1e9, "T": 1e12}


def memory_gib(quantity: str) -> float:
    """`64Gi` → 64.0; a UserError for what Kubernetes would not accept either."""
    match = _QUANTITY.match(quantity.strip())
    if not match:
        raise UserError(f"resources.memory: {quantity!r} is not a memory quantity like 64Gi")
    return float(match.group(1)) * _FACTORS[match.group(2)] / 2**30


def setup_of(spec: RunSpec, gpus: int | None = None) -> Setup:
    training, data = spec.training, spec.data
    gpus = spec.resources.gpus if gpus is None else gpus
    # auto means bf16 on every GPU profile we ship (and fp32 on a CPU without native bf16,
    # the larger figure, so a CPU plan errs on the safe side)
    compute = {"bf16": 2, "fp16": 2, "fp32": 4}.get(training.precision, 2 if gpus else 4)
    return Setup(mode=spec.mode, compute_bytes=compute, batch_size=training.batch_size,
                 grad_accum=training.grad_accum,
                 gradient_checkpointing=training.gradient_checkpointing,
                 freeze_audio_encoder=training.freeze_audio_encoder,
                 lora_rank=training.lora.rank, lora_mlp=training.lora.mlp,
                 lora_projector=training.lora.projector, gpus=gpus,
                 max_duration=data.max_duration, max_chars_per_second=data.max_chars_per_second,
                 max_transcript_tokens=data.max_transcript_tokens,
                 keep_checkpoints=training.keep_checkpoints,
                 device="cuda" if gpus else "cpu")


def fits(estimate_: Estimate, profile: GpuProfile | None, host_limit_gib: float | None) -> bool:
    on_gpu = profile is None or estimate_.gpu_total_gib <= profile.memory_gib
    on_host = host_limit_gib is None or estimate_.host_gib <= host_limit_gib
    return on_gpu and on_host


def plan_run(spec: RunSpec, profile: GpuProfile | None = None,
             profiles: tuple[GpuProfile, ...] = DEFAULT_PROFILES,
             host_limit_gib: float | None = None, geometry: Geometry | None = None,
             write_mb_per_s: float = DEFAULT_WRITE_MB_PER_S) -> Plan:
    """The plan for `spec` on `profile` (default: the smallest of `profiles` it fits, else the
    largest); `host_limit_gib` is the pod's (or this machine's) memory limit, if known."""
    geometry = geometry or load_geometry(spec.base_model)
    setup = setup_of(spec)
    result = estimate(geometry, setup)
    if setup.gpus == 0:
        chosen = None
    elif profile is not None:
        chosen = profile
    else:
        ordered = sorted(profiles, key=lambda p: p.memory_gib)
        chosen = next((p for p in ordered if fits(result, p, host_limit_gib)), ordered[-1])
    advice = () if fits(result, chosen, host_limit_gib) else tuple(
        what_would_fit(geometry, setup, chosen, profiles, host_limit_gib))
    return Plan(spec, geometry, setup, result, chosen, host_limit_gib, write_mb_per_s, advice)


def what_would_fit(geometry: Geometry, setup: Setup, profile: GpuProfile | None,
                   profiles: tuple[GpuProfile, ...],
                   host_limit_gib: float | None) -> list[str]:
    """Changes voxtune can run today that make the run fit, cheapest first."""
    def gib(candidate: Setup) -> float:
        return estimate(geometry, candidate).gpu_total_gib

    def ok(candidate: Setup, on: GpuProfile | None = profile) -> bool:
        return fits(estimate(geometry, candidate), on, host_limit_gib)

    advice: list[str] = []
    where = profile.name if profile else "this machine"
    checkpointed = replace(setup, gradient_checkpointing=True)
    if not setup.gradient_checkpointing and ok(checkpointed):
        advice.append(f"set training.gradient_checkpointing: true (≈{gib(checkpointed):.1f} "
                      f"GiB per GPU on {where})")
    for batch in (b for b in (setup.batch_size // 2, setup.batch_size // 4, 1) if 0 < b
                  < setup.batch_size):
        smaller = replace(setup, batch_size=batch, gradient_checkpointing=True)
        if ok(smaller):
            advice.append(f"set training.batch_size: {batch} with gradient checkpointing and "
                          f"raise training.grad_accum by {setup.batch_size // batch}× to keep "
                          f"the effective batch (≈{gib(smaller):.1f} GiB per GPU)")
            break
    if setup.mode == "full":
        lora = replace(setup, mode="lora")
        if ok(lora):
            advice.append(f"use mode: lora (≈{gib(lora):.1f} GiB per GPU on {where})")
    if profile is not None:
        larger = [p for p in sorted(profiles, key=lambda p: p.memory_gib)
                  if p.memory_gib > profile.memory_gib and ok(setup, p)]
        if larger:
            advice.append(f"use the {larger[0].name} GPU profile ({larger[0].memory_gib} GiB "
                          "per GPU) or a larger one")
    if host_limit_gib is not None and estimate(geometry, setup).host_gib > host_limit_gib:
        need = estimate(geometry, setup).host_gib
        advice.append(f"give the pod at least {need:.0f} GiB of memory (resources.memory): "
                      "every GPU's process loads a full copy of the model first")
    if profile is not None and not any(ok(setup, p) for p in profiles):
        need = estimate(geometry, setup).gpu_total_gib
        advice.append(f"no GPU profile holds this setup ({need:.0f} GiB per GPU): its weights, "
                      "gradients and optimizer states would have to be sharded across GPUs "
                      f"(FSDP, e.g. {math.ceil(need / profile.memory_gib)}+ × {profile.name}) "
                      "or the base quantized (QLoRA), which voxtune does not do yet")
    if not advice:
        advice.append("nothing voxtune runs today makes this fit on this machine; plan it for "
                      "a GPU (resources.gpus) or use a smaller base model")
    return advice
