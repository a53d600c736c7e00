"""Mistral's own layout of a Voxtral checkpoint — what vLLM loads — written from the transformers
layout that training produces.

    params.json                         the shapes, in Mistral's names (from config.json and the
                                        processor's feature extractor)
    consolidated.safetensors            the same tensors under Mistral's names; above
    (consolidated-0000i-of-0000n.…      GROUP_BYTES in shards, with the index beside them
     + consolidated.safetensors.index.json)
    tekken.json                         already there: the processor's tokenizer is Mistral's

vLLM's Voxtral reads nothing else: its model class remaps Mistral's tensor names
(`mm_whisper_embeddings.…`, `layers.N.attention.wq`) and its config comes from params.json
(`--config-format mistral --load-format mistral --tokenizer-mode mistral`; docs/operations.md,
*Serving with vLLM*, cites the vLLM source). This is the inverse of transformers'
`convert_voxtral_weights_to_hf.py`: the names mapped back, the language model's q/k rows put
back into Mistral's interleaved rotary order, and the audio encoder's positional table left out
(both loaders compute Whisper's sinusoids themselves). A model whose table is not those
sinusoids — the random smoke-test presets — is converted anyway and `positions_match` says so,
since vLLM would then encode audio differently from transformers.

Pure functions over names, shapes and dicts (tests run them on `meta` tensors at full size);
`write_consolidated` is the one that reads and writes files, a group of tensors at a time, so
converting needs `GROUP_BYTES` of memory, not the model's.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voxtune.errors import UserError

PARAMS = "params.json"
CONSOLIDATED = "consolidated.safetensors"
CONSOLIDATED_INDEX = "consolidated.safetensors.index.json"
POSITIONS = "audio_tower.embed_positions.weight"  # computed by every loader, never stored
# At most this much of the model is in memory while converting: the publish pod's default 8 GiB
# holds it beside the process (Mini gives 5 consolidated shards, Small 26).
GROUP_BYTES = 2 * 2**30
BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I8": 1, "U8": 1,
         "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
ENCODER = "mm_whisper_embeddings.whisper_encoder."
LAYER = r"language_model\.model\.layers\.(\d+)\."
AUDIO_LAYER = r"audio_tower\.layers\.(\d+)\."
PROJECTION = "mm_whisper_embeddings.audio_language_projection.{}.weight"
# transformers' names (the layout save_pretrained writes) → Mistral's, tried in order.
NAMES: tuple[tuple[str, str], ...] = (
    (r"language_model\.lm_head\.weight", "output.weight"),
    (r"language_model\.model\.norm\.weight", "norm.weight"),
    # Mistral keeps the token embeddings inside the audio-text embedding module; vLLM and
    # transformers' converter accept it there and at the top level alike.
    (r"language_model\.model\.embed_tokens\.weight", "mm_whisper_embeddings.tok_embeddings.weight"),
    (LAYER + r"input_layernorm\.weight", r"layers.\1.attention_norm.weight"),
    (LAYER + r"post_attention_layernorm\.weight", r"layers.\1.ffn_norm.weight"),
    (LAYER + r"self_attn\.([qkvo])_proj\.weight", r"layers.\1.attention.w\2.weight"),
    (LAYER + r"mlp\.gate_proj\.weight", r"layers.\1.feed_forward.w1.weight"),
    (LAYER + r"mlp\.down_proj\.weight", r"layers.\1.feed_forward.w2.weight"),
    (LAYER + r"mlp\.up_proj\.weight", r"layers.\1.feed_forward.w3.weight"),
    (r"audio_tower\.conv1\.(weight|bias)", ENCODER + r"conv_layers.0.\1"),
    (r"audio_tower\.conv2\.(weight|bias)", ENCODER + r"conv_layers.1.\1"),
    (r"audio_tower\.layer_norm\.(weight|bias)", ENCODER + r"transformer.norm.\1"),
    (AUDIO_LAYER + r"self_attn\.([qkv])_proj\.(weight|bias)",
     ENCODER + r"transformer.layers.\1.attention.w\2.\3"),
    (AUDIO_LAYER + r"self_attn\.out_proj\.(weight|bias)",
     ENCODER + r"transformer.layers.\1.attention.wo.\2"),
    (AUDIO_LAYER + r"self_attn_layer_norm\.(weight|bias)",
     ENCODER + r"transformer.layers.\1.attention_norm.\2"),
    (AUDIO_LAYER + r"fc([12])\.(weight|bias)",
     ENCODER + r"transformer.layers.\1.feed_forward.w\2.\3"),
    (AUDIO_LAYER + r"final_layer_norm\.(weight|bias)",
     ENCODER + r"transformer.layers.\1.ffn_norm.\2"),
    (r"multi_modal_projector\.linear_1\.weight", PROJECTION.format(0)),  # Linear, GELU, Linear
    (r"multi_modal_projector\.linear_2\.weight", PROJECTION.format(2)),
)
# transformers 5 names modules `model.language_model.…` at run time and writes the older
# `language_model.model.…` on save; both come in here.
RUNTIME_PREFIXES = (("model.language_model.", "language_model.model."),
                    ("lm_head.", "language_model.lm_head."),
                    ("model.audio_tower.", "audio_tower."),
                    ("model.multi_modal_projector.", "multi_modal_projector."))


class NotConvertible(UserError):
    """A tensor or config this module does not know how to write in Mistral's layout (a model
    that is no Voxtral as transformers builds it): publish stops and says which."""


def saved_name(name: str) -> str:
    """A transformers tensor name in the layout save_pretrained writes."""
    for runtime, saved in RUNTIME_PREFIXES:
        if name.startswith(runtime):
            return saved + name[len(runtime):]
    return name


def mistral_name(name: str) -> str | None:
    """Mistral's name for a transformers tensor; None for the positional table (computed by the
    loaders). NotConvertible for anything else this layout has no place for."""
    name = saved_name(name)
    if name == POSITIONS:
        return None
    for pattern, replacement in NAMES:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, replacement, name)
    raise NotConvertible(f"{name}: no place for this tensor in Mistral's Voxtral layout")


def interleave_rotary(weight: Any, heads: int) -> Any:
    """A q/k projection from transformers' rotary order (each head's first half, then its second)
    back to Mistral's (pairs interleaved): the inverse of the converter's `permute_for_rope`."""
    rows, columns = weight.shape
    return (weight.reshape(heads, 2, rows // heads // 2, columns).transpose(1, 2)
            .reshape(rows, columns))


def converter(params: dict[str, Any]) -> Callable[[str, Any], tuple[str, Any] | None]:
    """(transformers name, tensor) → (Mistral name, tensor), or None for a tensor not stored."""
    heads = {"wq": params["n_heads"], "wk": params["n_kv_heads"]}

    def convert(name: str, tensor: Any) -> tuple[str, Any] | None:
        target = mistral_name(name)
        if target is None:
            return None
        parts = target.split(".")
        if parts[0] == "layers" and parts[2] == "attention" and parts[3] in heads:
            tensor = interleave_rotary(tensor, heads[parts[3]])
        return target, tensor

    return convert


def params_from_config(config: dict[str, Any], features: dict[str, Any]) -> dict[str, Any]:
    """params.json from transformers' config.json and the processor's feature extractor: every
    field transformers' converter and vLLM's Mistral config reader use."""
    text, audio = config["text_config"], config["audio_config"]
    text_heads, audio_heads = text["num_attention_heads"], audio["num_attention_heads"]
    downsample, leftover = divmod(audio["intermediate_size"], audio["hidden_size"])
    if leftover:  # the projector reads `downsample` encoder frames per audio token
        raise NotConvertible(f"audio intermediate_size {audio['intermediate_size']} is no "
                             f"multiple of hidden_size {audio['hidden_size']}")
    rope = text.get("rope_parameters") or {}
    params: dict[str, Any] = {
        "dim": text["hidden_size"],
        "n_layers": text["num_hidden_layers"],
        "head_dim": text.get("head_dim") or text["hidden_size"] // text_heads,
        "hidden_dim": text["intermediate_size"],
        "n_heads": text_heads,
        "n_kv_heads": text.get("num_key_value_heads") or text_heads,
        "rope_theta": rope.get("rope_theta", text.get("rope_theta")),
        "norm_eps": text["rms_norm_eps"],
        "vocab_size": text["vocab_size"],
        "max_seq_len": text["max_position_embeddings"],
        "tied_embeddings": bool(text.get("tie_word_embeddings", False)),
        "multimodal": {"whisper_model_args": {
            "encoder_args": {
                "audio_encoding_args": {
                    "sampling_rate": features["sampling_rate"],
                    "num_mel_bins": features["feature_size"],
                    "hop_length": features["hop_length"],
                    "window_size": features["n_fft"],
                    "chunk_length_s": features["chunk_length"],
                },
                "dim": audio["hidden_size"],
                "n_layers": audio["num_hidden_layers"],
                "head_dim": audio["hidden_size"] // audio_heads,
                "hidden_dim": audio["intermediate_size"],
                "n_heads": audio_heads,
                "vocab_size": audio.get("vocab_size", 51866),
                "max_source_positions": audio["max_source_positions"],
            },
            "downsample_args": {"downsample_factor": downsample},
        }},
    }
    if text.get("sliding_window"):
        params["sliding_window"] = text["sliding_window"]
    if params["rope_theta"] is None:
        raise NotConvertible("config.json names no rope_theta for the language model")
    if text.get("attention_bias") or text.get("mlp_bias"):
        raise NotConvertible("Mistral's layout has no biases in the language model")
    return params


def feature_settings(folder: Path) -> dict[str, Any]:
    """The feature extractor's settings, from whichever file the processor saved them in."""
    for name, key in (("processor_config.json", "feature_extractor"),
                      ("preprocessor_config.json", None)):
        path = folder / name
        if path.is_file():
            saved = json.loads(path.read_text(encoding="utf-8"))
            found = saved.get(key) if key else saved
            if found:
                return found
    raise NotConvertible(f"{folder}: no feature extractor settings (processor_config.json)")


