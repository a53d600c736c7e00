"""The resource plan: exact parameter counts of the published Voxtral configurations (checked
against the same configs built on the `meta` device), per-GPU memory, verdicts and advice,
`voxtune plan` and its JSON contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from voxtune.plan import DEFAULT_PROFILES, memory_gib, plan_run
from voxtune.plan.geometry import load_config, load_geometry
from voxtune.spec import RunSpec

MINI, SMALL = "mistralai/Voxtral-Mini-3B-2507", "mistralai/Voxtral-Small-24B-2507"
PROFILE = {p.name: p for p in DEFAULT_PROFILES}


def spec(**fields) -> RunSpec:
    return RunSpec.model_validate({"name": "plan", **fields})


# Published facts: Voxtral-Mini-3B-2507 has 4,676,271,104 parameters (encoder 636,968,960,
# projector 25,165,824, untied 131,072 × 3,072 head); Small-24B 24,261,800,960.
@pytest.mark.parametrize(("model", "total", "projector", "head"), [
    (MINI, 4_676_271_104, 25_165_824, 402_653_184),
    (SMALL, 24_261_800_960, 52_428_800, 671_088_640),
])
def test_published_configurations_have_their_exact_parameter_counts(
        model: str, total: int, projector: int, head: int) -> None:
    geometry = load_geometry(model)
    assert geometry.total_parameters == total
    assert geometry.encoder_parameters == 636_968_960  # the same Whisper-large-style encoder
    assert geometry.projector_parameters == projector and geometry.head_parameters == head


@pytest.mark.parametrize("model", [MINI, SMALL, "tiny-random", "tiny-random-4s"])
def test_arithmetic_matches_the_model_built_on_meta(model: str) -> None:
    import torch
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration

    config = {k: v for k, v in load_config(model).items() if not k.startswith("_")}
    with torch.device("meta"):
        built = VoxtralForConditionalGeneration(VoxtralConfig(**config))
    geometry = load_geometry(model)
    assert sum(p.numel() for p in built.parameters()) == geometry.total_parameters
    parts = {name: sum(p.numel() for p in module.parameters())
             for name, module in built.model.named_children()}
    assert parts["audio_tower"] == geometry.encoder_parameters
    assert parts["multi_modal_projector"] == geometry.projector_parameters
    assert parts["language_model"] == geometry.language_model_parameters


def test_lora_trainable_count_matches_peft_on_meta() -> None:
    import torch
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration

    from voxtune.train.adapt import apply_lora

    training = spec(base_model=MINI).training
    config = {k: v for k, v in load_config(MINI).items() if not k.startswith("_")}
    with torch.device("meta"):
        model = apply_lora(VoxtralForConditionalGeneration(VoxtralConfig(**config)),
                           training.lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == plan_run(spec(base_model=MINI)).estimate.parameters_trainable == 5_406_720


def test_the_tiny_preset_is_what_the_recipe_builds() -> None:
    from voxtune.models.presets import tiny_config

    built = tiny_config(4)
    assert built.audio_config.max_source_positions == load_geometry(
        "tiny-random-4s").audio_positions
    assert built.text_config.vocab_size == load_geometry("tiny-random").vocab


def test_small_full_fine_tuning_on_one_80gb_gpu_is_refused_naming_fsdp() -> None:
    plan = plan_run(spec(base_model=SMALL, mode="full", resources={"gpus": 1}),
                    PROFILE["80gb"])
    assert not plan.fits and plan.gpu_memory_gib > 300
    advice = " ".join(plan.advice)
    assert "FSDP" in advice and "× 80gb" in advice and "mode: lora" in advice


@pytest.mark.parametrize(("model", "mode", "gpus"), [
    (m, mode, g) for m in (MINI, SMALL) for mode in ("lora", "full") for g in (1, 2, 8)])
def test_plan_answers_every_model_mode_and_gpu_count(model: str, mode: str, gpus: int) -> None:
    plan = plan_run(spec(base_model=model, mode=mode, resources={"gpus": gpus}))
    data = plan.to_json()
    for key in ("parameters", "gpu_memory_gb", "gpu_profile", "host_memory_gb",
                "checkpoint_gb", "fits", "advice"):
        assert key in data
    assert data["parameters"]["total"] >= data["parameters"]["trainable"] > 0
    assert data["fits"] == (data["gpu_memory_gb"] <= data["gpu_profile"]["memory_gb"])
    assert bool(data["advice"]) != data["fits"]
    # every rank loads a full copy first: host memory grows with GPUs per pod
    assert data["host_memory_gb"] >= gpus * plan.geometry.total_parameters * 2 / 2**30


def test_mini_lora_fits_a_24gb_gpu_and_full_needs_more() -> None:
    lora = plan_run(spec(base_model=MINI))
    assert lora.fits and lora.profile.name == "24gb"
    full = plan_run(spec(base_model=MINI, mode="full"), PROFILE["24gb"])
    assert not full.fits
    # fp32 weights + gradients + AdamW of the 4.04 B trainable parameters alone: ≈62.6 GiB
    static = sum(full.estimate.gpu[k] for k in ("weights", "gradients", "optimizer"))
    assert 62 < static < 63.5
    assert any("GPU profile" in sentence for sentence in full.advice)


def test_gradient_checkpointing_and_batch_size_move_the_estimate_the_right_way() -> None:
    base = plan_run(spec(base_model=MINI, training={"batch_size": 8})).estimate
    checkpointed = plan_run(spec(base_model=MINI, training={
        "batch_size": 8, "gradient_checkpointing": True})).estimate
    smaller = plan_run(spec(base_model=MINI, training={"batch_size": 2})).estimate
    assert checkpointed.gpu["activations"] < base.gpu["activations"] / 5
    assert smaller.gpu["logits"] == pytest.approx(base.gpu["logits"] / 4)
    assert checkpointed.gpu["weights"] == base.gpu["weights"]


def test_ddp_adds_gradient_buckets_and_full_checkpoints_are_about_50_gb() -> None:
    one = plan_run(spec(base_model=MINI, mode="full", resources={"gpus": 1})).estimate
    four = plan_run(spec(base_model=MINI, mode="full", resources={"gpus": 4})).estimate
    assert one.gpu["ddp_buckets"] == 0 and four.gpu["ddp_buckets"] == pytest.approx(
        one.gpu["gradients"])
    assert 45 < one.checkpoint_gib < 50  # fp32 model + AdamW states: ≈51 GB


def test_host_limit_is_checked_with_advice() -> None:
    plan = plan_run(spec(base_model=MINI, resources={"gpus": 8, "memory": "48Gi"}),
                    host_limit_gib=memory_gib("48Gi"))
    assert not plan.fits and any("resources.memory" in s for s in plan.advice)


@pytest.mark.parametrize(("quantity", "gib"), [("64Gi", 64), ("512Mi", 0.5), ("1Ti", 1024),
                                               ("80G", 80e9 / 2**30)])
def test_memory_quantities(quantity: str, gib: float) -> None:
    assert memory_gib(quantity) == pytest.approx(gib)


def test_unknown_models_are_a_clear_error(tmp_path: Path) -> None:
    from voxtune.errors import UserError

    with pytest.raises(UserError, match="cannot plan 'someone/else' offline"):
        load_geometry("someone/else")
    (tmp_path / "config.json").write_text(json.dumps(load_config(MINI)))
    assert load_geometry(str(tmp_path)).total_parameters == 4_676_271_104


def run_plan(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voxtune", "plan", *argv],
                          capture_output=True, text=True)


def test_cli_json_contract_and_exit_codes(tmp_path: Path) -> None:
    fits = tmp_path / "mini.yaml"
    fits.write_text(yaml.safe_dump({"name": "mini", "base_model": MINI}))
    done = run_plan(str(fits), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["parameters"]["total"] == 4_676_271_104 and data["fits"] is True
    assert data["gpu_profile"]["name"] == "24gb"

    too_big = tmp_path / "small.yaml"
    too_big.write_text(yaml.safe_dump({"name": "small", "base_model": SMALL, "mode": "full"}))
    done = run_plan(str(too_big), "--gpu-profile", "80gb")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "does not fit" in done.stderr and "FSDP" in done.stderr
    assert "verdict     does NOT fit" in done.stdout

    done = run_plan(str(fits), "--gpu-profile", "99gb")
    assert done.returncode == 2 and "use one of" in done.stderr
