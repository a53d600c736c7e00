"""Issue 12 at small scale: artifacts in bf16 whatever the CPU (D2), fp16 runs on CPU hosts,
the optimizer that ran recorded (D6), QLoRA's 4-bit base and fp32 trainables on a bf16 base
(D4) through the real train step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.integration.test_train import train
from tests.integration.test_train_holes import NO_TRACKING, prepared_folder, with_env
from tests.train_fixtures import shared_tiny_home  # noqa: F401 (fixture)
from voxtune.models import load as loading
from voxtune.models.merge import export_merged
from voxtune.spec import LoraSpec, RunSpec
from voxtune.train.adapt import apply_lora
from voxtune.train.checkpoints import save_final
from voxtune.train.evaluate import evaluate_folder

pytestmark = pytest.mark.usefixtures("shared_tiny_home")
POSITIONS = "audio_tower.embed_positions"  # Voxtral keeps this table in fp32 itself


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("scale") / "prepared"
    return prepared_folder(folder, ["one two", "three four", "five six"], ["seven eight"])


def adapter_run(folder: Path, precision: str) -> Path:
    """A LoRA run's final/ as the train step writes it, trained (nominally) in `precision`."""
    spec = RunSpec(name="r", base_model="tiny-random-4s", training={"precision": precision})
    model, processor = loading.load(spec.base_model)
    model = apply_lora(model, LoraSpec(projector=True))
    save_final(model, processor, spec, folder / "final")
    return folder


@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_merge_is_bf16_on_a_cpu_without_native_bf16(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path, precision: str) -> None:
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: False)
    run = adapter_run(tmp_path / "run", precision)
    merged = export_merged(str(run), tmp_path / "merged")
    weights = load_file(merged / "model.safetensors")
    assert {t.dtype for name, t in weights.items() if POSITIONS not in name} == {torch.bfloat16}
    model, _ = loading.load(str(merged))
    assert model.dtype == torch.bfloat16


@pytest.mark.parametrize(("native_bf16", "dtype"), [(False, torch.float32),
                                                    (True, torch.bfloat16)])
def test_an_fp16_run_evaluates_on_a_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        prepared: Path, native_bf16: bool,
                                        dtype: torch.dtype) -> None:
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: native_bf16)
    run = adapter_run(tmp_path / "run", "fp16")
    tuned, spec = loading.load_tuned(str(run))
    assert spec.training.precision == "fp16"
    assert tuned.model.get_base_model().model.language_model.embed_tokens.weight.dtype == dtype
    if not native_bf16:  # emulated bf16 generation is slow; fp32 is what this CPU runs
        assert evaluate_folder(str(run), prepared)["clips"] == 1


def test_qlora_with_8bit_adam_trains_and_records_the_optimizer(prepared: Path,
                                                               tmp_path: Path) -> None:
    """bitsandbytes 0.50 runs 4-bit layers and 8-bit AdamW on CPU, so QLoRA runs here."""
    output = tmp_path / "qlora"
    done = train(prepared, output, "--model", "tiny-random-4s", "--max-steps", "2",
                 env=with_env(VOXTUNE_SPEC__MODE="qlora",
                              VOXTUNE_SPEC__TRAINING__OPTIMIZER="adamw_8bit", **NO_TRACKING))
    assert done.returncode == 0, done.stderr[-3000:]
    assert ("optimizer: adamw_8bit (bitsandbytes.optim.adamw.AdamW, 8-bit states)"
            in done.stdout)
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["optimizer"] == "adamw_8bit" and metrics["train_steps"] == 2
    assert "wer" in metrics
    assert (output / "final" / "adapter_model.safetensors").is_file()


def test_bf16_run_trains_an_fp32_projector_and_evaluates_it(prepared: Path,
                                                            tmp_path: Path) -> None:
    """A bf16 base with a trained projector: fp32 trainables meet bf16 activations under
    autocast, in training and in the tuned model's evaluation."""
    output = tmp_path / "bf16"
    done = train(prepared, output, "--model", "tiny-random-4s", "--max-steps", "2",
                 "--precision", "bf16", "--lora-targets", "attention,projector",
                 env=with_env(**NO_TRACKING))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "precision bf16 on cpu" in done.stdout
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["optimizer"] == "adamw_torch" and "wer" in metrics
    adapter = load_file(output / "final" / "adapter_model.safetensors")
    assert any("multi_modal_projector" in name for name in adapter)
    assert {tensor.dtype for tensor in adapter.values()} == {torch.float32}
