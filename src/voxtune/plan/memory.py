"""Bytes a training run needs per GPU, per pod and on the shared volume, from shapes alone.

Each figure models what the train step does (train/recipe.py, train/adapt.py, and the sharding
and quantization the spec asks for):
- lora keeps the frozen base in the compute dtype and the adapters in fp32;
- qlora keeps the language model's decoder linear layers in 4-bit NF4 (bitsandbytes with
  double quantization: 0.5 byte per weight plus an 8-bit absmax per 64-weight block and an fp32
  constant per 256 blocks); peft's k-bit preparation upcasts the rest (audio encoder, projector,
  embeddings, head, norms) to fp32; adapters in fp32;
- full keeps fp32 master weights, fp32 gradients and the optimizer's states (AdamW: 8 bytes
  per trainable parameter, 8-bit AdamW: 2, paged 8-bit: 2 with the same peak, paged out to
  host memory only under pressure) and computes in bf16/fp16 under autocast;
- more than one GPU is DDP (a replica per GPU; with gradient_as_bucket_view the buckets are the
  gradients, no extra copy) or FSDP (weights, gradients and optimizer states sharded across the
  pod's GPUs; the root unit — embeddings, head, projector — and one wrapped decoder/encoder layer
  plus the prefetched next one gathered in the compute dtype at a time);
- every rank loads straight onto its own device (one safetensors shard passes through host
  memory at a time); FSDP loads one full copy on rank 0's host and shards it from there.
When the recipe changes, this module changes in the same commit. bench/memory.py checks the
figures against peak memory measured on CPU models of growing size (docs/benchmarks.md).

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
CUDA_HOST_GIB = 1.5  # the CUDA runtime's, cuBLAS' and NCCL's host-side memory, per GPU rank
SHARD_GIB = 5.0  # a safetensors shard of the published checkpoints, staged in host memory
MEL_BYTES_PER_SECOND = 128 * 100 * 4  # the feature cache: fp32 log-mel, 100 frames per second
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit weights and their double-quantized absmax
# optimizer → bytes of state per trainable parameter
OPTIMIZER_STATE_BYTES = {"adamw_torch": 8, "adamw_8bit": 2, "paged_adamw_8bit": 2}
OPTIMIZER_NAMES = {"adamw_torch": "adamw_torch (fp32 states)",
                   "adamw_8bit": "adamw_8bit (8-bit states, bitsandbytes)",
                   "paged_adamw_8bit": "paged_adamw_8bit (8-bit states, paged to host memory "
                                       "under pressure)"}
FSDP_GATHERED_LAYERS = 2  # the layer being computed and the prefetched next one


@dataclass(frozen=True)
class Setup:
    """What the spec asks for, reduced to what memory depends on."""

    mode: str  # lora | qlora | full
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
    optimizer: str = "adamw_torch"  # adamw_torch | adamw_8bit | paged_adamw_8bit
    freeze_embeddings: bool = False  # full FT: token embeddings and head frozen too
    strategy: str = "ddp"  # ddp | fsdp (only matters with more than one rank)
    nodes: int = 1  # pods of `gpus` GPUs each; FSDP shards across all their ranks

    @property
    def world_size(self) -> int:
        return self.gpus * self.nodes

    @property
    def sharded(self) -> bool:
        return self.strategy == "fsdp" and self.world_size > 1


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
    optimizer: str = OPTIMIZER_NAMES["adamw_torch"]

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
    if setup.mode != "full":
        projector = geometry.projector_parameters if setup.lora_projector else 0
        return geometry.lora_parameters(setup.lora_rank, setup.lora_mlp) + projector
    frozen = geometry.encoder_parameters if setup.freeze_audio_encoder else 0
    if setup.freeze_embeddings:
        frozen += geometry.embedding_parameters + geometry.head_parameters
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


def model_state_bytes(geometry: Geometry, setup: Setup, trainable: int) -> dict[str, float]:
    """Weights, autocast copies, gradients and optimizer states per GPU, before sharding."""
    g, c = geometry, setup.compute_bytes
    adapters = 4 * g.lora_parameters(setup.lora_rank, setup.lora_mlp)
    # modules_to_save: the original projector stays, an fp32 trainable copy is added
    projector_copy = 4 * g.projector_parameters if setup.lora_projector else 0
    if setup.mode == "full":
        weights = 4 * g.total_parameters  # fp32 master weights, frozen parts included
        casts = trainable * c if c < 4 and not setup.sharded else 0  # autocast's weight cache
    elif setup.mode == "qlora":
        quantized = g.layers * g.decoder_linear_parameters
        weights = quantized * NF4_BYTES + (g.total_parameters - quantized) * 4 + adapters \
            + projector_copy
        casts = max(a * b for a, b in g.attention_projections + g.mlp_projections) * c
    else:
        weights = g.total_parameters * c + adapters + projector_copy
        casts = 0
    return {"weights": weights, "weight_casts": casts, "gradients": 4 * trainable,
            "optimizer": OPTIMIZER_STATE_BYTES[setup.optimizer] * trainable}


def fsdp_gathered_bytes(geometry: Geometry, setup: Setup) -> float:
    """What FSDP holds unsharded at its peak: the root unit (embeddings, head, projector, final
    norm: not wrapped) and the wrapped layers being gathered, in the compute dtype, plus one
    layer's full fp32 gradient before its reduce-scatter."""
    g, c = geometry, setup.compute_bytes
    root = g.embedding_parameters + g.head_parameters + g.projector_parameters + g.hidden
    layer = max(g.decoder_layer_parameters, g.encoder_layer_parameters)
    return root * c + FSDP_GATHERED_LAYERS * layer * c + 4 * layer


