"""Load Voxtral and its processor — by Hub id, local folder, or the `tiny-random` smoke preset.

Real and test models take the same path: `load()` resolves the name to something
`from_pretrained` understands and loads model + processor from it. The preset is simply a
checkpoint folder that is built once (randomly initialised, fixed seed, real offline processor)
under `$VOXTUNE_HOME/models/` and then loaded like any other.

    model, processor = load("mistralai/Voxtral-Mini-3B-2507", dtype=torch.bfloat16)
    model, processor = load("tiny-random")       # 30-s audio window, as the real model
    model, processor = load("tiny-random-4s")    # 4-s window: ~10x cheaper steps on CPU
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import (
    PreTrainedConfig,
    VoxtralConfig,
    VoxtralForConditionalGeneration,
    VoxtralProcessor,
    WhisperFeatureExtractor,
)

from voxtune.errors import UserError
from voxtune.spec import Settings

MODEL_TYPE = "voxtral"
SMOKE_MARKER = "voxtune_smoke_model"  # config key: cards and logs label such models "smoke test"
TINY_PRESET = re.compile(r"^tiny-random(?:-(\d+)s)?$")
TINY_RECIPE = 1  # bump whenever build_tiny_random changes, so cached copies are rebuilt
TINY_SEED = 0

# What Voxtral's audio front end is fixed to (tekken.json "audio" block, Whisper features).
SAMPLING_RATE = 16_000
FRAME_RATE = 12.5  # audio tokens per second after the projector
MEL_BINS = 128
HOP_LENGTH = 160
WINDOW_SIZE = 400
FULL_WINDOW_SECONDS = 30

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


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 arithmetic instructions (AVX512-BF16 or AMX-BF16).

    Without them PyTorch emulates bf16 (≈5× slower than fp32 for the upstream recipe); with
    avx512_bf16 (AMD EPYC here) a tiny-model step took about as long as in fp32. Linux only
    (reads /proc/cpuinfo); elsewhere False, i.e. fp32.
    """
    try:
        flags = set(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def pick_dtype(precision: str, device: str | torch.device) -> torch.dtype:
    """Compute dtype for `TrainingSpec.precision` on `device`.

    auto = bf16 where the hardware does it natively (CUDA with bf16, CPUs with bf16
    instructions), else fp16 on GPUs and fp32 on CPUs. An explicit choice the hardware cannot
    run is a UserError. Meant for mixed precision (Trainer's bf16/fp16 flags, autocast); pure
    bf16 weights lose small updates.
    """
    kind = torch.device(device).type
    cuda_bf16 = kind == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    if precision == "auto":
        if kind == "cuda":
            return torch.bfloat16 if cuda_bf16 else torch.float16
        return torch.bfloat16 if kind == "cpu" and cpu_has_native_bf16() else torch.float32
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        if kind == "cuda" and not cuda_bf16:
            raise UserError("training.precision: bf16 is not supported by this GPU "
                            f"({torch.cuda.get_device_name(device)}); use fp16 or auto")
        return torch.bfloat16
    if precision == "fp16":
        if kind != "cuda":
            raise UserError(f"training.precision: fp16 needs a CUDA GPU, this is {kind}; "
                            "use fp32 or auto")
        return torch.float16
    raise UserError(f"training.precision: {precision!r} is not one of auto, bf16, fp16, fp32")


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
    """A ~0.5 M-parameter Voxtral whose shapes match `tiny_tekken(window_seconds)`."""
    # The encoder's conv stem halves the mel frames (100/s), so it has 50 positions per second;
    # intermediate = 4 × hidden makes the projector stack 4 positions into one audio token.
    config = VoxtralConfig(
        audio_config={"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
                      "num_attention_heads": 4, "num_mel_bins": MEL_BINS,
                      "max_source_positions": window_seconds * 50},
        text_config={"vocab_size": TINY_BPE_RANKS + TINY_SPECIAL_TOKENS, "hidden_size": 64,
                     "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "head_dim": 16,
                     "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 11},
        audio_token_id=AUDIO_TOKEN_ID,
    )
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


# --- loading ----------------------------------------------------------------------------------


def resolve(model: str) -> str:
    """Turn a model name into what `from_pretrained` takes: a local folder or a Hub id."""
    window = tiny_preset_window(model)
    if window is not None:
        return str(ensure_tiny_random(window))
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path)
    # Hub ids are `name` or `owner/name`; anything else was meant as a path.
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise UserError(f"{model}: no such model folder (give a checkpoint folder, a Hub id "
                        "such as mistralai/Voxtral-Mini-3B-2507, or tiny-random)")
    return model


def unavailable(source: str, error: Exception) -> UserError:
    """The error for a checkpoint that cannot be read, saying why in the user's terms."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if Path(source).is_dir():
        return UserError(f"{source}: not a complete Hugging Face checkpoint folder ({reason})")
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return UserError(
            f"{source} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
            "offline mode is on (HF_HUB_OFFLINE=1): download it where there is network "
            f"(`hf download {source}`) into that cache, or pass a local checkpoint folder")
    return UserError(
        f"cannot fetch {source} from the Hugging Face Hub ({reason}): check the id, the "
        "network, and HF_TOKEN for gated models; or pass a local checkpoint folder "
        "(without network, HF_HUB_OFFLINE=1 skips the retries)")


def check_voxtral(source: str) -> None:
    """Refuse checkpoints that are incomplete or not Voxtral before loading any weights."""
    folder = Path(source)
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise UserError(f"{source}: no config.json, so not a Hugging Face checkpoint folder "
                        "(one written by save_pretrained)")
    try:
        config, _ = PreTrainedConfig.get_config_dict(source)
    except OSError as error:
        raise unavailable(source, error) from None
    model_type = config.get("model_type")
    if model_type != MODEL_TYPE:
        raise UserError(f"{source} is not a Voxtral checkpoint (config model_type {model_type!r}, "
                        f"expected {MODEL_TYPE!r}); voxtune fine-tunes Voxtral models such as "
                        "mistralai/Voxtral-Mini-3B-2507")
    if folder.is_dir() and not (folder / "tekken.json").is_file():
        raise UserError(f"{source}: no tekken.json (Voxtral's tokenizer); save the processor "
                        "next to the weights, or copy it from the base model")


def audio_window_seconds(processor: VoxtralProcessor) -> float:
    """The audio window (seconds per encoder chunk) the processor's feature extractor uses."""
    extractor = processor.feature_extractor
    return extractor.n_samples / extractor.sampling_rate


def align_audio_window(model: VoxtralForConditionalGeneration,
                       processor: VoxtralProcessor) -> None:
    """Make the processor chunk audio like its feature extractor, and check all three agree.

    VoxtralProcessor pads and splits mel features with class-level defaults for a 30-s window
    (480000 samples, 3000 frames) instead of asking its feature extractor, so a checkpoint
    with a shorter window needs them set from the extractor. For 30-s models this changes
    nothing. The tokenizer (number of [AUDIO] tokens) and the encoder (fixed input length) must
    agree with the extractor, or every batch would fail deep inside the model.
    """
    extractor = processor.feature_extractor
    processor.audio_kwargs = {**type(processor).audio_kwargs,
                              "pad_to_multiple_of": extractor.n_samples,
                              "max_source_positions": extractor.nb_max_frames}
    encoder = model.model.audio_tower
    encoder_frames = (model.config.audio_config.max_source_positions
                      * encoder.conv1.stride[0] * encoder.conv2.stride[0])
    tokenizer_audio = processor.tokenizer.tokenizer.instruct_tokenizer.audio_encoder.audio_config
    window = audio_window_seconds(processor)
    if encoder_frames != extractor.nb_max_frames or tokenizer_audio.chunk_length_s != window:
        raise UserError(
            f"{model.name_or_path}: model and processor disagree on the audio window: encoder "
            f"{encoder_frames} mel frames, feature extractor {extractor.nb_max_frames} frames "
            f"({window:g} s), tokenizer {tokenizer_audio.chunk_length_s} s")


def load(model: str, dtype: torch.dtype | None = None
         ) -> tuple[VoxtralForConditionalGeneration, VoxtralProcessor]:
    """Load a Voxtral model and its processor by Hub id, local folder or tiny preset name.

    `dtype` None keeps the checkpoint's own dtype (bf16 for Mistral's releases, fp32 for the
    tiny preset). Raises UserError for anything the user can fix.
    """
    require_audio_stack()
    source = resolve(model)
    check_voxtral(source)
    try:
        processor = VoxtralProcessor.from_pretrained(source)
        loaded = VoxtralForConditionalGeneration.from_pretrained(source, dtype=dtype or "auto")
    except OSError as error:
        raise unavailable(source, error) from None
    align_audio_window(loaded, processor)
    return loaded, processor
