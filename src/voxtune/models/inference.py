"""Open a Voxtral checkpoint and transcribe speech with it: the code every transcript comes from.

The held-out WER on each model card (`voxtune.train.evaluate`), `voxtune serve` (the UI's
Try-it, the in-cluster demo) and the generated Space all call `transcribe` here, so the demo
transcribes exactly the way the published number was measured. The Space carries this file,
byte for byte, as `voxtune_inference.py` beside its `app.py`, because voxtune itself is not
installed there; so it imports nothing from voxtune and needs only torch, transformers, peft
(for adapters), huggingface_hub, numpy, soundfile and soxr — all imported inside the functions.

    loaded = load_model("alice/my-voice")          # the Space: adapter or merged/full weights
    text = transcribe(loaded.model, loaded.processor, (48_000, samples), "en",
                      max_new_tokens=128).text     # Gradio's numpy audio works as it is

voxtune's own loader (`voxtune.models.load`) resolves model names, presets, run folders and
dtypes, then opens checkpoints with `open_checkpoint` and `open_adapter` here. Loading never
falls back to the base model: if the fine-tuned weights cannot be loaded, `load_model` raises
ModelLoadError and the demo shows that error.
"""

from __future__ import annotations

import json
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


@dataclass(frozen=True)
class Transcript:
    text: str
    hit_max_length: bool  # cut at max_new_tokens before the end-of-sequence token


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
               max_new_tokens: int) -> Transcript:
    """Greedy transcription of one recording (anything `to_16k_mono` takes).

    `language` is an ISO-639-1 code; None, "" or "auto" let the model detect it. One request
    per recording: languages differ between clips and their prompts must not mix. The
    generation settings are the whole contract between the published WER and the demo: greedy
    decoding, the language prompt, and `max_new_tokens`, which every caller takes from the
    run's `eval.max_new_tokens` (train.evaluate for the card, voxtune serve from the published
    spec.yaml, the Space from the MAX_NEW_TOKENS voxtune writes into its app.py).
    """
    import torch

    samples = to_16k_mono(audio)
    model.eval()  # the eval during training gets the model in training mode
    inputs = processor.apply_transcription_request(
        language=None if language in (None, "", "auto") else language, audio=samples,
        sampling_rate=SAMPLING_RATE, format="wav",
        model_id=getattr(model, "name_or_path", None) or "voxtral")  # required; not encoded
    inputs = inputs.to(model.device, dtype=model.dtype)  # casts only the audio features
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = output[0, inputs["input_ids"].shape[1]:]
    finished = bool((new_tokens == processor.tokenizer.eos_token_id).any())
    text = processor.decode(new_tokens, skip_special_tokens=True).strip()
    return Transcript(text, hit_max_length=not finished and len(new_tokens) >= max_new_tokens)


def transcribe_batch(model: Any, processor: Any, audios: list[Any],
                     languages: list[str | None], *, max_new_tokens: int) -> list[Transcript]:
    """Greedy transcripts of several recordings, in order: the entry point evaluation and
    `voxtune serve`'s batcher call. Each recording keeps its own language prompt."""
    return [transcribe(model, processor, audio, language, max_new_tokens=max_new_tokens)
            for audio, language in zip(audios, languages, strict=True)]
