"""Sharded training (FSDP2 through the Trainer/accelerate) for `resources.strategy: fsdp`.

DDP keeps a whole copy of the weights, gradients and optimizer states on every GPU; FSDP splits
them across the ranks, which is what full fine-tuning of Mini on several GPUs and anything with
Small-24B needs. The Trainer does the sharding (accelerate's `fully_shard`); this module says
what to wrap and how to checkpoint, and gathers `final/` back into one ordinary model.

Choices, for transformers 5.24 / accelerate 1.15 / torch 2.13:
- FSDP2 (`fully_shard`, one DTensor per parameter), not FSDP1: transformers deprecates FSDP1,
  and FSDP2 shards frozen and trainable parameters side by side without FSDP1's
  `use_orig_params` flat-parameter rules, so LoRA (frozen base + adapters) and full fine-tuning
  with a frozen encoder take the same path.
- Voxtral declares no `_no_split_modules`, so the repeated layers are named (`layer_classes`):
  each decoder and encoder layer is its own FSDP unit (gathered just before it runs).
- FSDP's own activation checkpointing instead of the Trainer's, which would all-gather every
  layer a second time in the backward pass.
- Checkpoints are sharded (`SHARDED_STATE_DICT`, torch.distributed.checkpoint): each rank writes
  its own shard of weights and optimizer state, so no host ever holds all of it (a full state
  dict of Small-24B with Adam states is ≈290 GB on rank 0) and the write is spread over ranks.
- Only global rank 0 reads the checkpoint (into host memory); the other ranks build the
  model empty (host memory never touched, so never resident) and receive their shards from
  rank 0 when accelerate shards the model (its `cpu_ram_efficient_loading`). A pod then holds
  one copy of the base, not one per rank: Small-24B's fp32 master weights are 97 GB, four of
  them would be 390 GB.
- `final/` is gathered tensor by tensor onto rank 0's CPU (`gather_final_state`) and saved by
  `save_pretrained`, so publish and merge read it like any other run's; rank 0 then drops its
  shards and optimizer states (`release`) before loading final/ whole to evaluate it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from voxtune.spec import RunSpec

# The module lists whose items are one repeated layer each: the language model's decoder layers
# (a Llama/Mistral-class decoder) and the Whisper-like audio encoder's layers.
LAYER_LISTS = ("language_model.layers", "audio_tower.layers")
# What torch's checkpoint wrapper puts into parameter names; state dicts leave it out.
CHECKPOINT_WRAPPER = "._checkpoint_wrapped_module"


def processes() -> int:
    """How many processes train together (torchrun's WORLD_SIZE; 1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_sharded(spec: RunSpec, world: int) -> bool:
    """FSDP shards this run: `resources.strategy: fsdp` and more than one process (one process
    has nothing to shard with)."""
    return spec.resources.strategy == "fsdp" and world > 1


def loads_on_rank_zero(spec: RunSpec, world: int) -> bool:
    """Only global rank 0 reads the base's weights; the others build it empty (see the
    module's notes). Not under a 4-bit base: accelerate cannot move bitsandbytes' packed
    weights to `meta`, so each rank loads its own quantized copy (0.5 byte per weight)."""
    return is_sharded(spec, world) and spec.mode != "qlora"


def layer_classes(model: Any) -> list[str]:
    """The class names FSDP wraps one unit each, read from the model itself.

    For Voxtral: ['LlamaDecoderLayer', 'VoxtralEncoderLayer'] (the decoder class follows
    `text_config.model_type`, so it is read, not written down). Works on a peft-wrapped model
    and on one built on the `meta` device.
    """
    import torch

    names: set[str] = set()
    for name, module in model.named_modules():
        if name.endswith(LAYER_LISTS) and isinstance(module, torch.nn.ModuleList):
            names.update(type(layer).__name__ for layer in module)
    return sorted(names)


def fsdp_arguments(spec: RunSpec, layers: Sequence[str], world: int) -> dict[str, Any]:
    """TrainingArguments keywords that shard this run, or {} when it is not sharded
    (`is_sharded`). `training.gradient_checkpointing` turns on FSDP's activation
    checkpointing; the caller must then leave the Trainer's own `activation_checkpointing` off.
    """
    if not is_sharded(spec, world):
        return {}
    if not layers:
        raise ValueError("no decoder or encoder layers found to shard")
    return {"fsdp": True, "fsdp_config": {
        "version": 2,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": list(layers),
        "state_dict_type": "SHARDED_STATE_DICT",
        "activation_checkpointing": spec.training.gradient_checkpointing,
        "reshard_after_forward": True,  # free each layer's gathered weights after its forward
        # rank 0 broadcasts the weights it loaded into the other ranks' shards
        "cpu_ram_efficient_loading": loads_on_rank_zero(spec, world),
    }}


def gather_final_state(model: Any) -> dict[str, Any] | None:
    """The whole state dict on rank 0's CPU (None on the other ranks), for `save_pretrained`.

    Every rank must call it: each tensor is all-gathered in turn, so at most one full tensor is
    in flight besides what rank 0 has kept. A LoRA model gathers only its trainable tensors
    (the adapters, and the projector copy when it trains), which is all its final/ holds.
    """
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    keep = dist.get_rank() == 0
    wanted = None
    if hasattr(model, "peft_config"):
        wanted = {name.replace(CHECKPOINT_WRAPPER, "")
                  for name, parameter in model.named_parameters() if parameter.requires_grad}
    state: dict[str, Any] = {}
    for name, tensor in model.state_dict().items():
        if wanted is not None and name not in wanted:
            continue
        full = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
        if keep:
            state[name] = full.detach().cpu()
    return state if keep else None


def release(trainer: Any) -> None:
    """Free the sharded model, its optimizer states and their GPU memory on this rank (the
    caller drops its own references to the model first): rank 0 loads final/ whole next, and
    a full copy beside the shards would not fit where sharding was needed to train."""
    import gc

    import torch

    trainer.accelerator.free_memory()
    trainer.model = trainer.model_wrapped = trainer.optimizer = trainer.lr_scheduler = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sharding_note(trainer: Any) -> str | None:
    """The line that says how the ranks share the model, when `resources.strategy` is fsdp.

    accelerate 1.15 shards only on accelerators (its FSDP branch skips CPU processes), so a
    CPU run asked for fsdp trains data-parallel instead, and says so rather than pretending.
    """
    if trainer.is_fsdp_enabled:
        plugin = trainer.accelerator.state.fsdp_plugin
        return (f"FSDP{plugin.fsdp_version} across {trainer.args.world_size} processes: one unit "
                f"per {', '.join(plugin.transformer_cls_names_to_wrap)}, sharded checkpoints")
    if trainer.args.fsdp:
        return ("NOTE: resources.strategy fsdp shards on GPUs only (accelerate); these "
                f"{trainer.args.world_size} CPU processes train data-parallel (DDP) instead")
    return None


def die_with_launcher() -> None:
    """Make this torchrun rank die with torchrun, however torchrun ends.

    torch's elastic agent (2.13) starts every rank in a session of its own, so a SIGKILL of
    torchrun, or of its process group, leaves the ranks training on with nobody to report to.
    SIGKILL, not SIGTERM: with the launcher (and the rendezvous store it hosts) gone, the ranks
    cannot save a checkpoint together, so there is nothing left to do in order.
    """
    import signal

    from voxtune.processes import die_with_parent

    if "TORCHELASTIC_RUN_ID" in os.environ:  # set by torchrun for the processes it starts
        die_with_parent(signal.SIGKILL)
