"""The resource plan: exact parameter counts of the published Voxtral configurations (checked
against the same configs built on the `meta` device), per-GPU memory, verdicts and advice,
`voxtune plan` and its JSON contract."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from voxtune.plan import DEFAULT_PROFILES, UnknownProfile, memory_gib, plan_run
from voxtune.plan.geometry import load_config, load_geometry
from voxtune.plan.memory import CUDA_HOST_GIB, PROCESS_HOST_GIB, SHARD_GIB
from voxtune.plan.placement import DoesNotFit, place, refuse_unless_fits
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
    assert not plan.fits and plan.gpu_memory_gib > 250
    advice = " ".join(plan.advice)
    assert "FSDP: resources.gpus: 4 and resources.strategy: fsdp" in advice
    assert "4 × 80gb" in advice and "mode: lora" in advice and "mode: qlora" in advice
    # what the advice says is true: that setup fits
    sharded = plan_run(spec(base_model=SMALL, mode="full", resources={"gpus": 4}),
                       PROFILE["80gb"])
    assert sharded.fits and sharded.setup.strategy == "fsdp"


@pytest.mark.parametrize(("model", "mode", "gpus"), [
    (m, mode, g) for m in (MINI, SMALL) for mode in ("lora", "qlora", "full")
    for g in (1, 2, 8)])
def test_plan_answers_every_model_mode_and_gpu_count(model: str, mode: str, gpus: int) -> None:
    plan = plan_run(spec(base_model=model, mode=mode, resources={"gpus": gpus}))
    data = plan.to_json()
    for key in ("parameters", "gpu_memory_gb", "gpu_profile", "host_memory_gb",
                "checkpoint_gb", "fits", "advice", "feature_path", "disk_gb"):
        assert key in data
    assert data["parameters"]["total"] >= data["parameters"]["trainable"] > 0
    assert data["fits"] == (data["gpu_memory_gb"] <= data["gpu_profile"]["memory_gb"])
    assert bool(data["advice"]) != data["fits"]
    # only Small's full fine-tuning on one GPU holds more than any GPU: it needs FSDP
    assert data["fits"] == (not (model == SMALL and mode == "full" and gpus == 1))
    assert data["feature_path"] == "device" and data["disk_gb"][
        "feature_cache_per_1000_clips"] == 0
    # publish writes the adapter, or the whole bf16 model twice (transformers' and vLLM's)
    bf16_model = plan.geometry.total_parameters * 2 / 2**30
    published = data["disk_gb"]["publish"]
    assert published == pytest.approx(2 * bf16_model, rel=1e-3) if mode == "full" else \
        published < 0.05 * bf16_model
    # each rank loads straight onto its own GPU: no full host copy per rank (D5)
    bf16_copy = plan.geometry.total_parameters * 2 / 2**30
    if gpus == 8:
        assert data["host_memory_gb"] < gpus * bf16_copy
    assert not any("not do yet" in sentence for sentence in data["advice"])


def test_mini_lora_fits_a_24gb_gpu_and_full_needs_more() -> None:
    lora = plan_run(spec(base_model=MINI))
    assert lora.fits and lora.profile.name == "24gb"
    full = plan_run(spec(base_model=MINI, mode="full"), PROFILE["24gb"])
    assert not full.fits
    # fp32 weights + gradients + 8-bit AdamW (2 bytes) of the 4.04 B trainable: ≈40 GiB
    static = sum(full.estimate.gpu[k] for k in ("weights", "gradients", "optimizer"))
    assert 39.5 < static < 40.5
    assert any("resources.gpu_profile: 80gb" in sentence for sentence in full.advice)
    assert any("resources.gpus: 4 and resources.strategy: fsdp" in sentence
               for sentence in full.advice)


def test_mini_full_fine_tuning_fits_one_80gb_gpu_with_8bit_adamw_only() -> None:
    eight_bit = plan_run(spec(base_model=MINI, mode="full"), PROFILE["80gb"])
    assert eight_bit.setup.optimizer == "adamw_8bit" and eight_bit.fits
    assert eight_bit.estimate.optimizer.startswith("adamw_8bit")
    fp32 = plan_run(spec(base_model=MINI, mode="full", training={"optimizer": "adamw_torch",
                                                                 "gradient_checkpointing":
                                                                 False}), PROFILE["80gb"])
    assert fp32.estimate.gpu["optimizer"] == pytest.approx(
        4 * eight_bit.estimate.gpu["optimizer"])
    assert not fp32.fits and any("training.optimizer: adamw_8bit" in s for s in fp32.advice)
    paged = plan_run(spec(base_model=MINI, mode="full", training={
        "optimizer": "paged_adamw_8bit"}), PROFILE["80gb"])
    assert paged.gpu_memory_gib == pytest.approx(eight_bit.gpu_memory_gib)  # same peak


def test_qlora_quantizes_the_decoder_linear_layers_only() -> None:
    mini = plan_run(spec(base_model=MINI, mode="qlora"))
    small = plan_run(spec(base_model=SMALL, mode="qlora"))
    assert mini.fits and mini.gpu_memory_gib < 16  # Mini QLoRA: a 16 GB GPU
    assert small.fits and small.profile.name == "48gb"  # Small-24B: one 48 GB GPU
    g = small.geometry
    quantized = g.layers * g.decoder_linear_parameters
    fp32_rest = (g.total_parameters - quantized) * 4  # peft's k-bit preparation upcasts them
    weights = small.estimate.gpu["weights"] * 2**30 - 4 * g.lora_parameters(8, False)
    assert weights == pytest.approx(quantized * (0.5 + 1 / 64 + 4 / 16384) + fp32_rest)
    lora = plan_run(spec(base_model=SMALL, mode="lora"))
    assert small.estimate.parameters_trainable == lora.estimate.parameters_trainable


def test_freezing_the_embeddings_takes_them_out_of_training() -> None:
    full = plan_run(spec(base_model=MINI, mode="full")).estimate
    frozen = plan_run(spec(base_model=MINI, mode="full",
                           training={"freeze_embeddings": True})).estimate
    geometry = load_geometry(MINI)
    assert full.parameters_trainable - frozen.parameters_trainable == (
        geometry.embedding_parameters + geometry.head_parameters) == 805_306_368
    assert frozen.gpu["optimizer"] < full.gpu["optimizer"]


def test_gradient_checkpointing_and_batch_size_move_the_estimate_the_right_way() -> None:
    base = plan_run(spec(base_model=MINI, training={"batch_size": 8})).estimate
    checkpointed = plan_run(spec(base_model=MINI, training={
        "batch_size": 8, "gradient_checkpointing": True})).estimate
    smaller = plan_run(spec(base_model=MINI, training={"batch_size": 2})).estimate
    assert checkpointed.gpu["activations"] < base.gpu["activations"] / 5
    assert smaller.gpu["logits"] == pytest.approx(base.gpu["logits"] / 4)
    assert checkpointed.gpu["weights"] == base.gpu["weights"]


def test_fsdp_shards_weights_gradients_and_states_and_ddp_adds_no_buckets() -> None:
    one = plan_run(spec(base_model=MINI, mode="full", resources={"gpus": 1})).estimate
    four = plan_run(spec(base_model=MINI, mode="full", resources={"gpus": 4})).estimate
    ddp = plan_run(spec(base_model=MINI, mode="full",
                        resources={"gpus": 4, "strategy": "ddp"})).estimate
    for part in ("weights", "gradients", "optimizer"):
        assert four.gpu[part] == pytest.approx(one.gpu[part] / 4)
        assert ddp.gpu[part] == pytest.approx(one.gpu[part])  # gradient_as_bucket_view
    # one wrapped layer (and the prefetched next) plus the unwrapped root are gathered
    assert 1 < four.gpu["fsdp_gathered"] < 3 and one.gpu["fsdp_gathered"] == 0
    # FSDP loads one full fp32 copy on rank 0's host, not one per rank
    per_rank = PROCESS_HOST_GIB + CUDA_HOST_GIB
    assert one.host_gib == pytest.approx(SHARD_GIB + per_rank)
    assert four.host_gib == pytest.approx(4 * one.parameters_total / 2**30 + 4 * per_rank)


@pytest.mark.parametrize(("optimizer", "low", "high"), [
    ("adamw_8bit", 24, 26), ("adamw_torch", 45, 50)])
def test_full_checkpoints_hold_fp32_weights_and_optimizer_states(
        optimizer: str, low: float, high: float) -> None:
    plan = plan_run(spec(base_model=MINI, mode="full", training={"optimizer": optimizer}))
    assert low < plan.estimate.checkpoint_gib < high  # AdamW fp32: ≈51 GB, 8-bit: ≈27 GB
    assert plan.estimate.final_gib == pytest.approx(2 * 4_676_271_104 / 2**30)  # bf16 final/


def test_cpu_runs_cache_features_and_name_the_feature_path() -> None:
    plan = plan_run(spec(base_model="tiny-random", resources={"gpus": 0}))
    data = plan.to_json()
    assert data["feature_path"] == "cache" and data["disk_gb"][
        "feature_cache_per_1000_clips"] > 1  # a 30-s fp32 log-mel per clip: 1.46 MiB
    assert data["gpu_profile"] is None and data["fits"]


def test_a_named_gpu_profile_is_used_and_an_unknown_one_is_refused() -> None:
    from voxtune.errors import UserError

    assert plan_run(spec(base_model=MINI, resources={"gpu_profile": "141gb"})).profile.name \
        == "141gb"
    with pytest.raises(UserError, match="GPU profile 'a100': use one of 24gb, 48gb"):
        plan_run(spec(base_model=MINI, resources={"gpu_profile": "a100"}))


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

    # what the train pod gets, against a cluster's own profiles and volume speed
    config = tmp_path / "jobs.yaml"
    config.write_text(yaml.safe_dump({"checkpoint_write_mb_per_s": 100, "gpu_profiles": [
        {"name": "a100", "memory_gib": 79, "product": "NVIDIA-A100-SXM4-80GB"}]}))
    full = tmp_path / "full.yaml"
    full.write_text(yaml.safe_dump({"name": "full", "base_model": MINI, "mode": "full"}))
    done = run_plan(str(full), "--config", str(config), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["gpu_profile"]["name"] == "a100" and data["write_mb_per_s"] == 100
    assert data["pod"]["gpu_product"] == "NVIDIA-A100-SXM4-80GB"
    assert data["pod"]["termination_grace_s"] > 300 and data["pod"]["checkpoint_covered"]
    done = run_plan(str(full), "--config", str(config), "--gpu-profile", "80gb")
    assert done.returncode == 2 and "use one of a100" in done.stderr


def test_readme_gpu_table_is_the_plans() -> None:
    from voxtune.plan.table import gpu_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- gpu-table")
    start = readme.index("\n", start) + 1
    end = readme.index("<!-- /gpu-table -->")
    assert readme[start:end] == gpu_table(), "README is stale: paste `voxtune plan --table`"
    assert run_plan("--table").stdout == gpu_table()


# --- placement: what a run's pods get, and the refusal ----------------------------------------


def test_train_pod_memory_grows_with_its_gpus() -> None:
    one = place(spec(base_model=MINI, resources={"gpus": 1}))
    eight = place(spec(base_model=MINI, resources={"gpus": 8}))
    assert 8 <= one.train_memory_gib < 16
    assert eight.train_memory_gib > 6 * one.train_memory_gib
    assert one.gpu_product == "NVIDIA-L4" and one.checkpoint_covered


def test_small_full_fine_tuning_on_one_80gb_gpu_is_not_placed() -> None:
    with pytest.raises(DoesNotFit, match=r"does not fit \(≈28\d GiB per GPU on 80gb.*FSDP: "
                       r"resources.gpus: 4"):
        place(spec(base_model=SMALL, mode="full", resources={"gpu_profile": "80gb"}))
    sharded = place(spec(base_model=SMALL, mode="full",
                         resources={"gpus": 4, "gpu_profile": "80gb"}))
    assert sharded.gpu_product == "NVIDIA-H100-80GB-HBM3"
    # rank 0 stages one fp32 copy (≈90 GiB) for FSDP to shard
    assert 100 < sharded.train_memory_gib < 140


def test_the_runs_own_memory_wins_when_larger_and_is_refused_when_too_small() -> None:
    assert place(spec(base_model=MINI, resources={"memory": "64Gi"})).train_memory_gib == 64
    with pytest.raises(DoesNotFit, match=r"on 24gb .*give the pod at least 68 GiB of memory "
                       r"\(resources.memory; 48 GiB is too little\)"):
        place(spec(base_model=MINI, resources={"gpus": 8, "memory": "48Gi"}))


def test_grace_covers_the_checkpoint_write_up_to_the_cap() -> None:
    full = spec(base_model=MINI, mode="full", resources={"gpu_profile": "80gb"})
    placed = place(full)
    write_s = placed.plan.checkpoint_write_s
    assert 50 < write_s < 60 and placed.termination_grace_s == math.ceil(write_s * 1.25) + 30
    slow = place(full, write_mb_per_s=20)
    assert slow.termination_grace_s == 900 and not slow.checkpoint_covered


def test_publish_merge_gets_memory_for_the_bf16_base() -> None:
    merged = place(spec(base_model=MINI, publish={"merge": True}))
    assert merged.publish_memory_gib == math.ceil((2 * 4_676_271_104 / 2**30 + 2.02) * 1.2)
    assert place(spec(base_model=MINI)).publish_memory_gib is None


def test_a_model_this_process_cannot_read_is_left_unplanned() -> None:
    placed = place(spec(base_model="/models/not-here", resources={"gpu_profile": "48gb"}))
    assert placed.plan is None and placed.train_memory_gib is None
    assert placed.gpu_product == "NVIDIA-L40S" and placed.termination_grace_s is None


def test_submit_checks_local_runs_strictly_and_leaves_cluster_profiles_to_the_controller(
        ) -> None:
    custom = spec(base_model=MINI, resources={"gpu_profile": "a100-40gb"})
    assert refuse_unless_fits(custom, local=False) is None
    with pytest.raises(UnknownProfile):
        refuse_unless_fits(custom, local=True)
    tiny_cpu = refuse_unless_fits(spec(base_model="tiny-random", resources={"gpus": 0}),
                                  local=True)
    assert tiny_cpu is not None and tiny_cpu.fits and tiny_cpu.host_limit_gib > 1
    with pytest.raises(DoesNotFit, match="FSDP"):
        refuse_unless_fits(spec(base_model=SMALL, mode="full"), local=False)