def estimate(geometry: Geometry, setup: Setup) -> Estimate:
    g, c = geometry, setup.compute_bytes
    total = g.total_parameters
    trainable = trainable_parameters(g, setup)
    sequence = sequence_tokens(g, setup)
    tokens = setup.batch_size * sequence
    full = setup.mode == "full"

    # weights, gradients, optimizer states: a replica per GPU, or a 1/ranks shard with FSDP
    # (every node's GPUs hold a shard)
    state = model_state_bytes(g, setup, trainable)
    shards = setup.world_size if setup.sharded else 1
    weights, gradients, optimizer = (state[k] / shards for k in
                                     ("weights", "gradients", "optimizer"))
    casts = state["weight_casts"]
    gathered = fsdp_gathered_bytes(g, setup) if setup.sharded else 0

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
    live = weights + casts + gathered + optimizer + transient
    cuda = setup.device == "cuda"
    gpu = {
        "weights": weights / GIB, "weight_casts": casts / GIB, "gradients": gradients / GIB,
        "optimizer": optimizer / GIB, "fsdp_gathered": gathered / GIB,
        "activations": (decoder + embeddings + encoder) / GIB, "logits": logits / GIB,
        # the CUDA caching allocator keeps freed blocks for reuse; on CPU large tensors go
        # back to the system when freed
        "allocator_slack": live * (FRAGMENTATION - 1) / GIB if cuda else 0.0,
        "cuda_context": CUDA_CONTEXT_GIB if cuda else 0.0,
    }
    return Estimate(parameters_total=total, parameters_trainable=trainable,
                    sequence_tokens=sequence, gpu=gpu, host_gib=host_gib(g, setup, gpu),
                    checkpoint_gib=(4 * total if full else 4 * trainable) / GIB
                    + state["optimizer"] / GIB,
                    final_gib=(2 * total if full else 4 * trainable) / GIB,
                    feature_cache_gib_per_1000_clips=feature_cache_gib_per_1000_clips(g),
                    optimizer=OPTIMIZER_NAMES[setup.optimizer])


def feature_cache_gib_per_1000_clips(geometry: Geometry) -> float:
    """The feature cache: an fp32 log-mel of the whole audio window per clip, whatever its
    length (no GPU profile or spec needed: the train step asks this too)."""
    window_s = geometry.audio_positions / ENCODER_POSITIONS_PER_SECOND
    return 1000 * MEL_BYTES_PER_SECOND * window_s / GIB


def host_gib(geometry: Geometry, setup: Setup, gpu: dict[str, float]) -> float:
    """Host memory per pod. On a CPU, training itself happens there. On GPUs every rank
    streams the checkpoint onto its own device a shard at a time; FSDP instead has rank 0 load
    one full copy (in the weights' dtype) and broadcast the shards from it (rank 0's pod is
    the largest of a multi-node run, and every pod gets its figure)."""
    if setup.device == "cpu":
        return sum(gpu.values()) + PROCESS_HOST_GIB
    ranks = max(setup.gpus, 1)
    load_bytes = (4 if setup.mode == "full" else setup.compute_bytes) \
        * geometry.total_parameters / GIB
    staged = load_bytes if setup.sharded else ranks * min(load_bytes, SHARD_GIB)
    return staged + ranks * (PROCESS_HOST_GIB + CUDA_HOST_GIB)


def merge_host_gib(geometry: Geometry, setup: Setup) -> float:
    """Host memory of `publish --merge`: the base in bf16 whatever the host CPU, the fp32
    adapters folded into it, and the process."""
    return (2 * geometry.total_parameters + 4 * trainable_parameters(geometry, setup)) / GIB \
        + PROCESS_HOST_GIB
