"""What gets trained: LoRA on the language model (on a bf16 or a 4-bit base), or full
fine-tuning with a frozen encoder.

Parallel recipes as plain functions, not a class hierarchy. Each returns the model to train,
whose trainable parameters are all fp32 (`trainables_in_fp32`); `trainable_summary` is the
line for the log.
"""

from __future__ import annotations

from typing import Any

import torch

from voxtune.spec import LoraSpec, TrainingSpec

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


def lora_target_pattern(spec: LoraSpec) -> str:
    """A regex over module names that matches only the language model's projections.

    A plain list like ["q_proj", "v_proj"] also matches the audio encoder's attention (upstream's
    LoRA did that by accident); the encoder stays untouched unless asked for.
    """
    names = ATTENTION + (MLP if spec.mlp else ())
    return rf".*language_model.*\.({'|'.join(names)})$"


def apply_lora(model: Any, spec: LoraSpec) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
        target_modules=lora_target_pattern(spec),
        # Training the small projector fully lets the text model re-read the audio features.
        modules_to_save=["multi_modal_projector"] if spec.projector else None,
    )
    return trainables_in_fp32(get_peft_model(model, config))


def apply_qlora(model: Any, spec: TrainingSpec) -> Any:
    """LoRA on a 4-bit base (loaded with `resources.quantization`): peft's k-bit preparation
    freezes the base, makes the inputs carry gradients through the frozen 4-bit layers and, when
    asked, turns on gradient checkpointing; it also upcasts the unquantized frozen weights
    (encoder, embeddings, head) to fp32, which the plan counts."""
    from peft import prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=bool(spec.gradient_checkpointing),
        gradient_checkpointing_kwargs={"use_reentrant": False})
    return apply_lora(model, spec.lora)


def prepare_full(model: Any, spec: TrainingSpec) -> Any:
    """Full fine-tuning; the audio encoder (~0.6 B parameters) is frozen unless asked otherwise,
    and with `freeze_embeddings` the token embeddings and the output head too (Mini: 0.8 B
    parameters, with their gradients and optimizer states)."""
    frozen = {id(p) for p in frozen_embeddings(model)} if spec.freeze_embeddings else set()
    for name, parameter in model.named_parameters():
        encoder = spec.freeze_audio_encoder and ".audio_tower." in name
        parameter.requires_grad = not (encoder or id(parameter) in frozen)
    return trainables_in_fp32(model)


def frozen_embeddings(model: Any) -> list[Any]:
    """The token embedding and output head weights (one tensor when they are tied)."""
    modules = (model.get_input_embeddings(), model.get_output_embeddings())
    return [p for module in modules if module is not None for p in module.parameters()]


def trainables_in_fp32(model: Any) -> Any:
    """Every trainable parameter in fp32, whatever the base dtype.

    peft copies `modules_to_save` (the projector) in the base dtype: on an fp16 base its
    gradients are fp16, which the fp16 GradScaler refuses ("Attempting to unscale FP16
    gradients"), and on a bf16 base pure-bf16 updates lose what is small against the weight.
    Frozen weights stay as loaded; autocast computes in the compute dtype either way.
    """
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
    return model


def ready_to_transcribe(model: Any) -> Any:
    """After training, whole modules trained beside an adapter (`modules_to_save`: the projector)
    go back to the frozen base's dtype, as they are when the adapter is loaded on its base: in
    generation nothing autocasts, and an fp32 projector would meet bf16/fp16 encoder outputs.
    LoRA layers cast their inputs themselves; full fine-tuning trains fp32 throughout."""
    from peft.utils.other import ModulesToSaveWrapper

    base_dtype = model.get_input_embeddings().weight.dtype
    for module in model.modules():
        if isinstance(module, ModulesToSaveWrapper):
            module.to(base_dtype)
    return model


def adapt(model: Any, mode: str, spec: TrainingSpec) -> Any:
    if mode == "qlora":
        return apply_qlora(model, spec)
    return apply_lora(model, spec.lora) if mode == "lora" else prepare_full(model, spec)


def trainable_summary(model: Any) -> str:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"
