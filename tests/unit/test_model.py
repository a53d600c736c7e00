"""Model loading: the tiny-random preset, checkpoints by path, dtype choice, clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig

from tests.train_fixtures import shared_tiny_home, write_clip  # noqa: F401 (fixture)
from voxtune.errors import UserError
from voxtune.models.load import load, pick_dtype
from voxtune.models.presets import (
    build_tiny_random,
    ensure_tiny_random,
    is_smoke_model,
    require_audio_stack,
    tiny_preset_window,
)
from voxtune.train.collator import TrainingCollator, TranscriptionDataset

pytestmark = pytest.mark.usefixtures("shared_tiny_home")


def training_batch(tmp_path: Path, processor, seconds=(1.0, 2.5)) -> dict:
    clips = [write_clip(tmp_path / "prepared", f"clip{i}", length, text, language, seed=i)
             for i, (length, text, language) in enumerate(
                 zip(seconds, ["one two", "three four five"], ["sv", None], strict=False))]
    dataset = TranscriptionDataset(clips, tmp_path / "prepared", processor, tmp_path / "cache")
    return TrainingCollator(processor.tokenizer.pad_token_id)([dataset[0], dataset[1]])


@pytest.mark.slow
def test_tiny_random_builds_and_loads_offline(tmp_path):
    """A fresh process with HF_HUB_OFFLINE=1 and an empty HF cache builds and loads the preset;
    a Hub id it does not have is a clear error, not a traceback or a hang."""
    script = textwrap.dedent("""
        from voxtune.errors import UserError
        from voxtune.models.load import load
        model, processor = load("tiny-random")
        print("loaded", type(model).__name__, type(processor).__name__)
        try:
            load("mistralai/Voxtral-Mini-3B-2507")
        except UserError as error:
            print("error:", error)
    """)
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
                   "VOXTUNE_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "loaded VoxtralForConditionalGeneration VoxtralProcessor" in result.stdout
    assert "error: mistralai/Voxtral-Mini-3B-2507 is not in the local Hugging Face cache" \
        in result.stdout
    assert "HF_HUB_OFFLINE=1" in result.stdout
    assert list((tmp_path / "home" / "models").iterdir()) == [
        tmp_path / "home" / "models" / "tiny-random-30s-r1"]  # no temporary folder left behind


def test_build_is_deterministic_and_leaves_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_random(tmp_path / "a", window_seconds=4)
    assert torch.equal(torch.rand(3), expected_next)
    build_tiny_random(tmp_path / "b", window_seconds=4)
    first = load_file(tmp_path / "a" / "model.safetensors")
    second = load_file(tmp_path / "b" / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_preset_is_built_once_and_labelled_as_smoke_model():
    folder = ensure_tiny_random()
    built = (folder / "model.safetensors").stat().st_mtime_ns
    model, _ = load("tiny-random")
    assert ensure_tiny_random() == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == built
    assert json.loads((folder / "config.json").read_text())["voxtune_smoke_model"] is True
    assert is_smoke_model(model) and is_smoke_model(model.config)
    assert sum(parameter.numel() for parameter in model.parameters()) < 1_000_000


def test_save_and_reload_round_trip(tmp_path):
    model, processor = load("tiny-random-4s")
    model.save_pretrained(tmp_path / "checkpoint")
    processor.save_pretrained(tmp_path / "checkpoint")
    reloaded, reprocessor = load(str(tmp_path / "checkpoint"))
    assert is_smoke_model(reloaded)
    original = model.state_dict()
    assert all(torch.equal(original[name], tensor)
               for name, tensor in reloaded.state_dict().items())
    assert reprocessor.feature_extractor.chunk_length == 4
    audio = torch.zeros(16_000).numpy()
    prompts = [p.apply_transcription_request(language="sv", audio=audio, sampling_rate=16_000,
                                             format="wav", model_id="m")["input_ids"]
               for p in (processor, reprocessor)]
    assert torch.equal(*prompts)


@pytest.mark.parametrize("preset", ["tiny-random", "tiny-random-4s"])
def test_forward_backward_and_generate(tmp_path, preset):
    model, processor = load(preset)
    batch = training_batch(tmp_path, processor)
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)
    assert any(g.abs().sum() > 0 for g in model.model.audio_tower.parameters())

    prompt = processor.apply_transcription_request(
        language="en", audio=torch.zeros(16_000).numpy(), sampling_rate=16_000, format="wav",
        model_id="m")
    generated = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]


def test_short_window_agrees_everywhere(tmp_path):
    """4-s windows: 50 [AUDIO] tokens and 400 mel frames per window, an encoder that takes
    them, and a 6-s clip split into two windows rather than truncated."""
    model, processor = load("tiny-random-4s")
    tokenizer_audio = processor.tokenizer.tokenizer.instruct_tokenizer.audio_encoder.audio_config
    assert tokenizer_audio.chunk_length_s == 4
    assert processor.feature_extractor.nb_max_frames == 400
    assert model.config.audio_config.max_source_positions == 200
    batch = training_batch(tmp_path, processor, seconds=(1.0, 6.0))
    assert batch["input_features"].shape == (3, 128, 400)
    audio_tokens = (batch["input_ids"] == model.config.audio_token_id).sum(dim=1)
    assert audio_tokens.tolist() == [50, 100]
    assert torch.isfinite(model(**batch).loss)


def test_mismatched_window_is_a_clear_error(tmp_path):
    """Weights of a 4-s model with a 30-s processor must fail at load, not deep in a batch."""
    mixed = tmp_path / "mixed"
    _, processor = load("tiny-random")
    processor.save_pretrained(mixed)
    model, _ = load("tiny-random-4s")
    model.save_pretrained(mixed)
    with pytest.raises(UserError, match="disagree on the audio window"):
        load(str(mixed))


@pytest.mark.parametrize("name, message", [
    ("./no/such/folder", "no such model folder"),
    ("tiny-random-3s", "even number of seconds"),
    ("tiny-random-60s", "even number of seconds"),
], ids=["missing-path", "odd-window", "window-over-30s"])
def test_bad_model_names(name, message):
    with pytest.raises(UserError, match=message):
        load(name)


def test_checkpoint_that_is_not_voxtral(tmp_path):
    LlamaConfig(hidden_size=16, num_attention_heads=2, num_hidden_layers=1
                ).save_pretrained(tmp_path)
    with pytest.raises(UserError, match=r"not a Voxtral checkpoint \(config model_type 'llama'"):
        load(str(tmp_path))


def test_folder_without_config(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(UserError, match=r"no config\.json"):
        load(str(tmp_path))


def test_checkpoint_without_tokenizer(tmp_path):
    shutil.copytree(ensure_tiny_random(4), tmp_path, dirs_exist_ok=True)
    (tmp_path / "tekken.json").unlink()
    with pytest.raises(UserError, match=r"no tekken\.json"):
        load(str(tmp_path))


def test_missing_mistral_common_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "mistral_common", None)  # makes `import` fail for real
    with pytest.raises(UserError, match=r"mistral-common\[audio\].*mistral_common"):
        require_audio_stack()


@pytest.mark.parametrize("name, window", [
    ("tiny-random", 30), ("tiny-random-4s", 4), ("tiny-random-12s", 12),
    ("mistralai/Voxtral-Mini-3B-2507", None), ("tiny-randomly", None),
])
def test_tiny_preset_names(name, window):
    assert tiny_preset_window(name) == window


def native_cpu_bf16() -> bool:
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


@pytest.mark.parametrize("precision, expected", [
    ("auto", torch.bfloat16 if native_cpu_bf16() else torch.float32),
    ("fp32", torch.float32),
    ("bf16", torch.bfloat16),
])
def test_pick_dtype_on_cpu(precision, expected):
    assert pick_dtype(precision, "cpu") == expected


@pytest.mark.parametrize("precision, message", [
    ("fp16", "fp16 needs a CUDA GPU"),
    ("fp64", "not one of auto, bf16, fp16, fp32"),
])
def test_pick_dtype_refuses_what_the_cpu_cannot_do(precision, message):
    with pytest.raises(UserError, match=message):
        pick_dtype(precision, torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pick_dtype_on_gpu():
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    assert pick_dtype("auto", "cuda") == (torch.bfloat16 if native else torch.float16)
    assert pick_dtype("fp16", "cuda:0") == torch.float16
