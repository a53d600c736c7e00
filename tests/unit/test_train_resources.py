"""What the train step asks of the hardware (issue 12, D1, D4-D6, QLoRA): loading arguments per
rank, the 4-bit base, the optimizer that runs or a clear refusal, fp32 trainables on an fp16
base, DDP buckets, frozen embeddings, and GPU out-of-memory as a user error.

All on CPU: the tiny random Voxtral for real loads and steps, full-size shapes on `meta`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers import Trainer, VoxtralConfig, VoxtralForConditionalGeneration

from tests.train_fixtures import shared_tiny_home, write_clip  # noqa: F401 (fixture)
from tests.unit.test_model import training_batch
from voxtune.data.manifest import MANIFEST, jsonl_bytes
from voxtune.errors import UserError
from voxtune.models.load import load
from voxtune.spec import LoraSpec, RunSpec, TrainingSpec
from voxtune.train import resources
from voxtune.train.adapt import adapt, apply_lora, prepare_full
from voxtune.train.recipe import main, training_arguments

pytestmark = pytest.mark.usefixtures("shared_tiny_home")


def spec(mode: str = "lora", **training: object) -> RunSpec:
    return RunSpec(name="r", base_model="tiny-random-4s", mode=mode, training=training,
                   tracking={"enabled": False})


# --- D5: each rank loads straight onto its own GPU --------------------------------------------


@pytest.mark.parametrize("rank", range(8))
def test_every_rank_loads_onto_its_own_gpu(rank: int) -> None:
    arguments = resources.loading_arguments(spec("lora"), torch.bfloat16, True, rank)
    assert arguments == {"dtype": torch.bfloat16, "device_map": {"": rank}}


@pytest.mark.parametrize(("mode", "dtype"), [("lora", torch.bfloat16), ("full", torch.float32)])
def test_frozen_bases_load_in_the_compute_dtype_full_in_fp32(mode: str,
                                                             dtype: torch.dtype) -> None:
    assert resources.loading_arguments(spec(mode), torch.bfloat16, True, 3) == {
        "dtype": dtype, "device_map": {"": 3}}
    assert resources.loading_arguments(spec(mode), torch.bfloat16, False) == {"dtype": dtype}


def test_local_rank_is_torchruns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert resources.local_rank() == 5
    monkeypatch.delenv("LOCAL_RANK")
    assert resources.local_rank() == 0


# --- QLoRA: a 4-bit NF4 base --------------------------------------------------------------------


@pytest.mark.parametrize(("compute", "expected"), [(torch.bfloat16, torch.bfloat16),
                                                   (torch.float16, torch.float16),
                                                   (torch.float32, torch.bfloat16)])
def test_qlora_quantization_config(compute: torch.dtype, expected: torch.dtype) -> None:
    arguments = resources.loading_arguments(spec("qlora"), compute, True, 2)
    config = arguments["quantization_config"]
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == expected
    assert config.llm_int8_skip_modules == ["model.audio_tower", "model.multi_modal_projector",
                                            "lm_head"]
    assert arguments["device_map"] == {"": 2}
    assert resources.quantization(spec("lora"), compute) is None


def test_qlora_base_quantizes_only_the_language_model_and_trains_in_fp32() -> None:
    """bitsandbytes 0.50 quantizes on CPU too, so the real 4-bit load runs here."""
    from bitsandbytes.nn import Linear4bit

    qlora = spec("qlora", lora=LoraSpec(projector=True))
    model, _ = load(qlora.base_model, **resources.loading_arguments(qlora, torch.bfloat16, False))
    modules = dict(model.named_modules())
    quantized = {name for name, module in modules.items() if isinstance(module, Linear4bit)}
    assert any(".language_model.layers.0.self_attn.q_proj" in name for name in quantized)
    assert any(name.endswith("mlp.down_proj") for name in quantized)
    assert not [name for name in quantized
                if "audio_tower" in name or "multi_modal_projector" in name or "lm_head" in name]
    model = adapt(model, "qlora", qlora.training)
    trainable = {name: p.dtype for name, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in name for name in trainable)
    assert any("multi_modal_projector" in name for name in trainable)
    assert set(trainable.values()) == {torch.float32}


# --- D6: the optimizer that runs, or a clear refusal --------------------------------------------


@pytest.mark.parametrize(("name", "on_gpu", "expected"), [
    ("adamw_torch", False, "adamw_torch"),
    ("adamw_torch", True, "adamw_torch_fused"),
    ("adamw_8bit", True, "adamw_bnb_8bit"),
    ("adamw_8bit", False, "adamw_bnb_8bit"),  # bitsandbytes 0.50 has CPU 8-bit optimizers
    ("paged_adamw_8bit", True, "paged_adamw_8bit"),
])
def test_trainer_optimizer_names(name: str, on_gpu: bool, expected: str) -> None:
    assert resources.trainer_optimizer(name, on_gpu, bitsandbytes=True) == expected


@pytest.mark.parametrize("name", ["adamw_8bit", "paged_adamw_8bit"])
def test_an_8bit_optimizer_without_bitsandbytes_is_refused(name: str) -> None:
    with pytest.raises(UserError, match=rf"training.optimizer {name} needs bitsandbytes"):
        resources.trainer_optimizer(name, True, bitsandbytes=False)


def test_paged_optimizer_needs_a_gpu() -> None:
    with pytest.raises(UserError, match=r"paged_adamw_8bit .* needs a GPU"):
        resources.trainer_optimizer("paged_adamw_8bit", False, bitsandbytes=True)


def test_bitsandbytes_is_installed_and_its_8bit_adam_steps_here() -> None:
    assert resources.has_bitsandbytes()  # the train extra has it
    resources.check_optimizer_runs("adamw_8bit", on_gpu=False)


def test_missing_bitsandbytes_stops_the_run_before_loading(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import` fail for real
    run = spec("lora", optimizer="adamw_8bit", max_steps=1)
    with pytest.raises(UserError, match="needs bitsandbytes, which is not installed"):
        main(run, prepared(tmp_path), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(("mode", "rate", "checkpointing"), [
    ("lora", 1e-4, False), ("qlora", 1e-4, True), ("full", 1e-5, True)])
def test_learning_rate_and_checkpointing_come_from_the_spec(tmp_path: Path, mode: str,
                                                            rate: float,
                                                            checkpointing: bool) -> None:
    args = training_arguments(spec(mode), tmp_path, "fp32", on_gpu=False)
    assert args.learning_rate == rate and args.activation_checkpointing is checkpointing
    assert args.optim == "adamw_torch"
    explicit = spec("full", learning_rate=3e-6, gradient_checkpointing=False,
                    optimizer="adamw_8bit")
    args = training_arguments(explicit, tmp_path, "fp32", on_gpu=False)
    assert args.learning_rate == 3e-6 and args.activation_checkpointing is False
    assert args.optim == "adamw_bnb_8bit"


def test_ddp_shares_gradient_buckets(tmp_path: Path) -> None:
    model, _ = load("tiny-random-4s")
    trainer = Trainer(model=model, args=training_arguments(spec(), tmp_path, "fp32", False))
    resources.share_gradient_buckets(trainer)
    assert trainer.accelerator.ddp_handler.to_kwargs()["gradient_as_bucket_view"] is True


def test_freeze_embeddings_freezes_the_token_embeddings_and_the_head() -> None:
    """Mini's shapes on `meta`: 4.68 B parameters, the encoder and 2 × 131072 × 3072 frozen."""
    with torch.device("meta"):
        model = VoxtralForConditionalGeneration(VoxtralConfig(audio_token_id=24))
    total = sum(p.numel() for p in model.parameters())
    encoder = sum(p.numel() for p in model.model.audio_tower.parameters())
    prepare_full(model, TrainingSpec(freeze_embeddings=True))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == (
        total - encoder - 2 * 131_072 * 3072)
    assert not [name for name in trainable if "embed_tokens" in name or "lm_head" in name]
    prepare_full(model, TrainingSpec())
    assert any("lm_head" in name for name, p in model.named_parameters() if p.requires_grad)


