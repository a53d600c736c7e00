"""What gets trained: LoRA on the language model, or full fine-tuning with a frozen encoder.

Two parallel recipes as plain functions, not a class hierarchy. Both return the model to train
and a one-line description of the trainable parameters for the log.
"""

from __future__ import annotations

from typing import Any

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
    return get_peft_model(model, config)


def prepare_full(model: Any, spec: TrainingSpec) -> Any:
    """Full fine-tuning; the audio encoder (~0.6 B parameters) is frozen unless asked otherwise."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad = not (spec.freeze_audio_encoder and ".audio_tower." in name)
    return model


def adapt(model: Any, mode: str, spec: TrainingSpec) -> Any:
    return apply_lora(model, spec.lora) if mode == "lora" else prepare_full(model, spec)


def trainable_summary(model: Any) -> str:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"
