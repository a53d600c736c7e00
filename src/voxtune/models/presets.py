"""The `tiny-random` smoke-test Voxtral: a randomly initialised checkpoint built offline.

The preset is simply a checkpoint folder that is built once (randomly initialised, fixed seed,
real offline processor) under `$VOXTUNE_HOME/models/` and then loaded like any other
(`voxtune.models.load`). Its geometry is `voxtune/plan/presets/tiny-random.json`, which the
resource planner reads too, so the numbers have one owner.

    ensure_tiny_random()      # tiny-random: 30-s audio window, as the real model
    ensure_tiny_random(4)     # tiny-random-4s: ~10x cheaper steps on CPU
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import (
    VoxtralConfig,
    VoxtralForConditionalGeneration,
    VoxtralProcessor,
    WhisperFeatureExtractor,
)

from voxtune.errors import UserError
from voxtune.plan.geometry import FULL_WINDOW_SECONDS, TINY_PRESET, load_config
from voxtune.spec import Settings

SMOKE_MARKER = "voxtune_smoke_model"  # config key: cards and logs label such models "smoke test"
TINY_RECIPE = 1  # bump whenever build_tiny_random changes, so cached copies are rebuilt
TINY_SEED = 0

# What Voxtral's audio front end is fixed to (tekken.json "audio" block, Whisper features).
SAMPLING_RATE = 16_000
FRAME_RATE = 12.5  # audio tokens per second after the projector
MEL_BINS = 128
HOP_LENGTH = 160
WINDOW_SIZE = 400

# Voxtral's named special tokens at their real ranks (0-19 as mistral-common's pre-v7 list,
# [ARGS]/[CALL_ID] as in v11 files, the audio ones as in Voxtral-Mini-3B-2507). Other ranks
# below TINY_SPECIAL_TOKENS get mistral-common's `<SPECIAL_n>` filler names.
# VoxtralProcessor hard-codes audio_token_id = 24, so these ranks are not a free choice.
VOXTRAL_SPECIAL_TOKENS = {
    0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]",
    5: "[AVAILABLE_TOOLS]", 6: "[/AVAILABLE_TOOLS]", 7: "[TOOL_RESULTS]", 8: "[/TOOL_RESULTS]",
    9: "[TOOL_CALLS]", 10: "[IMG]", 11: "<pad>", 12: "[IMG_BREAK]", 13: "[IMG_END]",
    14: "[PREFIX]", 15: "[MIDDLE]", 16: "[SUFFIX]", 17: "[SYSTEM_PROMPT]", 18: "[/SYSTEM_PROMPT]",
    19: "[TOOL_CONTENT]", 24: "[AUDIO]", 25: "[BEGIN_AUDIO]", 32: "[ARGS]", 33: "[CALL_ID]",
    34: "[TRANSCRIBE]",
}
AUDIO_TOKEN_ID = 24
TINY_BPE_RANKS = 1024  # the first 256 ranks are single bytes, so any text still encodes
TINY_SPECIAL_TOKENS = 100


# --- environment checks -----------------------------------------------------------------------


def require_audio_stack() -> None:
    """Fail clearly when `mistral-common[audio]` (Voxtral's tokenizer + audio I/O) is missing."""
    missing = []
    for module in ("mistral_common", "soundfile", "soxr"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise UserError(
            f"Voxtral's processor needs mistral-common[audio] (missing: {', '.join(missing)}); "
            "install it with: pip install 'mistral-common[audio]' (or 'voxtune[train]')")


# --- the tiny-random preset -------------------------------------------------------------------


def tiny_preset_window(name: str) -> int | None:
    """The audio window in seconds if `name` is a tiny preset (`tiny-random[-<N>s]`), else None."""
    match = TINY_PRESET.match(name)
    if match is None:
        return None
    return int(match.group(1) or FULL_WINDOW_SECONDS)


def check_window(seconds: int) -> None:
    """A window must hold a whole number of audio tokens (80 ms each) and of 2-frame encoder
    positions, and no more than the real model's 30 s: i.e. an even number of seconds, 2–30."""
    if not (isinstance(seconds, int) and 2 <= seconds <= FULL_WINDOW_SECONDS and seconds % 2 == 0):
        raise UserError(f"tiny-random-{seconds}s: the audio window must be an even number of "
                        f"seconds from 2 to {FULL_WINDOW_SECONDS}, e.g. tiny-random-4s")


def tiny_tekken(window_seconds: int = FULL_WINDOW_SECONDS) -> dict[str, Any]:
    """A small Voxtral-style tekken.json derived from the one mistral-common bundles.

    The bundled file is version v3 without special tokens or an audio block; Voxtral needs v11
    special tokens and the audio section, so we keep its first BPE ranks and add both.
    """
    import mistral_common

    bundled = Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"
    source = json.loads(bundled.read_text(encoding="utf-8"))
    special_tokens = [
        {"rank": rank, "is_control": True,
         "token_str": VOXTRAL_SPECIAL_TOKENS.get(rank, f"<SPECIAL_{rank}>")}
        for rank in range(TINY_SPECIAL_TOKENS)
    ]
    return {
        "config": {
            **source["config"],
            "num_vocab_tokens": TINY_BPE_RANKS,
            "default_vocab_size": TINY_BPE_RANKS + TINY_SPECIAL_TOKENS,
            "default_num_special_tokens": TINY_SPECIAL_TOKENS,
            "version": "v11",
        },
        "vocab": source["vocab"][:TINY_BPE_RANKS],
        "special_tokens": special_tokens,
        "audio": {
            "sampling_rate": SAMPLING_RATE,
            "frame_rate": FRAME_RATE,
            "chunk_length_s": window_seconds,
            "audio_encoding_config": {"num_mel_bins": MEL_BINS, "hop_length": HOP_LENGTH,
                                      "window_size": WINDOW_SIZE},
        },
    }


def tiny_config(window_seconds: int = FULL_WINDOW_SECONDS) -> VoxtralConfig:
    """A ~0.5 M-parameter Voxtral whose shapes match `tiny_tekken(window_seconds)`.

    The shapes come from plan/presets/tiny-random.json (with max_source_positions for this
    window); the JSON's vocabulary and bos/eos/pad ids are those of `tiny_tekken`.
    """
    config = {key: value for key, value in load_config(f"tiny-random-{window_seconds}s").items()
              if not key.startswith("_") and key != "model_type"}
    config = VoxtralConfig(**config)
    setattr(config, SMOKE_MARKER, True)
    return config


def build_tiny_random(output: Path, window_seconds: int = FULL_WINDOW_SECONDS) -> None:
    """Write a randomly initialised tiny Voxtral checkpoint (weights + processor) to `output`.

    Deterministic: the same recipe and seed give the same weights, without touching the
    caller's random state. Needs no network.
    """
    from transformers.tokenization_mistral_common import MistralCommonBackend

    require_audio_stack()
    check_window(window_seconds)
    output.mkdir(parents=True, exist_ok=True)
    # The tokenizer is read from a file, so write it once aside, then let the processor save
    # its own copy next to the weights.
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "tekken.json").write_text(json.dumps(tiny_tekken(window_seconds)))
        tokenizer = MistralCommonBackend.from_pretrained(scratch)
        feature_extractor = WhisperFeatureExtractor(
            feature_size=MEL_BINS, sampling_rate=SAMPLING_RATE, hop_length=HOP_LENGTH,
            chunk_length=window_seconds, n_fft=WINDOW_SIZE)
        processor = VoxtralProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
        processor.save_pretrained(output)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = VoxtralForConditionalGeneration(tiny_config(window_seconds))
    model.save_pretrained(output)


def tiny_random_dir(window_seconds: int = FULL_WINDOW_SECONDS) -> Path:
    """The preset's folder: `$VOXTUNE_HOME/models/tiny-random-<N>s-r<recipe>`."""
    return Settings().home / "models" / f"tiny-random-{window_seconds}s-r{TINY_RECIPE}"


def ensure_tiny_random(window_seconds: int = FULL_WINDOW_SECONDS) -> Path:
    """The preset's checkpoint folder, built on first use.

    Built in a temporary folder beside it and renamed into place, so a killed build or two
    processes building at once never leave a half-written checkpoint behind.
    """
    check_window(window_seconds)
    target = tiny_random_dir(window_seconds)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build_tiny_random(scratch, window_seconds)
        scratch.chmod(0o755)  # mkdtemp's 0700 would hide it from other users of a shared home
        os.rename(scratch, target)
    except OSError:
        if not target.is_dir():  # not "another process finished first"
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def is_smoke_model(model: Any) -> bool:
    """True for models built by the tiny-random preset (or fine-tuned from one).

    Accepts a model or its config.
    """
    config = getattr(model, "config", model)
    return bool(getattr(config, SMOKE_MARKER, False))
