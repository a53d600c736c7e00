"""Prepared clips → Voxtral training batches, by either of two feature paths.

One training example (DESIGN §3):

    input_ids  <s> [INST] [BEGIN_AUDIO] [AUDIO]×N [/INST] lang:sv [TRANSCRIBE] transcript… </s>
    labels     -100 on every prompt position ……………………………………………………… transcript… </s>

The prompt comes from the processor's own `apply_transcription_request` (so it matches
inference exactly), with the clip's language, else the run's, else none (auto-detect).

The log-mel `input_features` come by one of two paths (`voxtune.plan.features` picks one):

- **cache**: each clip's prompt ids and log-mel are computed once (as the device path computes
  them, many clips at a time) and cached on disk, keyed by the processor's audio and tokenizer
  settings; epochs after the first never decode audio or compute log-mels again. A whole 30-s
  window of fp32 log-mel is 1.46 MiB per clip, whatever the clip's length: worth it only for
  small CPU runs.
- **device**: items carry the clip's 16-kHz audio; `LogMel` computes the log-mel per batch with
  the processor's feature extractor on its torch path, on the device the model runs on. The
  prompt depends only on the clip's number of windows and its language, so it is asked of the
  processor once per (windows, language).

Both give the same model inputs for the same clips (tests/unit/test_collator.py).

Batches are right-padded: the model numbers positions 0…n-1 from the left, as at inference, and
the loss ignores the padding. `input_features` holds one row per audio window per clip (a 45-s
clip in 30-s windows gives 2 rows), concatenated in batch order — the model matches them to the
[AUDIO] placeholders in that order.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm
from transformers import VoxtralProcessor, WhisperFeatureExtractor

from voxtune.data.audio import SAMPLE_RATE, AudioRejected, decode, to_mono_16k
from voxtune.data.manifest import Clip
from voxtune.errors import UserError
from voxtune.files import write_atomic

IGNORE_INDEX = -100  # label value the loss skips
CACHE_FORMAT = 1  # bump when the cached file layout changes
# mistral-common records the model id in the request but the tokens do not depend on it.
REQUEST_MODEL_ID = "voxtral"
FILL_BATCH = 32  # clips per log-mel call when the cache is filled (a few MB of audio at a time)


@dataclass(frozen=True)
class ClipFeatures:
    """What the processor makes of one clip's audio: prompt token ids and log-mel windows."""

    prompt_ids: list[int]
    input_features: torch.Tensor  # (windows, mel bins, frames per window), float32


# --- computing and caching features -----------------------------------------------------------


def read_audio(path: Path) -> np.ndarray:
    """A clip as 16 kHz mono float32 (prepared clips already are; others are converted)."""
    samples, rate = decode(path)
    return to_mono_16k(samples, rate)


def encode_clip(processor: VoxtralProcessor, audio: np.ndarray,
                language: str | None) -> ClipFeatures:
    """Run the processor's transcription request on one clip; language None = auto-detect."""
    batch = processor.apply_transcription_request(
        language=language, audio=audio, sampling_rate=SAMPLE_RATE, format="wav",
        model_id=REQUEST_MODEL_ID)
    # One clip, so the tokenizer added no padding and every id is the prompt's.
    return ClipFeatures(prompt_ids=batch["input_ids"][0].tolist(),
                        input_features=batch["input_features"].float())


def features_key(processor: VoxtralProcessor) -> str:
    """A short hash of everything that shapes the cached prompt ids and features.

    Feature extractor settings, the processor's windowing and the tokenizer file: a different
    checkpoint or window gets its own cache entries instead of silently reusing stale ones.
    """
    tekken = processor.tokenizer.tokenizer.instruct_tokenizer.tokenizer.file_path
    settings = {
        "format": CACHE_FORMAT,
        "feature_extractor": processor.feature_extractor.to_dict(),
        "audio_kwargs": processor.audio_kwargs,
        "tokenizer": hashlib.sha256(Path(tekken).read_bytes()).hexdigest(),
    }
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_path(cache_dir: Path, clip: Clip, language: str | None, key: str) -> Path:
    """`<cache_dir>/<clip id>-<language or auto>-<features key>.pt`."""
    return cache_dir / f"{clip.id}-{language or 'auto'}-{key}.pt"


