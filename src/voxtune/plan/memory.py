"""Bytes a training run needs per GPU, per pod and on the shared volume, from shapes alone.

Each figure models what the train step actually does today (train/recipe.py, train/adapt.py):
LoRA keeps the frozen base in the compute dtype and the adapters in fp32; full fine-tuning keeps
fp32 weights, fp32 gradients and fp32 AdamW states and computes in bf16/fp16 under autocast;
more than one GPU is DDP (a full replica per GPU plus gradient buckets). When the recipe
changes, this module changes in the same commit. bench/memory.py checks the figures against
peak memory measured on CPU models of growing size (docs/benchmarks.md).

Sizes are in GiB (2**30 bytes), the unit `nvidia-smi` and PyTorch report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from voxtune.plan.geometry import ENCODER_POSITIONS_PER_SECOND, Geometry

GIB = 2**30
AUDIO_TOKENS_PER_SECOND = 12.5  # after the projector stacks 4 encoder positions
PROMPT_TOKENS = 12  # <s>[INST][BEGIN_AUDIO] … [/INST]lang:xx[TRANSCRIBE] around the audio
# Tekken averages ~4 characters per token on European text; 2.5 keeps the bound on the safe
# side for digits, names and languages that tokenise worse.
CHARS_PER_TOKEN = 2.5
# The loss path holds the logits in the compute dtype, their fp32 upcast (none when they are
# fp32 already), the fp32 log-softmax saved for backward, and in backward the gradient of the
# log-softmax and of the logits, briefly together (bench/memory.py: 2 copies underestimated).
FP32_LOGIT_COPIES = 3
CUDA_CONTEXT_GIB = 1.0  # CUDA context, cuBLAS workspaces, NCCL buffers
FRAGMENTATION = 1.05  # the caching allocator's slack over what is live
PROCESS_HOST_GIB = 2.0  # Python, torch, transformers and the data pipeline, per rank
MEL_BYTES_PER_SECOND = 128 * 100 * 4  # the feature cache: fp32 log-mel, 100 frames per second


@dataclass(frozen=True)
class Setup:
    """What the spec asks for, reduced to what memory depends on."""

    mode: str  # lora | full
    compute_bytes: int  # 2 for bf16/fp16, 4 for fp32
    batch_size: int
    grad_accum: int  # >1: gradients stay live while the next micro-batch's activations build
    gradient_checkpointing: bool
    freeze_audio_encoder: bool
    lora_rank: int
    lora_mlp: bool
    lora_projector: bool
    gpus: int  # per pod; 0 = a CPU run
    max_duration: float
    max_chars_per_second: float
    max_transcript_tokens: int
    keep_checkpoints: int
    device: str = "cuda"  # cpu: attention is computed by the math kernel (s² weights saved)


@dataclass
class Estimate:
    """Every figure the plan reports; sizes in GiB."""

    parameters_total: int
    parameters_trainable: int
    sequence_tokens: int
    gpu: dict[str, float] = field(default_factory=dict)
    host_gib: float = 0.0
    checkpoint_gib: float = 0.0
    final_gib: float = 0.0
    feature_cache_gib_per_1000_clips: float = 0.0
    optimizer: str = "adamw_torch (fp32 states)"

    @property
    def gpu_total_gib(self) -> float:
        return sum(self.gpu.values())


def sequence_tokens(geometry: Geometry, setup: Setup) -> int:
    """The longest training sequence the spec allows: audio window + prompt + transcript + EOS."""
    window_s = geometry.audio_positions / ENCODER_POSITIONS_PER_SECOND
    transcript = min(setup.max_transcript_tokens,
                     math.ceil(setup.max_duration * setup.max_chars_per_second / CHARS_PER_TOKEN))
    return math.ceil(window_s * AUDIO_TOKENS_PER_SECOND) + PROMPT_TOKENS + transcript + 1


def trainable_parameters(geometry: Geometry, setup: Setup) -> int:
    if setup.mode == "lora":
        projector = geometry.projector_parameters if setup.lora_projector else 0
        return geometry.lora_parameters(setup.lora_rank, setup.lora_mlp) + projector
    frozen = geometry.encoder_parameters if setup.freeze_audio_encoder else 0
    return geometry.total_parameters - frozen


def decoder_layer_activation_bytes(geometry: Geometry, setup: Setup, tokens: int) -> float:
    """What one decoder layer saves for backward over `tokens` tokens.

    Per token: the norm inputs in fp32 (RMSNorm upcasts) and outputs, q/k/v after RoPE, the
    attention output, gate and up outputs, the activation and the product fed to down_proj.
    """
    g, c = geometry, setup.compute_bytes
    kv = g.kv_heads * g.head_dim
    per_token = c * (4 * g.hidden + 2 * kv + 4 * g.intermediate) + 2 * 4 * g.hidden
    attention_weights = 0.0
    if setup.device == "cpu":  # the math kernel keeps softmax(QKᵀ) per head
        sequence = tokens / setup.batch_size
        attention_weights = setup.batch_size * g.heads * sequence**2 * c
    return tokens * per_token + attention_weights


def estimate(geometry: Geometry, setup: Setup) -> Estimate:
    g, c = geometry, setup.compute_bytes
    total = g.total_parameters
    trainable = trainable_parameters(g, setup)
    sequence = sequence_tokens(g, setup)
    tokens = setup.batch_size * sequence
    full = setup.mode == "full"

    # weights, gradients, optimizer states, and what autocast and DDP add
    if full:
        weights = 4 * total  # fp32 master weights, frozen encoder included
        casts = trainable * c if c < 4 else 0  # autocast caches low-precision weight copies
    else:
        projector_copy = g.projector_parameters * 4 if setup.lora_projector else 0
        weights = total * c + 4 * g.lora_parameters(setup.lora_rank, setup.lora_mlp) \
            + projector_copy  # modules_to_save: the original stays, a trainable copy is added
        casts = 0
    gradients = 4 * trainable
    optimizer = 8 * trainable  # AdamW: two fp32 moments per trainable parameter
    buckets = 4 * trainable if setup.gpus > 1 else 0  # DDP without gradient_as_bucket_view

    # activations: decoder layers (all, or their inputs plus one recomputed layer), the
    # embeddings, the head's logits, and the frozen encoder's transient peak
    layer = decoder_layer_activation_bytes(g, setup, tokens)
    if setup.gradient_checkpointing:
        decoder = g.layers * tokens * g.hidden * c + layer
    else:
        decoder = g.layers * layer
    embeddings = tokens * g.hidden * c
    upcast = 4 if c < 4 else 0
    logits = tokens * g.vocab * (c + upcast + 4 * FP32_LOGIT_COPIES)
    encoder = setup.batch_size * g.audio_positions * (
        (4 * g.audio_hidden + g.audio_intermediate) * c + g.audio_heads * g.audio_positions * c)
    if full and not setup.freeze_audio_encoder:  # every encoder layer saves its activations
        encoder *= g.audio_layers

    # Backward frees activations as it produces gradients, so with one micro-batch per step
    # only the larger of the two is at its peak at once; with accumulation the gradients of the
    # previous micro-batches are live while the next one's activations build up.
    activations = decoder + embeddings + logits + encoder
    transient = activations + gradients if setup.grad_accum > 1 else max(activations, gradients)
    live = weights + casts + optimizer + buckets + transient
    gpu = {
        "weights": weights / GIB, "weight_casts": casts / GIB, "gradients": gradients / GIB,
        "optimizer": optimizer / GIB, "ddp_buckets": buckets / GIB,
        "activations": (decoder + embeddings + encoder) / GIB, "logits": logits / GIB,
        # the CUDA caching allocator keeps freed blocks for reuse; on CPU large tensors go
        # back to the system when freed
        "allocator_slack": live * (FRAGMENTATION - 1) / GIB if setup.device == "cuda" else 0.0,
        "cuda_context": CUDA_CONTEXT_GIB if setup.device == "cuda" else 0.0,
    }

    # host RAM: every rank loads a full copy on the CPU before moving it to its GPU
    ranks = max(setup.gpus, 1)
    load_bytes = 4 * total if full else c * total
    host = ranks * (load_bytes / GIB + PROCESS_HOST_GIB)
    if setup.device == "cpu":  # no GPU: training itself happens in host memory
        host = sum(gpu.values()) + PROCESS_HOST_GIB

    # disk: a checkpoint holds the trainable weights (full: the whole fp32 model) and optimizer
    saved_weights = 4 * total if full else 4 * trainable
    checkpoint = (saved_weights + optimizer) / GIB
    final = (4 * total if full else 4 * trainable) / GIB
    cache = 1000 * MEL_BYTES_PER_SECOND * g.audio_positions / ENCODER_POSITIONS_PER_SECOND / GIB
    return Estimate(parameters_total=total, parameters_trainable=trainable,
                    sequence_tokens=sequence, gpu=gpu, host_gib=host, checkpoint_gib=checkpoint,
                    final_gib=final, feature_cache_gib_per_1000_clips=cache)