# --- D4: trainables in fp32 on an fp16 base -----------------------------------------------------


def test_fp16_base_trains_fp32_adapters_and_projector_under_the_grad_scaler(
        tmp_path: Path) -> None:
    """The fp16 recipe as accelerate runs it on a GPU: autocast, scaled loss, unscale, step.

    On a CPU the Trainer's fp16 path has no GradScaler, so the scaler's check that refused
    the fp16 projector ("Attempting to unscale FP16 gradients") is driven here directly."""
    model, processor = load("tiny-random-4s", torch.float16)
    model = apply_lora(model, LoraSpec(projector=True))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {p.dtype for p in trainable} == {torch.float32}
    assert any(p.dtype == torch.float16 for p in model.parameters() if not p.requires_grad)
    batch = training_batch(tmp_path, processor)
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    scaler = torch.amp.GradScaler("cpu")
    with torch.autocast("cpu", dtype=torch.float16):
        loss = model(**batch).loss
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update()
    assert torch.isfinite(loss)


# --- D1: GPU out of memory is the spec's to fix ------------------------------------------------


def prepared(folder: Path) -> Path:
    clips = [write_clip(folder, f"train-{n}", 1.0, "one two", "en", seed=n) for n in range(2)]
    (folder / MANIFEST).write_bytes(jsonl_bytes(clips))
    return folder


def out_of_memory(*args: object, **kwargs: object) -> None:
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


@pytest.mark.parametrize(("patched", "where"), [
    ("voxtune.models.load.open_checkpoint", "loading the base model"),
    ("transformers.Trainer.train", "training"),
], ids=["load", "train"])
def test_out_of_gpu_memory_is_a_user_error_naming_what_fits(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, patched: str, where: str) -> None:
    monkeypatch.setattr(patched, out_of_memory)
    run = spec("lora", max_steps=1)
    with pytest.raises(UserError, match=rf"out of GPU memory {where} \(training.batch_size 2\): "
                                        r"run `voxtune plan`.*fsdp.*gpu_profile"):
        main(run, prepared(tmp_path / "prepared"), tmp_path / "run")