def weight_files(folder: Path) -> list[Path]:
    """The transformers shards of `folder`, in order."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()
        return [folder / name for name in sorted(set(names))]
    return [folder / "model.safetensors"]


def group_tensors(sizes: list[tuple[Path, str, int]], limit: int) -> list[list[tuple[Path, str]]]:
    """(file, tensor, bytes) in order → consecutive groups of at most `limit` bytes (a larger
    tensor alone): one consolidated shard each, so converting holds one group in memory."""
    groups: list[list[tuple[Path, str]]] = []
    held = limit
    for path, name, size in sizes:
        if held + size > limit:
            groups.append([])
            held = 0
        groups[-1].append((path, name))
        held += size
    return groups


def consolidated_names(count: int) -> list[str]:
    if count == 1:
        return [CONSOLIDATED]
    return [f"consolidated-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def positions_are_sinusoids(table: Any) -> bool:
    """Whether the encoder's positional table is Whisper's sinusoids, which vLLM computes."""
    import torch
    from transformers.models.whisper.modeling_whisper import sinusoids

    expected = sinusoids(*table.shape).to(table.dtype)
    return bool(torch.allclose(table, expected, atol=1e-2 if table.dtype != torch.float32
                               else 1e-5))


def write_consolidated(folder: Path, group_bytes: int = GROUP_BYTES) -> dict[str, Any]:
    """Write params.json and the consolidated shards beside the transformers weights in
    `folder`; returns {"files": [...], "positions_match": bool}."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    params = params_from_config(config, feature_settings(folder))
    if not (folder / "tekken.json").is_file():
        raise NotConvertible(f"{folder}: no tekken.json (vLLM's Mistral tokenizer reads it)")
    convert = converter(params)
    sizes = []
    for path in weight_files(folder):
        with safe_open(str(path), framework="pt") as opened:
            for name in opened.keys():  # noqa: SIM118 (safe_open is no mapping)
                tensor = opened.get_slice(name)
                sizes.append((path, name, math.prod(tensor.get_shape())
                              * BYTES[tensor.get_dtype()]))
    groups = group_tensors(sizes, group_bytes)
    targets = consolidated_names(len(groups))
    weight_map: dict[str, str] = {}
    positions_match = True
    for group, target in zip(groups, targets, strict=True):
        tensors: dict[str, Any] = {}
        for path in dict.fromkeys(path for path, _ in group):
            with safe_open(str(path), framework="pt") as opened:
                for name in (name for source, name in group if source == path):
                    tensor = opened.get_tensor(name)
                    if saved_name(name) == POSITIONS:
                        positions_match = positions_are_sinusoids(tensor)
                    if (converted := convert(name, tensor)) is not None:
                        tensors[converted[0]] = converted[1].contiguous()
        save_file(tensors, folder / target, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, target))
    if len(targets) > 1:
        (folder / CONSOLIDATED_INDEX).write_text(
            json.dumps({"weight_map": dict(sorted(weight_map.items()))}, indent=2) + "\n",
            encoding="utf-8")
    (folder / PARAMS).write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
    files = [PARAMS, *targets, *([CONSOLIDATED_INDEX] if len(targets) > 1 else [])]
    return {"files": files, "positions_match": positions_match}
