"""Mistral's consolidated layout (what vLLM loads), written from our transformers checkpoints.

Checked two ways without vLLM: a tiny random Voxtral goes transformers → consolidated → back
through transformers' own converter mapping (tests/data/transformers_voxtral_converter.json,
read from its source) and transformers' loader, and must come back tensor for tensor; and the
full-size Mini and Small are converted on the `meta` device, where every weight must get a
Mistral name, none twice, with the shape params.json implies.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import VoxtralConfig, VoxtralForConditionalGeneration
from transformers.models.whisper.modeling_whisper import sinusoids

from voxtune.models.presets import build_tiny_random
from voxtune.plan.geometry import load_config
from voxtune.publish.consolidated import (
    CONSOLIDATED,
    CONSOLIDATED_INDEX,
    GROUP_BYTES,
    PARAMS,
    POSITIONS,
    NotConvertible,
    converter,
    group_tensors,
    mistral_name,
    params_from_config,
    write_consolidated,
)

CONVERTER = json.loads((Path(__file__).parents[1] / "data" /
                        "transformers_voxtral_converter.json").read_text(encoding="utf-8"))
WHISPER_FEATURES = {"sampling_rate": 16000, "feature_size": 128, "hop_length": 160,
                    "n_fft": 400, "chunk_length": 30}


def hf_name(name: str) -> str:
    """transformers' converter: the first pattern that matches renames (re.subn, as it does)."""
    for pattern, replacement in CONVERTER["state_dict_mapping"]:
        renamed, count = re.subn(pattern, replacement, name)
        if count:
            return renamed
    raise AssertionError(f"the converter maps no {name}")


