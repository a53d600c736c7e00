"""Will this run fit, and what will it cost? Answered from the spec and the model's config alone.

    voxtune plan my-run.yaml                  # per-GPU memory, host RAM, disk, verdict
    voxtune plan my-run.yaml --gpu-profile 48gb --json
    voxtune plan --run-dir ~/.voxtune/runs/me

`plan_run(spec, profile)` is a pure function (shapes from geometry.py, bytes from memory.py,
what would fit from advice.py); the CLI prints it. placement.py turns a plan into what a pod
gets (memory, GPU product, grace period) and refuses a run that does not fit, for
`voxtune submit`/`run`, the controller and the Job builder alike; table.py is README's table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from voxtune.errors import UserError
from voxtune.plan.features import feature_path
from voxtune.plan.geometry import Geometry, load_geometry
from voxtune.plan.memory import Estimate, Setup, estimate
from voxtune.spec import CHECKPOINTING, RunSpec, StrictModel

DEFAULT_WRITE_MB_PER_S = 500.0  # a network volume's sustained write; measure yours and pass it


class GpuProfile(StrictModel):
    """A kind of GPU node: usable memory per GPU and the `nvidia.com/gpu.product` label that
    selects it (the chart's jobs.gpuProfiles)."""

    name: str = Field(min_length=1, description="What resources.gpu_profile calls it.")
    memory_gib: float = Field(gt=0, description="Usable memory per GPU in GiB, as nvidia-smi "
                              "reports it (a little under the marketing figure).")
    product: str = Field("", description="The node label nvidia.com/gpu.product of such nodes "
                         "(GPU feature discovery sets it); empty: any GPU node.")
    gpus_per_node: int = Field(8, ge=1, description="GPUs one such node has: a pod asking for "
                               "more can never be scheduled (use resources.nodes instead).")


# What ships; the chart's job defaults can replace them with a cluster's own.
DEFAULT_PROFILES = (
    GpuProfile(name="24gb", memory_gib=22.0, product="NVIDIA-L4"),
    GpuProfile(name="48gb", memory_gib=44.5, product="NVIDIA-L40S"),
    GpuProfile(name="80gb", memory_gib=79.1, product="NVIDIA-H100-80GB-HBM3"),
    GpuProfile(name="141gb", memory_gib=139.8, product="NVIDIA-H200"),
)


class UnknownProfile(UserError):
    """A GPU profile name that the profiles at hand do not have."""


def profile_named(name: str, profiles: tuple[GpuProfile, ...]) -> GpuProfile:
    for profile in profiles:
        if profile.name == name:
            return profile
    raise UnknownProfile(f"GPU profile {name!r}: use one of "
                         f"{', '.join(p.name for p in profiles)}")


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

    @property
    def feature_path(self) -> str:
        return feature_path(self.setup.gpus, None, self.estimate.feature_cache_gib_per_1000_clips)

    @property
    def disk_gib(self) -> dict[str, float]:
        """The shared volume: kept checkpoints (+1 while the next is written), final/, the
        feature cache per 1,000 clips (none when features are computed on the device), and
        what publish writes (staged beside the run while it uploads, or the registry version):
        the adapter, or a whole bf16 model in transformers' layout and in Mistral's (vLLM's)."""
        e, spec = self.estimate, self.spec
        cache = e.feature_cache_gib_per_1000_clips if self.feature_path == "cache" else 0.0
        whole = spec.mode == "full" or spec.publish.merge
        published = 2 * (2 * e.parameters_total / 2**30) if whole else e.final_gib
        return {"checkpoints": e.checkpoint_gib * (self.setup.keep_checkpoints + 1),
                "final": e.final_gib, "feature_cache_per_1000_clips": cache,
                "publish": published if "publish" in spec.steps else 0.0}

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
            "nodes": self.setup.nodes,
            "strategy": self.setup.strategy if self.setup.world_size > 1 else None,
            "host_memory_gb": round(e.host_gib, 2),
            "host_memory_limit_gb": self.host_limit_gib,
            "checkpoint_gb": round(e.checkpoint_gib, 3),
            "checkpoint_write_s": round(self.checkpoint_write_s, 1),
            "write_mb_per_s": self.write_mb_per_s,
            "disk_gb": {k: round(v, 3) for k, v in self.disk_gib.items()},
            "feature_path": self.feature_path,
            "sequence_tokens": e.sequence_tokens,
            "tokens_per_step": e.sequence_tokens * self.setup.batch_size,
            "optimizer": e.optimizer,
            "precision_bytes": self.setup.compute_bytes,
            "fits": self.fits,
            "advice": list(self.advice),
        }

    def lines(self) -> list[str]:
        """The human-readable plan."""
        data, e, disk = self.to_json(), self.estimate, self.disk_gib
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
            gpus, nodes = self.setup.gpus, self.setup.nodes
            sharing = f", {self.setup.strategy}" if self.setup.world_size > 1 else ""
            where = f"{nodes} nodes × " if nodes > 1 else ""
            lines.append(f"per GPU     {self.gpu_memory_gib:.1f} GiB of {self.profile.memory_gib}"
                         f" ({self.profile.name}, {where}{gpus} GPU{'s' if gpus > 1 else ''}"
                         f"{sharing}): {parts}")
        limit = f" of {self.host_limit_gib:.3g} GiB" if self.host_limit_gib else ""
        cache = (f"feature cache {disk['feature_cache_per_1000_clips']:.2f} GiB per 1,000 clips"
                 if self.feature_path == "cache" else "features computed on the device (no "
                 "cache)")
        lines += [
            f"host RAM    {e.host_gib:.1f} GiB per pod{limit}",
            f"disk        checkpoint {e.checkpoint_gib:.2f} GiB "
            f"(×{self.setup.keep_checkpoints} kept, +1 while writing; "
            f"{self.checkpoint_write_s:.0f} s at {self.write_mb_per_s:g} MB/s), final "
            f"{e.final_gib:.2f} GiB, publish {disk['publish']:.2f} GiB, {cache}",
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
    strategy = spec.resources.strategy
    nodes = spec.resources.nodes if gpus else 1
    if strategy == "auto":  # a spec made with model_copy skips the validator that resolves it
        strategy = "fsdp" if spec.mode == "full" and gpus * nodes > 1 else "ddp"
    checkpointing = training.gradient_checkpointing  # None only in a model_copy'd spec
    return Setup(mode=spec.mode, compute_bytes=compute, batch_size=training.batch_size,
                 grad_accum=training.grad_accum,
                 gradient_checkpointing=CHECKPOINTING[spec.mode] if checkpointing is None
                 else checkpointing,
                 freeze_audio_encoder=training.freeze_audio_encoder,
                 lora_rank=training.lora.rank, lora_mlp=training.lora.mlp,
                 lora_projector=training.lora.projector, gpus=gpus,
                 max_duration=data.max_duration, max_chars_per_second=data.max_chars_per_second,
                 max_transcript_tokens=data.max_transcript_tokens,
                 keep_checkpoints=training.keep_checkpoints,
                 device="cuda" if gpus else "cpu", optimizer=spec.optimizer_for(gpus > 0),
                 freeze_embeddings=spec.mode == "full" and training.freeze_embeddings,
                 strategy=strategy, nodes=nodes)


def fits(estimate_: Estimate, profile: GpuProfile | None, host_limit_gib: float | None) -> bool:
    on_gpu = profile is None or estimate_.gpu_total_gib <= profile.memory_gib
    on_host = host_limit_gib is None or estimate_.host_gib <= host_limit_gib
    return on_gpu and on_host


def plan_run(spec: RunSpec, profile: GpuProfile | None = None,
             profiles: tuple[GpuProfile, ...] = DEFAULT_PROFILES,
             host_limit_gib: float | None = None, geometry: Geometry | None = None,
             write_mb_per_s: float = DEFAULT_WRITE_MB_PER_S) -> Plan:
    """The plan for `spec` on `profile` (default: `resources.gpu_profile` of `profiles`, else
    the smallest of them it fits, else the largest); `host_limit_gib` is the pod's (or this
    machine's) memory limit, if known."""
    from voxtune.plan.advice import what_would_fit

    geometry = geometry or load_geometry(spec.base_model)
    setup = setup_of(spec)
    result = estimate(geometry, setup)
    if setup.gpus == 0:
        chosen = None
    elif profile is not None:
        chosen = profile
    elif spec.resources.gpu_profile:
        chosen = profile_named(spec.resources.gpu_profile, profiles)
    else:
        # by GPU memory alone: pod memory is a separate verdict, a larger GPU cannot help it
        ordered = sorted(profiles, key=lambda p: p.memory_gib)
        chosen = next((p for p in ordered if fits(result, p, None)), ordered[-1])
    advice = () if fits(result, chosen, host_limit_gib) else tuple(
        what_would_fit(geometry, setup, chosen, profiles, host_limit_gib))
    return Plan(spec, geometry, setup, result, chosen, host_limit_gib, write_mb_per_s, advice)
