"""Open a Voxtral checkpoint and transcribe speech with it: the code every transcript comes from.

The held-out WER on each model card (`voxtune.train.evaluate`), the export gate of `voxtune
publish`, `voxtune serve` (the UI's Try-it, the in-cluster demo) and the generated Space all
call `transcribe_batch` here (`transcribe` is its one-recording form) with the same TokenLimit,
so the demo transcribes exactly the way the published number was measured. The Space carries
this file, byte for byte, as `voxtune_inference.py` beside its `app.py`, because voxtune
itself is not installed there; so it imports nothing from voxtune and needs only torch,
transformers, peft (for adapters), huggingface_hub, numpy, soundfile and soxr — all imported
inside the functions.

    loaded = load_model("alice/my-voice")          # the Space: adapter or merged/full weights
    text = transcribe(loaded.model, loaded.processor, (48_000, samples), "en",
                      max_new_tokens=TokenLimit()).text  # Gradio's numpy audio works as is

voxtune's own loader (`voxtune.models.load`) resolves model names, presets, run folders and
dtypes, then opens checkpoints with `open_checkpoint` and `open_adapter` here. Loading never
falls back to the base model: if the fine-tuned weights cannot be loaded, `load_model` raises
ModelLoadError and the demo shows that error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLING_RATE = 16_000  # what Voxtral's feature extractor expects
ADAPTER_CONFIG = "adapter_config.json"
# Voxtral Mini's languages; "auto" lets the model detect the language.
LANGUAGES = {"auto": "detect automatically", "en": "English", "es": "Spanish", "fr": "French",
             "pt": "Portuguese", "hi": "Hindi", "de": "German", "nl": "Dutch", "it": "Italian"}


class ModelLoadError(RuntimeError):
    """The fine-tuned model could not be loaded (the message says which and why)."""


class AudioWindowMismatch(ValueError):
    """The model and its processor were saved for different audio windows."""


@dataclass
class LoadedModel:
    model: Any
    processor: Any
    source: str  # the fine-tuned model: Hub id or folder
    base: str | None  # the base an adapter was put on; None for merged or fully tuned weights

    @property
    def description(self) -> str:
        if self.base is None:
            return f"fine-tuned model {self.source}"
        return f"fine-tuned LoRA adapter {self.source} on {self.base}"


# --- opening a checkpoint -----------------------------------------------------------------------


def adapter_config(source: str, revision: str | None = None) -> dict[str, Any] | None:
    """The adapter's config when `source` holds a LoRA adapter, else None (merged/full)."""
    folder = Path(source)
    if folder.is_dir():
        path = folder / ADAPTER_CONFIG
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = hf_hub_download(source, ADAPTER_CONFIG, revision=revision)
    except EntryNotFoundError:
        return None
    return json.loads(Path(path).read_text(encoding="utf-8"))


def align_audio_window(model: Any, processor: Any) -> None:
    """Make the processor chunk audio like its feature extractor, and check all three agree.

    VoxtralProcessor pads and splits mel features with class-level defaults for a 30-s window
    (480000 samples, 3000 frames) instead of asking its feature extractor, so a checkpoint
    with a shorter window needs them set from the extractor. For 30-s models (every real
    Voxtral) this changes nothing. The tokenizer (number of [AUDIO] tokens) and the encoder
    (fixed input length) must agree with the extractor, or every batch would fail deep inside
    the model.
    """
    extractor = processor.feature_extractor
    processor.audio_kwargs = {**type(processor).audio_kwargs,
                              "pad_to_multiple_of": extractor.n_samples,
                              "max_source_positions": extractor.nb_max_frames}
    encoder = model.model.audio_tower
    encoder_frames = (model.config.audio_config.max_source_positions
                      * encoder.conv1.stride[0] * encoder.conv2.stride[0])
    tokenizer_audio = processor.tokenizer.tokenizer.instruct_tokenizer.audio_encoder.audio_config
    window = extractor.n_samples / extractor.sampling_rate
    if encoder_frames != extractor.nb_max_frames or tokenizer_audio.chunk_length_s != window:
        raise AudioWindowMismatch(
            f"{model.name_or_path}: model and processor disagree on the audio window: encoder "
            f"{encoder_frames} mel frames, feature extractor {extractor.nb_max_frames} frames "
            f"({window:g} s), tokenizer {tokenizer_audio.chunk_length_s} s")


