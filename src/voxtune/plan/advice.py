"""What would make a run fit that does not: the changes voxtune runs, cheapest first, each with
the figure it would reach. Every sentence names the spec field to change."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from voxtune.plan.geometry import Geometry
from voxtune.plan.memory import Setup, estimate

if TYPE_CHECKING:
    from voxtune.plan import GpuProfile

# What FSDP advice tries, in GPUs all told; beyond a node of the profile they spread over nodes.
GPU_COUNTS = (2, 4, 8, 16, 32, 64)


def what_would_fit(geometry: Geometry, setup: Setup, profile: GpuProfile | None,
                   profiles: tuple[GpuProfile, ...],
                   host_limit_gib: float | None) -> list[str]:
    """Changes that make the run fit on `profile` (or this machine, for a CPU run), cheapest
    first; then the GPU profiles and counts that would hold it as it is."""
    from voxtune.plan import fits

    def gib(candidate: Setup) -> float:
        return estimate(geometry, candidate).gpu_total_gib

    def ok(candidate: Setup, on: GpuProfile | None = profile) -> bool:
        return fits(estimate(geometry, candidate), on, host_limit_gib)

    advice: list[str] = []
    where = f"per GPU on {profile.name}" if profile else "on this machine"
    checkpointed = replace(setup, gradient_checkpointing=True)
    if not setup.gradient_checkpointing and ok(checkpointed):
        advice.append(f"set training.gradient_checkpointing: true (≈{gib(checkpointed):.1f} "
                      f"GiB {where})")
    for batch in (b for b in (setup.batch_size // 2, setup.batch_size // 4, 1) if 0 < b
                  < setup.batch_size):
        smaller = replace(setup, batch_size=batch, gradient_checkpointing=True)
        if ok(smaller):
            advice.append(f"set training.batch_size: {batch} with gradient checkpointing and "
                          f"raise training.grad_accum by {setup.batch_size // batch}× to keep "
                          f"the effective batch (≈{gib(smaller):.1f} GiB {where})")
            break
    if setup.mode == "full":
        advice += _full_fine_tuning(setup, profile, ok, gib, where)
    if setup.mode in ("full", "lora") and setup.gpus > 0:
        qlora = replace(setup, mode="qlora", gradient_checkpointing=True)
        if ok(qlora):
            advice.append(f"use mode: qlora, adapters on a 4-bit base (≈{gib(qlora):.1f} GiB "
                          f"{where})")
    if profile is not None:
        larger = [p for p in sorted(profiles, key=lambda p: p.memory_gib)
                  if p.memory_gib > profile.memory_gib and ok(setup, p)]
        if larger:
            advice.append(f"use resources.gpu_profile: {larger[0].name} ({larger[0].memory_gib}"
                          " GiB per GPU) or a larger one")
    need = estimate(geometry, setup).host_gib
    if host_limit_gib is not None and need > host_limit_gib:
        advice.append(f"give the pod at least {need:.0f} GiB of memory (resources.memory; "
                      f"{host_limit_gib:.3g} GiB is too little)" if profile else
                      f"it needs ≈{need:.0f} GiB of memory and this machine has "
                      f"{host_limit_gib:.0f} GiB: plan it for a GPU (resources.gpus)")
    if not advice:
        advice.append("nothing voxtune runs makes this fit here: use a smaller base model, or "
                      "mode: lora or qlora on a GPU")
    return advice


def _full_fine_tuning(setup: Setup, profile: GpuProfile | None, ok: Callable[[Setup], bool],
                      gib: Callable[[Setup], float], where: str) -> list[str]:
    """Full fine-tuning's own ways down: 8-bit states, frozen embeddings, FSDP over more GPUs,
    and adapters instead."""
    advice: list[str] = []
    if setup.optimizer == "adamw_torch" and setup.gpus > 0:
        eight_bit = replace(setup, optimizer="adamw_8bit")
        if ok(eight_bit):
            advice.append(f"set training.optimizer: adamw_8bit (≈{gib(eight_bit):.1f} GiB "
                          f"{where})")
    if not setup.freeze_embeddings:
        frozen = replace(setup, freeze_embeddings=True)
        if ok(frozen):
            advice.append(f"set training.freeze_embeddings: true (≈{gib(frozen):.1f} GiB "
                          f"{where})")
    if profile is not None:
        for total in GPU_COUNTS:
            if total < setup.world_size or (total == setup.world_size and setup.sharded):
                continue
            per_node = min(total, profile.gpus_per_node)
            nodes = total // per_node
            sharded = replace(setup, gpus=per_node, nodes=nodes, strategy="fsdp")
            if ok(sharded):
                spread = f", resources.nodes: {nodes}" if nodes > 1 else ""
                advice.append(f"shard it with FSDP: resources.gpus: {per_node}{spread} and "
                              f"resources.strategy: fsdp (≈{gib(sharded):.1f} GiB per GPU on "
                              f"{total} × {profile.name})")
                break
    lora = replace(setup, mode="lora")
    if ok(lora):
        advice.append(f"use mode: lora (≈{gib(lora):.1f} GiB {where})")
    return advice
