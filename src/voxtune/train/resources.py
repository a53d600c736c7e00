"""What the train step asks of the hardware: how the base is loaded, which optimizer runs, DDP
buckets, and what running out of GPU memory means.

Pure choices first (`loading_arguments`, `quantization`, `trainer_optimizer`), so tests can ask
them for any rank, mode and optimizer without a GPU; then the few calls that act on a Trainer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from voxtune.errors import UserError
from voxtune.spec import RunSpec
from voxtune.train.distributed import loads_on_rank_zero, processes

# What a Trainer calls each of the spec's optimizers (`TrainingArguments.optim`). PyTorch's
# fused AdamW is the same algorithm in one kernel per step; it needs the GPU.
TRAINER_OPTIMIZERS = {"adamw_torch": "adamw_torch", "adamw_8bit": "adamw_bnb_8bit",
                      "paged_adamw_8bit": "paged_adamw_8bit"}
BITSANDBYTES = ("adamw_8bit", "paged_adamw_8bit")
# Kept in full precision under QLoRA's 4-bit base (names from the model's root):
# - the audio encoder: 0.64 B parameters shared by Mini and Small (3 % of Small), whose features
#   every transcript depends on; its convolutions cannot be quantized anyway;
# - the projector: 25 M parameters, and `lora.projector` trains it, which 4-bit weights cannot;
# - lm_head: the 131 k-row output projection; quantizing it costs accuracy on every token for
#   0.3-0.7 B parameters, and transformers skips the output embeddings by default too.
NOT_QUANTIZED = ("model.audio_tower", "model.multi_modal_projector", "lm_head")
OUT_OF_MEMORY = ("out of GPU memory {where} (training.batch_size {batch}): run `voxtune plan` on "
                 "this spec to see what fits; lower training.batch_size (raise "
                 "training.grad_accum to keep the effective batch), set "
                 "training.gradient_checkpointing: true, use mode: lora or qlora, shard full "
                 "fine-tuning over more GPUs (resources.gpus, strategy fsdp), or pick a larger "
                 "resources.gpu_profile")


def local_rank() -> int:
    """This process's GPU index on its node (torchrun sets LOCAL_RANK; 0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def weights_dtype(mode: str, compute: torch.dtype) -> torch.dtype:
    """The dtype the base is loaded in: the compute dtype for frozen bases (LoRA, QLoRA's
    unquantized parts), fp32 master weights for full fine-tuning (bf16 weights lose small
    updates; the Trainer computes in bf16/fp16 under autocast)."""
    return torch.float32 if mode == "full" else compute


def quantization(spec: RunSpec, compute: torch.dtype) -> Any:
    """QLoRA's 4-bit base: NF4 with double quantization (the QLoRA paper's recipe: ~0.5 byte
    per weight, the quantization constants quantized too), computing in bf16 (fp16 on GPUs
    without bf16); None for other modes."""
    if spec.mode != "qlora":
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float16 if compute == torch.float16 else torch.bfloat16,
        llm_int8_skip_modules=list(NOT_QUANTIZED))


def loading_arguments(spec: RunSpec, compute: torch.dtype, on_gpu: bool,
                      rank: int = 0, world: int = 1) -> dict[str, Any]:
    """`from_pretrained` keywords for the train step's base on local rank `rank` of `world`.

    On a GPU every rank streams the weights from the (memory-mapped) checkpoint straight onto
    its own device: with N ranks per pod the host holds no full copy per rank, where loading
    onto the CPU and then moving would need N copies of the model in the pod's memory at once.
    A sharded run is the exception: rank 0 alone loads, into host memory, and accelerate sends
    each GPU its shard from there (the others build it empty: `base_model`).
    """
    arguments: dict[str, Any] = {"dtype": weights_dtype(spec.mode, compute)}
    if on_gpu and not loads_on_rank_zero(spec, world):
        arguments["device_map"] = {"": rank}
    quantized = quantization(spec, compute)
    if quantized is not None:
        arguments["quantization_config"] = quantized
    return arguments


def base_model(spec: RunSpec, compute: torch.dtype, on_gpu: bool) -> tuple[Any, Any]:
    """The base model and processor this rank trains from (`loading_arguments`); ranks other
    than 0 of a run that `loads_on_rank_zero` get it empty (`models.load.empty_model`), to
    be filled from rank 0."""
    from voxtune.models.load import load, load_empty

    world = processes()
    rank = int(os.environ.get("RANK", "0"))
    if loads_on_rank_zero(spec, world) and rank != 0:
        print(f"rank {rank}: base built empty, its shard comes from rank 0", flush=True)
        return load_empty(spec.base_model, weights_dtype(spec.mode, compute))
    with out_of_memory_is_user_error(spec, "loading the base model"):
        return load(spec.base_model,
                    **loading_arguments(spec, compute, on_gpu, local_rank(), world))