def save_features(path: Path, features: ClipFeatures) -> None:
    buffer = io.BytesIO()
    torch.save({"prompt_ids": torch.tensor(features.prompt_ids, dtype=torch.int32),
                "input_features": features.input_features.contiguous()}, buffer)
    write_atomic(path, buffer.getvalue())


def load_features(path: Path) -> ClipFeatures:
    # mmap: reading a clip's prompt ids does not pull its (larger) features into memory.
    stored = torch.load(path, weights_only=True, mmap=True)
    return ClipFeatures(prompt_ids=stored["prompt_ids"].tolist(),
                        input_features=stored["input_features"])


def cache_clips(clips: Sequence[Clip], prepared: Path, processor: VoxtralProcessor,
                cache_dir: Path, language: str | None = None, key: str | None = None,
                on_done: Callable[[int], Any] = lambda count: None
                ) -> list[tuple[Path, list[int]]]:
    """Each clip's cache file and prompt ids; the missing files are computed and stored.

    Computed the way the device path computes features (`LogMel` over up to FILL_BATCH clips at
    once, one prompt per (windows, language)), not with one processor request per clip: the
    request writes every clip to a WAV and reads it back, which made filling a 2,000-clip cache
    the longest part of `voxtune demo`. The features equal the request's within 1e-5
    (tests/unit/test_collator.py). A clip's language is its own, else `language`. `key` is
    `features_key(processor)`; `on_done(n)` is told as n more clips are ready (a progress bar).
    """
    key = key or features_key(processor)
    log_mel, prompt = LogMel.of(processor), prompt_memo(processor)
    entries: list[tuple[Path, list[int]] | None] = []
    missing: list[int] = []
    for index, clip in enumerate(clips):
        path = cache_path(cache_dir, clip, clip.language or language, key)
        if path.exists():
            entries.append((path, load_features(path).prompt_ids))
            on_done(1)
        else:
            entries.append(None)
            missing.append(index)
    for start in range(0, len(missing), FILL_BATCH):
        batch = missing[start:start + FILL_BATCH]
        audio = [prepared_audio(clips[index], prepared) for index in batch]
        windows = log_mel(audio)  # every clip's windows, in batch order
        offset = 0
        for index, samples in zip(batch, audio, strict=True):
            count, code = log_mel.windows(len(samples)), clips[index].language or language
            # a copy: saving a slice would store the whole batch's tensor in every file
            features = ClipFeatures(prompt(count, code), windows[offset:offset + count].clone())
            offset += count
            path = cache_path(cache_dir, clips[index], code, key)
            save_features(path, features)
            entries[index] = (path, features.prompt_ids)
        on_done(len(batch))
    return [entry for entry in entries if entry is not None]


def prepared_audio(clip: Clip, prepared: Path) -> np.ndarray:
    """A prepared clip's 16-kHz audio; a clip that cannot be read is the user's to rebuild."""
    try:
        return read_audio(prepared / clip.audio_path)
    except AudioRejected as error:
        raise UserError(f"{prepared / clip.audio_path} (clip {clip.id}): {error}; run "
                        "`voxtune prepare` again to rebuild the prepared folder") from None


# --- the device path: log-mel per batch, where the model runs ---------------------------------


