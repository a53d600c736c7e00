"""What FSDP is told to wrap and how, without processes: full-size shapes on the `meta` device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from voxtune.plan.geometry import load_config
from voxtune.spec import RunSpec
from voxtune.train.distributed import fsdp_arguments, layer_classes

MINI, SMALL = "mistralai/Voxtral-Mini-3B-2507", "mistralai/Voxtral-Small-24B-2507"
VOXTRAL_LAYERS = ["LlamaDecoderLayer", "VoxtralEncoderLayer"]


def on_meta(model_id: str) -> Any:
    import torch
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration

    config = {k: v for k, v in load_config(model_id).items() if not k.startswith("_")}
    with torch.device("meta"):
        return VoxtralForConditionalGeneration(VoxtralConfig(**config))


def run_spec(**fields: Any) -> RunSpec:
    return RunSpec.model_validate({"name": "sharded", **fields})


@pytest.mark.parametrize("model_id", [MINI, SMALL])
def test_the_layers_wrapped_are_the_decoder_and_encoder_layers(model_id: str) -> None:
    model = on_meta(model_id)
    assert type(model)._no_split_modules is None  # the class declares none, so they are named
    assert layer_classes(model) == VOXTRAL_LAYERS
    # what transformers 5.24 collects from the sub-models at init agrees
    assert layer_classes(model) == sorted(model._no_split_modules)


def test_a_lora_model_wraps_the_same_layers() -> None:
    from voxtune.train.adapt import apply_lora

    model = apply_lora(on_meta(MINI), run_spec().training.lora)
    assert layer_classes(model) == VOXTRAL_LAYERS


def test_full_fine_tuning_on_several_gpus_is_sharded_with_fsdp2() -> None:
    spec = run_spec(mode="full", resources={"gpus": 4})
    assert spec.resources.strategy == "fsdp"
    assert fsdp_arguments(spec, VOXTRAL_LAYERS, 4) == {"fsdp": True, "fsdp_config": {
        "version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": VOXTRAL_LAYERS, "state_dict_type": "SHARDED_STATE_DICT",
        "activation_checkpointing": True, "reshard_after_forward": True}}


def test_what_is_not_sharded() -> None:
    assert fsdp_arguments(run_spec(mode="lora", resources={"gpus": 4}), VOXTRAL_LAYERS, 4) == {}
    assert fsdp_arguments(run_spec(mode="full", resources={"gpus": 4, "strategy": "ddp"}),
                          VOXTRAL_LAYERS, 4) == {}
    lone = run_spec(mode="full", resources={"gpus": 1, "strategy": "fsdp"})
    assert fsdp_arguments(lone, VOXTRAL_LAYERS, 1) == {}  # one process: nothing to shard with
    with pytest.raises(ValueError, match="no decoder or encoder layers"):
        fsdp_arguments(lone, [], 2)


def test_lora_can_ask_for_fsdp_and_checkpointing_follows_the_spec() -> None:
    spec = run_spec(mode="lora", resources={"gpus": 2, "strategy": "fsdp"},
                    training={"gradient_checkpointing": False})
    config = fsdp_arguments(spec, VOXTRAL_LAYERS, 2)["fsdp_config"]
    assert config["activation_checkpointing"] is False


def test_the_trainer_gets_fsdp_and_not_its_own_checkpointing(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    """The Trainer refuses both kinds of activation checkpointing at once."""
    from voxtune.train import distributed
    from voxtune.train.recipe import training_arguments

    # torchrun's WORLD_SIZE would make TrainingArguments start a process group
    monkeypatch.setattr(distributed, "processes", lambda: 2)
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")  # TrainingArguments sets it
    spec = run_spec(mode="full", resources={"gpus": 2})
    args = training_arguments(spec, tmp_path, "fp32", False, layers=VOXTRAL_LAYERS)
    assert args.fsdp is True and args.activation_checkpointing is False
    assert args.fsdp_plugin_args["fsdp_version"] == 2
    assert args.fsdp_plugin_args["transformer_cls_names_to_wrap"] == ",".join(VOXTRAL_LAYERS)
    assert args.fsdp_plugin_args["activation_checkpointing"] is True
    assert args.fsdp_plugin_args["state_dict_type"] == "SHARDED_STATE_DICT"

    monkeypatch.setattr(distributed, "processes", lambda: 1)
    alone = training_arguments(spec, tmp_path, "fp32", False, layers=VOXTRAL_LAYERS)
    assert not alone.fsdp and alone.activation_checkpointing is True