def permute_for_rope(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """The converter's Mistral → transformers rotary order."""
    rows, columns = tensor.shape
    return tensor.view(heads, rows // heads // 2, 2, columns).transpose(1, 2).reshape(rows, columns)


def back_to_transformers(tensors: dict[str, torch.Tensor], params: dict[str, Any]
                         ) -> dict[str, torch.Tensor]:
    """What the converter's convert_state_dict + write_model make of a consolidated file."""
    back = {}
    for name, tensor in tensors.items():
        target = hf_name(name)
        if "audio_tower" not in target and "q_proj" in target:
            tensor = permute_for_rope(tensor, params["n_heads"])
        elif "audio_tower" not in target and "k_proj" in target:
            tensor = permute_for_rope(tensor, params["n_kv_heads"])
        back[target] = tensor
    encoder = params["multimodal"]["whisper_model_args"]["encoder_args"]
    back[POSITIONS] = sinusoids(encoder["max_source_positions"], encoder["dim"])
    return back


def config_from_params(params: dict[str, Any], original: dict[str, Any]) -> dict[str, Any]:
    """The converter's convert_config key mapping, applied to our params.json."""
    encoder = params["multimodal"]["whisper_model_args"]["encoder_args"]
    config = json.loads(json.dumps(original))
    for key, source in CONVERTER["text_config"].items():
        config["text_config"][key] = params[source]
    config["text_config"]["rope_parameters"]["rope_theta"] = config["text_config"].pop(
        "rope_theta")
    for key, source in CONVERTER["audio_config"].items():
        config["audio_config"][key] = encoder[source]
    # the converter keeps Whisper's 1500; vLLM reads params.json's, so it must say the truth
    config["audio_config"]["max_source_positions"] = encoder["max_source_positions"]
    return config


@pytest.fixture(scope="module")
def sinusoidal_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset with the positional table a real Voxtral has (Whisper's sinusoids)."""
    folder = tmp_path_factory.mktemp("tiny")
    build_tiny_random(folder, 4)
    tensors = load_file(folder / "model.safetensors")
    tensors[POSITIONS] = sinusoids(*tensors[POSITIONS].shape)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_a_tiny_voxtral_comes_back_identical_through_transformers_converter(
        sinusoidal_tiny: Path, tmp_path: Path) -> None:
    # ≈2.2 MB of fp32 weights in groups of 512 KiB: sharded, as Mini and Small are
    written = write_consolidated(sinusoidal_tiny, group_bytes=2**19)
    shards = sorted(path.name for path in sinusoidal_tiny.glob("consolidated-*.safetensors"))
    assert written == {"files": [PARAMS, *shards, CONSOLIDATED_INDEX], "positions_match": True}
    assert len(shards) == 4 and shards[0] == "consolidated-00001-of-00004.safetensors"
    params = json.loads((sinusoidal_tiny / PARAMS).read_text())
    assert params["multimodal"]["whisper_model_args"]["downsample_args"] == {
        "downsample_factor": 4}
    consolidated = {name: tensor for shard in shards
                    for name, tensor in load_file(sinusoidal_tiny / shard).items()}
    index = json.loads((sinusoidal_tiny / CONSOLIDATED_INDEX).read_text())["weight_map"]
    assert set(index) == set(consolidated) and set(index.values()) == set(shards)
    assert not any(name.startswith(("audio_tower", "language_model", "multi_modal"))
                   for name in consolidated)

    back = tmp_path / "back"
    back.mkdir()
    save_file(back_to_transformers(consolidated, params), back / "model.safetensors",
              metadata={"format": "pt"})
    original_config = json.loads((sinusoidal_tiny / "config.json").read_text())
    config = config_from_params(params, original_config)
    assert config == original_config  # every shape the converter reads, as it was
    (back / "config.json").write_text(json.dumps(config))
    reloaded, info = VoxtralForConditionalGeneration.from_pretrained(back,
                                                                     output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    original = VoxtralForConditionalGeneration.from_pretrained(sinusoidal_tiny).state_dict()
    again = reloaded.state_dict()
    assert set(again) == set(original)
    different = [name for name in original if not torch.equal(original[name], again[name])]
    assert different == []


def test_a_positional_table_vllm_would_not_compute_is_reported(tmp_path: Path) -> None:
    build_tiny_random(tmp_path, 4)  # the smoke-test preset's table is random
    assert write_consolidated(tmp_path) == {"files": [PARAMS, CONSOLIDATED],
                                            "positions_match": False}


def test_what_has_no_place_in_mistrals_layout_is_refused() -> None:
    with pytest.raises(NotConvertible, match="lora_A"):
        mistral_name("language_model.model.layers.0.self_attn.q_proj.lora_A.weight")
    assert mistral_name(POSITIONS) is None
    assert mistral_name("model.language_model.layers.3.mlp.up_proj.weight") == \
        "layers.3.feed_forward.w3.weight"  # transformers 5's run-time names too


def expected_shapes(params: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every tensor of a consolidated Voxtral and its shape, from params.json alone."""
    dim, head, vocab = params["dim"], params["head_dim"], params["vocab_size"]
    encoder = params["multimodal"]["whisper_model_args"]["encoder_args"]
    factor = params["multimodal"]["whisper_model_args"]["downsample_args"]["downsample_factor"]
    width, mels = encoder["dim"], encoder["audio_encoding_args"]["num_mel_bins"]
    shapes: dict[str, tuple[int, ...]] = {
        "output.weight": (vocab, dim), "norm.weight": (dim,),
        "mm_whisper_embeddings.tok_embeddings.weight": (vocab, dim),
        "mm_whisper_embeddings.audio_language_projection.0.weight": (dim, width * factor),
        "mm_whisper_embeddings.audio_language_projection.2.weight": (dim, dim)}
    for layer in range(params["n_layers"]):
        at = f"layers.{layer}."
        shapes |= {at + "attention_norm.weight": (dim,), at + "ffn_norm.weight": (dim,),
                   at + "attention.wq.weight": (params["n_heads"] * head, dim),
                   at + "attention.wk.weight": (params["n_kv_heads"] * head, dim),
                   at + "attention.wv.weight": (params["n_kv_heads"] * head, dim),
                   at + "attention.wo.weight": (dim, params["n_heads"] * head),
                   at + "feed_forward.w1.weight": (params["hidden_dim"], dim),
                   at + "feed_forward.w2.weight": (dim, params["hidden_dim"]),
                   at + "feed_forward.w3.weight": (params["hidden_dim"], dim)}
    stem = "mm_whisper_embeddings.whisper_encoder."
    shapes |= {stem + "conv_layers.0.weight": (width, mels, 3),
               stem + "conv_layers.1.weight": (width, width, 3)}
    shapes |= {stem + name: (width,) for name in (
        "conv_layers.0.bias", "conv_layers.1.bias", "transformer.norm.weight",
        "transformer.norm.bias")}
    attention = encoder["n_heads"] * encoder["head_dim"]
    for layer in range(encoder["n_layers"]):
        at = f"{stem}transformer.layers.{layer}."
        shapes |= {at + "attention.wq.weight": (attention, width),
                   at + "attention.wq.bias": (attention,),
                   at + "attention.wk.weight": (attention, width),  # Whisper's k has no bias
                   at + "attention.wv.weight": (attention, width),
                   at + "attention.wv.bias": (attention,),
                   at + "attention.wo.weight": (width, attention),
                   at + "attention.wo.bias": (width,),
                   at + "feed_forward.w1.weight": (encoder["hidden_dim"], width),
                   at + "feed_forward.w1.bias": (encoder["hidden_dim"],),
                   at + "feed_forward.w2.weight": (width, encoder["hidden_dim"]),
                   at + "feed_forward.w2.bias": (width,)}
        shapes |= {at + f"{norm}.{part}": (width,) for norm in ("attention_norm", "ffn_norm")
                   for part in ("weight", "bias")}
    return shapes


@pytest.mark.parametrize(("model", "shards"), [("mistralai/Voxtral-Mini-3B-2507", 5),
                                               ("mistralai/Voxtral-Small-24B-2507", 26)])
def test_every_full_size_weight_gets_the_name_and_shape_params_json_implies(
        model: str, shards: int) -> None:
    config = {key: value for key, value in load_config(model).items() if not key.startswith("_")}
    with torch.device("meta"):
        built = VoxtralForConditionalGeneration(VoxtralConfig(**config))
    params = params_from_config(built.config.to_dict(), WHISPER_FEATURES)
    convert = converter(params)
    converted: dict[str, tuple[int, ...]] = {}
    skipped = []
    for name, tensor in built.state_dict().items():
        done = convert(name, tensor)
        if done is None:
            skipped.append(name)
            continue
        assert done[0] not in converted, f"{name} and another tensor both became {done[0]}"
        converted[done[0]] = tuple(done[1].shape)
    assert skipped == ["model.audio_tower.embed_positions.weight"]
    assert converted == expected_shapes(params)
    # converted a group at a time (bf16, as published), in as many shards as the module says
    sizes = [(Path("model.safetensors"), name, tensor.numel() * 2)
             for name, tensor in built.state_dict().items()]
    assert len(group_tensors(sizes, GROUP_BYTES)) == shards
    text = config["text_config"]
    assert (params["dim"], params["n_layers"], params["n_kv_heads"], params["hidden_dim"]) == (
        text["hidden_size"], text["num_hidden_layers"], text["num_key_value_heads"],
        text["intermediate_size"])