def has_bitsandbytes() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def trainer_optimizer(name: str, on_gpu: bool, bitsandbytes: bool) -> str:
    """The Trainer's `optim` for the spec's optimizer `name`; a UserError when it cannot run.

    Never a quiet substitute: a run planned with 8-bit states that trained with fp32 ones would
    need 6 bytes more per trainable parameter than its plan said.
    """
    if name in BITSANDBYTES and not bitsandbytes:
        raise UserError(f"training.optimizer {name} needs bitsandbytes, which is not installed: "
                        "pip install 'voxtune[train]' (the train image has it), or set "
                        "training.optimizer: adamw_torch (fp32 states: 8 bytes per trainable "
                        "parameter instead of 2)")
    if name == "paged_adamw_8bit" and not on_gpu:
        raise UserError("training.optimizer paged_adamw_8bit pages its states between GPU and "
                        "host memory, so it needs a GPU; use adamw_8bit or adamw_torch on a CPU")
    if name == "adamw_torch" and on_gpu:
        return "adamw_torch_fused"
    return TRAINER_OPTIMIZERS[name]


def check_optimizer_runs(name: str, on_gpu: bool) -> None:
    """One step of the chosen bitsandbytes optimizer on a small tensor, before any training, so
    a bitsandbytes without a build for this CUDA or CPU stops the run now, not after the base
    evaluation and at the first real step."""
    if name not in BITSANDBYTES:
        return
    import bitsandbytes

    optimizer_class = (bitsandbytes.optim.PagedAdamW8bit if name == "paged_adamw_8bit"
                       else bitsandbytes.optim.AdamW8bit)
    # bitsandbytes keeps 32-bit states for tensors under 4096 elements: this one gets 8-bit ones
    weights = torch.nn.Parameter(torch.zeros(4096, device="cuda" if on_gpu else "cpu"))
    weights.grad = torch.ones_like(weights)
    try:
        optimizer_class([weights]).step()
    except (RuntimeError, OSError, NotImplementedError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise UserError(f"training.optimizer {name}: bitsandbytes cannot run it here "
                        f"({type(error).__name__}: {reason}); set training.optimizer: "
                        "adamw_torch, or install a bitsandbytes built for this machine") from None


def optimizer_description(optimizer: Any) -> str:
    """What really steps the weights, e.g. 'bitsandbytes.optim.adamw.AdamW, 8-bit states,
    paged' (the Trainer builds bitsandbytes' AdamW with optim_bits=8 for adamw_bnb_8bit)."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the real one
    words = [f"{type(inner).__module__}.{type(inner).__qualname__}"]
    bits = getattr(getattr(inner, "args", None), "optim_bits", None)  # bitsandbytes only
    if bits is not None:
        words.append(f"{bits}-bit states")
    if getattr(inner, "is_paged", False):
        words.append("paged")
    return ", ".join(words)


def share_gradient_buckets(trainer: Any) -> None:
    """DDP with `gradient_as_bucket_view`: gradients live in DDP's communication buckets instead
    of a second gradient-sized copy (≈15 GiB for Mini's full FT). TrainingArguments has no
    field for it (transformers 5.24); the Trainer hands its DDP settings to accelerate as a
    handler, which wraps the model only when training starts, so setting it here applies."""
    handler = trainer.accelerator.ddp_handler
    if handler is not None:
        handler.gradient_as_bucket_view = True


@contextlib.contextmanager
def out_of_memory_is_user_error(spec: RunSpec, where: str) -> Iterator[None]:
    """A CUDA out-of-memory error `where` (loading, moving, training) is the spec's to fix:
    UserError (exit 2: the Job fails at once instead of retrying the same spec)."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise UserError(OUT_OF_MEMORY.format(where=where,
                                             batch=spec.training.batch_size)) from None


def hardware(on_gpu: bool) -> str:
    """What trained it, for the model card: e.g. '1 × NVIDIA H100 80GB HBM3' or 'CPU (2 cores)'."""
    if on_gpu:
        count = int(os.environ.get("WORLD_SIZE", "1"))
        return f"{count} × {torch.cuda.get_device_name()}"
    return f"CPU ({len(os.sched_getaffinity(0))} cores)"


def peak_memory_gb(on_gpu: bool) -> float:
    import resource

    if on_gpu:
        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # KiB → GiB
