"""Transcribe speech with a fine-tuned Voxtral: the one inference path every demo uses.

The generated Space carries this file, byte for byte, as `voxtune_inference.py` beside its
`app.py`; the in-cluster demo and the UI's Try-it import it as `voxtune.publish.inference`. So
it imports nothing from voxtune and needs only torch, transformers, peft (for adapters),
huggingface_hub, numpy and soxr — everything heavy is imported inside the functions.

    model = load_model("alice/my-voice")              # adapter or merged/full; Hub id or folder
    text = transcribe(model, (48_000, samples), language="en")   # Gradio's numpy audio works

Loading never falls back to the base model: if the fine-tuned weights cannot be loaded,
`load_model` raises ModelLoadError and the demo shows that error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLING_RATE = 16_000  # what Voxtral's feature extractor expects
ADAPTER_CONFIG = "adapter_config.json"
MAX_NEW_TOKENS = 256
# Voxtral Mini's languages; "auto" lets the model detect the language.
LANGUAGES = {"auto": "detect automatically", "en": "English", "es": "Spanish", "fr": "French",
             "pt": "Portuguese", "hi": "Hindi", "de": "German", "nl": "Dutch", "it": "Italian"}


class ModelLoadError(RuntimeError):
    """The fine-tuned model could not be loaded (the message says which and why)."""


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


def match_audio_window(processor: Any) -> None:
    """Chunk audio the way the saved feature extractor does.

    VoxtralProcessor pads audio with class defaults for a 30-s window instead of asking its
    feature extractor; for 30-s models (every real Voxtral) this changes nothing.
    """
    extractor = processor.feature_extractor
    processor.audio_kwargs = {**type(processor).audio_kwargs,
                              "pad_to_multiple_of": extractor.n_samples,
                              "max_source_positions": extractor.nb_max_frames}


def load_model(source: str, *, base_model: str | None = None, revision: str | None = None,
               device: str | None = None, base: Any = None) -> LoadedModel:
    """Load the fine-tuned model: a LoRA adapter on its base, or merged/full weights.

    `source` is a Hub id (private repos read HF_TOKEN from the environment) or a folder;
    `base_model` overrides the base named in an adapter's config; `base` is an already built
    base model for an adapter (a base that is no Hub id, such as a locally built test model).
    """
    try:
        import torch
        from transformers import VoxtralForConditionalGeneration, VoxtralProcessor

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        adapter = adapter_config(source, revision)
        processor = VoxtralProcessor.from_pretrained(source, revision=revision)
        match_audio_window(processor)
        if adapter is None:
            model = VoxtralForConditionalGeneration.from_pretrained(
                source, revision=revision, dtype="auto")
            base_name = None
        else:
            from peft import PeftModel

            base_name = base_model or adapter["base_model_name_or_path"]
            if base is None:
                base = VoxtralForConditionalGeneration.from_pretrained(base_name, dtype="auto")
            model = PeftModel.from_pretrained(base, source, revision=revision)
        model.to(device).eval()
    except Exception as error:  # any failure means: no fine-tuned model, so no transcription
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelLoadError(f"could not load the fine-tuned model {source}: "
                             f"{type(error).__name__}: {reason}") from error
    return LoadedModel(model, processor, source, base_name)


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


def transcribe(loaded: LoadedModel, audio: Any, language: str | None = None,
               max_new_tokens: int = MAX_NEW_TOKENS) -> str:
    """Greedy transcription of one recording; `language` is an ISO-639-1 code, None or "auto"
    to let the model detect it."""
    import torch

    samples = to_16k_mono(audio)
    model, processor = loaded.model, loaded.processor
    inputs = processor.apply_transcription_request(
        language=None if language in (None, "", "auto") else language, audio=samples,
        sampling_rate=SAMPLING_RATE, format="wav", model_id=loaded.source)
    inputs = inputs.to(model.device, dtype=model.dtype)  # casts only the audio features
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = output[:, inputs["input_ids"].shape[1]:]
    return processor.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()