def open_checkpoint(source: str, *, dtype: Any = "auto", revision: str | None = None,
                    **loading: Any) -> tuple[Any, Any]:
    """Model and processor from a Hub id or folder holding full or merged weights.

    `dtype` "auto" keeps the checkpoint's own (bf16 for Mistral's releases); `loading` goes to
    `from_pretrained` as it is (the train step's device_map and 4-bit quantization). Raises
    what transformers raises (OSError for a missing or unreadable checkpoint) and
    AudioWindowMismatch.
    """
    from transformers import VoxtralForConditionalGeneration, VoxtralProcessor

    processor = VoxtralProcessor.from_pretrained(source, revision=revision)
    model = VoxtralForConditionalGeneration.from_pretrained(source, revision=revision,
                                                            dtype=dtype, **loading)
    align_audio_window(model, processor)
    return model, processor


def open_adapter(source: str, base: Any, *, revision: str | None = None) -> Any:
    """The LoRA adapter in `source` (Hub id or folder) put on `base`, an opened base model;
    transcribe with the base's processor."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, source, revision=revision)


def load_model(source: str, *, revision: str | None = None,
               device: str | None = None) -> LoadedModel:
    """The Space's loader: a published LoRA adapter on the base its config names, or
    merged/full weights, on `device` (CUDA when there is one) and ready for `transcribe`.

    `source` is a Hub id (private repos read HF_TOKEN from the environment) or a folder.
    """
    try:
        import torch

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        adapter = adapter_config(source, revision)
        base_name = adapter["base_model_name_or_path"] if adapter else None
        if base_name is None:
            model, processor = open_checkpoint(source, revision=revision)
        else:
            base, processor = open_checkpoint(base_name)
            model = open_adapter(source, base, revision=revision)
        model.to(device).eval()
    except Exception as error:  # any failure means: no fine-tuned model, so no transcription
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelLoadError(f"could not load the fine-tuned model {source}: "
                             f"{type(error).__name__}: {reason}") from error
    return LoadedModel(model, processor, source, base_name)


# --- transcription ------------------------------------------------------------------------------

# Tokens a transcript may take per second of audio. Fast English speech is ~4 Tekken tokens a
# second (a 30-s clip 100-130) and other languages and scripts take more; 15/s (450 for 30 s)
# is far above what speech holds, and a model that babbles still stops.
TOKENS_PER_SECOND = 15.0
MIN_NEW_TOKENS = 32  # a 1-s clip may still hold a few long words


@dataclass(frozen=True)
class TokenLimit:
    """How many tokens a transcript may take: the same rule for the card's WER, `voxtune serve`
    and the Space, so none of them cuts off what the others would transcribe.

    A clip of `seconds` gets `ceil(seconds × per_second)`, never fewer than `floor` (which the
    evaluation raises to the longest reference it scored, in tokens). `fixed` (the spec's
    eval.max_new_tokens) replaces the rule with one number for every clip.
    """

    per_second: float = TOKENS_PER_SECOND
    floor: int = MIN_NEW_TOKENS
    fixed: int | None = None

    def for_seconds(self, seconds: float) -> int:
        if self.fixed is not None:
            return self.fixed
        return max(self.floor, math.ceil(seconds * self.per_second))

    def as_dict(self) -> dict[str, Any]:
        return {"tokens_per_second": self.per_second, "min_new_tokens": self.floor,
                "max_new_tokens": self.fixed}

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, fixed: int | None = None) -> TokenLimit:
        """The limit a run recorded (metrics.json's `generation`); `fixed` wins when given."""
        values = values or {}
        return cls(per_second=float(values.get("tokens_per_second", TOKENS_PER_SECOND)),
                   floor=int(values.get("min_new_tokens", MIN_NEW_TOKENS)),
                   fixed=fixed if fixed is not None else values.get("max_new_tokens"))


@dataclass(frozen=True)
class Transcript:
    text: str
    hit_max_length: bool  # cut at its token limit before the end-of-sequence token


def to_16k_mono(audio: Any) -> Any:
    """Gradio `(rate, samples)`, a file path, or 16-kHz samples → float32 mono at 16 kHz."""
    import numpy as np
    import soxr

    if isinstance(audio, (str, Path)):
        import soundfile

        samples, rate = soundfile.read(str(audio), dtype="float32", always_2d=False)
    elif isinstance(audio, tuple):
        rate, samples = audio
    else:
        rate, samples = SAMPLING_RATE, audio
    samples = np.asarray(samples)
    if np.issubdtype(samples.dtype, np.integer):  # Gradio hands over int16 PCM
        samples = samples / float(np.iinfo(samples.dtype).max + 1)
    samples = samples.astype(np.float32)
    if samples.ndim == 2:  # (frames, channels)
        samples = samples.mean(axis=1)
    if samples.size == 0:
        raise ValueError("the audio is empty")
    if rate != SAMPLING_RATE:
        samples = soxr.resample(samples, rate, SAMPLING_RATE, quality="HQ")
    return samples


def transcribe(model: Any, processor: Any, audio: Any, language: str | None, *,
               max_new_tokens: int | TokenLimit) -> Transcript:
    """Greedy transcription of one recording (anything `to_16k_mono` takes); see
    `transcribe_batch`."""
    return transcribe_batch(model, processor, [audio], [language],
                            max_new_tokens=max_new_tokens)[0]


def transcribe_batch(model: Any, processor: Any, audios: list[Any],
                     languages: list[str | None], *,
                     max_new_tokens: int | TokenLimit) -> list[Transcript]:
    """Greedy transcripts of several recordings, in order, in one `generate` call: the entry
    point evaluation, `voxtune serve`'s batcher and the Space call.

    Each recording keeps its own language prompt (an ISO-639-1 code; None, "" or "auto" let
    the model detect it); the prompts are left-padded (the Mistral tokenizer's side) so every
    row's generation starts at the same position, and greedy decoding gives each row the
    transcript it gets alone. `max_new_tokens` is one number for all, or a TokenLimit, which
    gives each recording the limit of its own duration: the batch generates up to the largest,
    and each transcript is cut at its own, so a batch never changes a transcript. The
    generation settings are the whole contract between the published WER and the demo.
    """
    import torch

    if not audios:
        return []
    samples = [to_16k_mono(audio) for audio in audios]
    limits = [max_new_tokens.for_seconds(len(clip) / SAMPLING_RATE)
              if isinstance(max_new_tokens, TokenLimit) else max_new_tokens for clip in samples]
    model.eval()  # the eval during training gets the model in training mode
    inputs = processor.apply_transcription_request(
        language=[None if language in (None, "", "auto") else language for language in languages],
        audio=samples, sampling_rate=SAMPLING_RATE, format=["wav"] * len(samples),
        model_id=getattr(model, "name_or_path", None) or "voxtral")  # required; not encoded
    inputs = inputs.to(model.device, dtype=model.dtype)  # casts only the audio features
    eos = processor.tokenizer.eos_token_id
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max(limits), do_sample=False,
                                pad_token_id=processor.tokenizer.pad_token_id)
    transcripts = []
    for row, limit in zip(output[:, inputs["input_ids"].shape[1]:], limits, strict=True):
        tokens = row[:limit].tolist()
        finished = eos in tokens
        tokens = tokens[:tokens.index(eos)] if finished else tokens
        text = processor.decode(tokens, skip_special_tokens=True).strip()
        transcripts.append(Transcript(text, hit_max_length=not finished and len(tokens) >= limit))
    return transcripts