@dataclass(frozen=True)
class LogMel:
    """The processor's log-mel of whole clips, per batch, computed on `device`.

    Does what `VoxtralProcessor` does to a clip's audio — pad it to whole windows, one log-mel
    over all of it (so the normalisation's maximum is the clip's), split into windows — but with
    the feature extractor's torch path on `device` and clips with as many windows in one call.
    """

    feature_extractor: WhisperFeatureExtractor
    audio_kwargs: dict[str, Any]  # the processor's padding and window settings
    device: str = "cpu"

    @classmethod
    def of(cls, processor: VoxtralProcessor, device: str = "cpu") -> LogMel:
        # max_source_positions is the processor's own (how it splits); return_tensors is ours
        kwargs = {key: value for key, value in processor.audio_kwargs.items()
                  if key not in ("max_source_positions", "return_tensors")}
        return cls(processor.feature_extractor, kwargs, str(device))

    def windows(self, samples: int) -> int:
        """How many windows a clip of `samples` 16-kHz samples fills."""
        return max(1, math.ceil(samples / self.audio_kwargs["pad_to_multiple_of"]))

    def __call__(self, clips: Sequence[np.ndarray]) -> torch.Tensor:
        """(windows of all clips in batch order, mel bins, frames per window), float32.

        On the host: the extractor copies its result back (transformers 5.24), and the Trainer
        moves it to the device with the rest of the batch — 1.5 MB per window, each way.
        """
        by_windows: dict[int, list[int]] = {}
        for index, audio in enumerate(clips):
            by_windows.setdefault(self.windows(len(audio)), []).append(index)
        per_clip: list[torch.Tensor] = [torch.empty(0)] * len(clips)
        for windows, indices in by_windows.items():
            features = self.feature_extractor(
                [clips[index] for index in indices], return_tensors="pt", device=self.device,
                **self.audio_kwargs)["input_features"]  # (clips, mel bins, windows × frames)
            count, bins, frames = features.shape
            split = features.reshape(count, bins, windows, frames // windows).transpose(1, 2)
            for index, clip_features in zip(indices, split, strict=True):
                per_clip[index] = clip_features
        return torch.cat(per_clip)


def prompt_memo(processor: VoxtralProcessor) -> Callable[[int, str | None], list[int]]:
    """`prompt_ids(processor, windows, language)`, asked of the processor once per pair."""
    return functools.cache(lambda windows, language: prompt_ids(processor, windows, language))


def prompt_ids(processor: VoxtralProcessor, windows: int, language: str | None) -> list[int]:
    """The transcription prompt of any clip that fills `windows` windows, from the processor.

    mistral-common pads the audio to whole windows before it counts [AUDIO] tokens, so silence
    of as many windows gives the same prompt as the clip (one processor call, not one a clip).
    """
    window = processor.audio_kwargs["pad_to_multiple_of"]
    return encode_clip(processor, np.zeros(windows * window, dtype=np.float32),
                       language).prompt_ids


# --- examples and batches ---------------------------------------------------------------------


def transcript_ids(processor: VoxtralProcessor, text: str) -> list[int]:
    """The transcript's token ids, without BOS/EOS (the prompt and `make_example` add those)."""
    return processor.tokenizer.encode(text, add_special_tokens=False)


def split_long_transcripts(clips: Sequence[Clip], processor: VoxtralProcessor,
                           limit: int) -> tuple[list[Clip], dict[str, int]]:
    """The clips whose transcript is at most `limit` tokens, and {clip id: tokens} of the rest."""
    kept: list[Clip] = []
    too_long: dict[str, int] = {}
    for clip in clips:
        tokens = len(transcript_ids(processor, clip.text))
        if tokens > limit:
            too_long[clip.id] = tokens
        else:
            kept.append(clip)
    return kept, too_long


def make_example(prompt_ids: Sequence[int], target_ids: Sequence[int],
                 eos_token_id: int) -> tuple[list[int], list[int]]:
    """input_ids and labels for one clip: the model learns the transcript and where it ends."""
    input_ids = [*prompt_ids, *target_ids, eos_token_id]
    labels = [IGNORE_INDEX] * len(prompt_ids) + [*target_ids, eos_token_id]
    return input_ids, labels


def pad(sequences: Sequence[Sequence[int]], value: int, side: str = "right") -> torch.Tensor:
    """Stack token sequences into one (batch, longest) long tensor, padding on `side`."""
    longest = max(len(sequence) for sequence in sequences)
    batch = torch.full((len(sequences), longest), value, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if sequence:
            values = torch.as_tensor(sequence, dtype=torch.long)
            if side == "right":
                batch[row, :len(sequence)] = values
            else:
                batch[row, longest - len(sequence):] = values
    return batch


def attention_mask(sequences: Sequence[Sequence[int]], side: str = "right") -> torch.Tensor:
    """1 on real tokens, 0 on padding, laid out like `pad(sequences, …, side)`."""
    return pad([[1] * len(sequence) for sequence in sequences], 0, side)


def collate(examples: Sequence[dict], pad_token_id: int,
            log_mel: LogMel | None = None) -> dict[str, torch.Tensor]:
    """Training batch from examples with `input_ids`, `labels` and either `input_features`
    (the cache path) or `audio` (the device path: `log_mel` computes the features).

    Right-padded: padding gets `pad_token_id` in input_ids, 0 in attention_mask and -100 in
    labels. (The Mistral tokenizer pads on the left by default; that suits generation only.)
    """
    input_ids = [example["input_ids"] for example in examples]
    if "audio" in examples[0]:
        if log_mel is None:
            raise ValueError("examples carry audio: the collator needs a LogMel")
        features = log_mel([example["audio"] for example in examples])
    else:
        features = torch.cat([example["input_features"] for example in examples])
    return {
        "input_ids": pad(input_ids, pad_token_id),
        "attention_mask": attention_mask(input_ids),
        "labels": pad([example["labels"] for example in examples], IGNORE_INDEX),
        "input_features": features,
    }


@dataclass(frozen=True)
class TrainingCollator:
    """`collate` with the tokenizer's pad id (and, for the device path, the `LogMel`) bound, for
    `DataLoader`/`Trainer(data_collator=…)`."""

    pad_token_id: int
    log_mel: LogMel | None = None

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        return collate(examples, self.pad_token_id, self.log_mel)


class TranscriptionDataset(Dataset):
    """Training examples for clips of a prepared folder, by the cache or the device path.

    `cache_dir`: log-mels are cached there, all computed (or found) when the dataset is made, so
    the first epoch is as fast as the others; items load theirs lazily from the cache files.
    `cache_dir=None` (the device path): every clip is read once now (its windows, and a clear
    error for a broken file before training starts) and again per item, which then carries its
    16-kHz audio for `TrainingCollator(…, LogMel.of(processor, device))`.
    Either way `lengths` is exact and the processor is not kept, so the dataset pickles cheaply
    to workers.
    """

    def __init__(self, clips: Sequence[Clip], prepared: Path, processor: VoxtralProcessor,
                 cache_dir: Path | None, language: str | None = None):
        eos = processor.tokenizer.eos_token_id
        self.cached = cache_dir is not None
        self.prepared = prepared
        self.clips = list(clips)
        self.paths: list[Path] = []  # the cache files (cache path only)
        if cache_dir is not None:
            with tqdm(total=len(clips), desc="audio features", unit="clip", disable=None) as bar:
                entries = cache_clips(clips, prepared, processor, cache_dir, language,
                                      on_done=bar.update)
            self.paths = [path for path, _ in entries]
            prompts = [prompt for _, prompt in entries]
        else:
            log_mel, prompt = LogMel.of(processor), prompt_memo(processor)
            prompts = [prompt(log_mel.windows(len(prepared_audio(clip, prepared))),
                              clip.language or language)
                       for clip in tqdm(clips, desc="audio", unit="clip", disable=None)]
        self.input_ids: list[list[int]] = []
        self.labels: list[list[int]] = []
        for clip, prompt in zip(clips, prompts, strict=True):
            input_ids, labels = make_example(prompt, transcript_ids(processor, clip.text), eos)
            self.input_ids.append(input_ids)
            self.labels.append(labels)

    @property
    def lengths(self) -> list[int]:
        """Tokens per example."""
        return [len(input_ids) for input_ids in self.input_ids]

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict:
        item: dict[str, Any] = {"input_ids": self.input_ids[index],
                                "labels": self.labels[index]}
        if self.cached:
            item["input_features"] = load_features(self.paths[index]).input_features
        else:
            item["audio"] = prepared_audio(self.clips[index], self.prepared)
        return item
