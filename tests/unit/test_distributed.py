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
        "activation_checkpointing": True, "reshard_after_forward": True,
        "cpu_ram_efficient_loading": True}}


def test_only_rank_zero_reads_the_weights_of_a_sharded_base() -> None:
    """D5 at FSDP scale: Small-24B full is 97 GB of fp32 weights; 4 ranks each loading it
    would need 390 GB of host memory in one pod."""
    import torch

    from voxtune.train.distributed import loads_on_rank_zero
    from voxtune.train.resources import loading_arguments

    full = run_spec(mode="full", resources={"gpus": 4})
    assert loads_on_rank_zero(full, 4) and not loads_on_rank_zero(full, 1)
    # rank 0 loads into host memory for accelerate to shard out from; no rank loads to its GPU
    for rank in range(4):
        assert loading_arguments(full, torch.bfloat16, True, rank, 4) == {"dtype": torch.float32}
    # DDP and single-process runs still stream straight onto each rank's own GPU
    ddp = run_spec(mode="lora", resources={"gpus": 4})
    assert not loads_on_rank_zero(ddp, 4)
    assert loading_arguments(ddp, torch.bfloat16, True, 3, 4)["device_map"] == {"": 3}
    # a 4-bit base cannot be moved to meta by accelerate: each rank loads its quantized copy
    qlora = run_spec(mode="qlora", resources={"gpus": 2, "strategy": "fsdp"})
    assert not loads_on_rank_zero(qlora, 2)
    assert not fsdp_arguments(qlora, VOXTRAL_LAYERS, 2)["fsdp_config"][
        "cpu_ram_efficient_loading"]


def test_the_other_ranks_build_the_base_empty_with_real_buffers() -> None:
    import torch

    from voxtune.models.load import load, load_empty

    empty, processor = load_empty("tiny-random-4s", torch.float32)
    loaded, _ = load("tiny-random-4s", torch.float32)
    assert {n: (p.shape, p.dtype, p.device.type) for n, p in empty.named_parameters()} == {
        n: (p.shape, p.dtype, p.device.type) for n, p in loaded.named_parameters()}
    # accelerate maps the optimizer's parameters to their shards by address: all distinct
    addresses = [p.data_ptr() for p in empty.parameters()]
    assert 0 not in addresses and len(set(addresses)) == len(addresses)
    # accelerate re-registers non-persistent buffers as they are: they must hold real values
    for name, buffer in loaded.named_buffers():
        assert torch.equal(dict(empty.named_buffers())[name], buffer), name
    assert processor.feature_extractor.n_samples == 4 * 16_000


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_an_empty_mini_takes_no_host_memory() -> None:
    """Voxtral Mini in fp32 is 18.7 GB; built empty, a rank's memory barely moves (measured
    here: the Python objects of 4.7 B parameters' modules, well under 1 GiB)."""
    import gc

    import torch
    from transformers import VoxtralConfig

    from voxtune.models.load import empty_model

    config = VoxtralConfig(**{k: v for k, v in load_config(MINI).items()
                              if not k.startswith("_")})
    gc.collect()
    before = resident_bytes()
    model = empty_model(config, torch.float32)
    grown = resident_bytes() - before
    parameters = sum(p.numel() for p in model.parameters())
    assert parameters > 4.6e9 and model.lm_head.weight.device.type == "cpu"
    assert grown < 2**30, f"{grown / 2**30:.2f} GiB resident for {parameters * 4 / 1e9:.1f} GB"
