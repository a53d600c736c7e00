"""A Voxtral model's shapes from its config alone, and its parameter counts by arithmetic.

No torch here: the controller and the UI plan runs too, and their images carry no torch. The
counts are exact (tests compare them with the same config built on the `meta` device).

The two published Voxtral configurations ship in `presets/`, so planning them needs no network;
any other base model is planned from a `config.json` in its local folder or in the Hub cache.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxtune.errors import UserError

PRESETS = Path(__file__).with_name("presets")
TINY_PRESET = re.compile(r"^tiny-random(?:-(\d+)s)?$")
ENCODER_POSITIONS_PER_SECOND = 50  # the conv stem halves Whisper's 100 mel frames per second
FULL_WINDOW_SECONDS = 30


class UnknownModel(UserError):
    """No config for this base model here: it cannot be planned on this machine (a model on a
    volume this process does not mount, or not in its Hub cache)."""


@dataclass(frozen=True)
class Geometry:
    """The shape-defining numbers of a VoxtralForConditionalGeneration."""

    # audio encoder (Whisper-style)
    audio_hidden: int
    audio_intermediate: int
    audio_layers: int
    audio_heads: int
    mel_bins: int
    audio_positions: int
    # language model (Llama-style) and head
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_head: bool = False

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Geometry:
        audio, text = config.get("audio_config") or {}, config.get("text_config") or {}
        try:
            hidden, heads = int(text["hidden_size"]), int(text["num_attention_heads"])
            return cls(
                audio_hidden=int(audio["hidden_size"]),
                audio_intermediate=int(audio["intermediate_size"]),
                audio_layers=int(audio["num_hidden_layers"]),
                audio_heads=int(audio["num_attention_heads"]),
                mel_bins=int(audio.get("num_mel_bins", 128)),
                audio_positions=int(audio.get("max_source_positions", 1500)),
                hidden=hidden, intermediate=int(text["intermediate_size"]),
                layers=int(text["num_hidden_layers"]), heads=heads,
                kv_heads=int(text.get("num_key_value_heads") or heads),
                head_dim=int(text.get("head_dim") or hidden // heads),
                vocab=int(text["vocab_size"]),
                tied_head=bool(text.get("tie_word_embeddings", False)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise UserError(f"not a Voxtral config (audio_config/text_config): missing or bad "
                            f"{error}") from None

    # --- parameters --------------------------------------------------------------------------

    @property
    def encoder_layer_parameters(self) -> int:
        h, i = self.audio_hidden, self.audio_intermediate
        attention = 4 * h * h + 3 * h  # q, v and out have a bias; k has none (Whisper)
        return attention + (h * i + i) + (i * h + h) + 2 * (2 * h)  # fc1, fc2, two LayerNorms

    @property
    def encoder_parameters(self) -> int:
        h = self.audio_hidden
        stem = (self.mel_bins * h * 3 + h) + (h * h * 3 + h)  # two 3-tap convolutions
        return stem + self.audio_positions * h + self.audio_layers \
            * self.encoder_layer_parameters + 2 * h

    @property
    def projector_parameters(self) -> int:
        # the encoder's frames are stacked 4 at a time: audio_intermediate = 4 × audio_hidden
        return self.audio_intermediate * self.hidden + self.hidden * self.hidden

    @property
    def attention_projections(self) -> tuple[tuple[int, int], ...]:
        """(in, out) features of q, k, v, o in one decoder layer."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return (self.hidden, q), (self.hidden, kv), (self.hidden, kv), (q, self.hidden)

    @property
    def mlp_projections(self) -> tuple[tuple[int, int], ...]:
        """(in, out) features of gate, up, down in one decoder layer."""
        h, i = self.hidden, self.intermediate
        return (h, i), (h, i), (i, h)

    @property
    def decoder_linear_parameters(self) -> int:
        """The weights of one decoder layer's linear projections (what QLoRA quantizes)."""
        return sum(a * b for a, b in self.attention_projections + self.mlp_projections)

    @property
    def decoder_layer_parameters(self) -> int:
        return self.decoder_linear_parameters + 2 * self.hidden  # two RMSNorms

    @property
    def embedding_parameters(self) -> int:
        return self.vocab * self.hidden

    @property
    def language_model_parameters(self) -> int:
        """Embeddings, decoder layers and the final norm (the head is counted apart)."""
        return self.embedding_parameters + self.layers * self.decoder_layer_parameters \
            + self.hidden

    @property
    def head_parameters(self) -> int:
        return 0 if self.tied_head else self.vocab * self.hidden

    @property
    def total_parameters(self) -> int:
        return (self.encoder_parameters + self.projector_parameters
                + self.language_model_parameters + self.head_parameters)

    def lora_parameters(self, rank: int, mlp: bool) -> int:
        """A and B matrices of every adapted projection (attention, and the MLP if asked)."""
        shapes = self.attention_projections + (self.mlp_projections if mlp else ())
        return self.layers * sum(rank * (a + b) for a, b in shapes)

    def lora_modules(self, mlp: bool) -> int:
        return self.layers * (7 if mlp else 4)


def load_geometry(base_model: str) -> Geometry:
    """The geometry of `base_model`: a shipped preset, a local checkpoint folder, or a Hub id
    whose config.json is already in the local Hub cache. Never downloads anything."""
    return Geometry.from_config(load_config(base_model))


def load_config(base_model: str) -> dict[str, Any]:
    tiny = TINY_PRESET.match(base_model)
    if tiny:
        config = _read(PRESETS / "tiny-random.json")
        seconds = int(tiny.group(1) or FULL_WINDOW_SECONDS)
        config["audio_config"]["max_source_positions"] = seconds * ENCODER_POSITIONS_PER_SECOND
        return config
    preset = PRESETS / f"{base_model.replace('/', '--')}.json"
    if "/" in base_model and preset.is_file():
        return _read(preset)
    folder = Path(base_model).expanduser()
    if (folder / "config.json").is_file():
        return _read(folder / "config.json")
    cached = _hub_cached_config(base_model)
    if cached is not None:
        return _read(cached)
    known = sorted(p.stem.replace("--", "/") for p in PRESETS.glob("*--*.json"))
    raise UnknownModel(f"cannot plan {base_model!r} offline: no shipped preset (known: "
                    f"{', '.join(known)}, tiny-random[-Ns]), no local folder with config.json, "
                    "and no config.json for it in the Hub cache")


def _read(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read the model config: {error}") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: the model config is not a JSON object")
    return config


def _hub_cached_config(repo_id: str) -> Path | None:
    if repo_id.count("/") != 1:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found) if isinstance(found, str) else None
