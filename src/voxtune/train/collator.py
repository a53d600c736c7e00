"""Prepared clips → Voxtral training batches, with each clip's audio features computed once.

One training example (DESIGN §3):

    input_ids  <s> [INST] [BEGIN_AUDIO] [AUDIO]×N [/INST] lang:sv [TRANSCRIBE] transcript… </s>
    labels     -100 on every prompt position ……………………………………………………… transcript… </s>

The prompt comes from the processor's own `apply_transcription_request` (so it matches
inference exactly), with the clip's language, else the run's, else none (auto-detect). Its token
ids and log-mel `input_features` are cached on disk per clip, keyed by the processor's audio and
tokenizer settings: epochs after the first never decode audio or compute log-mels again.

Batches are right-padded: the model numbers positions 0…n-1 from the left, as at inference, and
the loss ignores the padding. `input_features` holds one row per audio window per clip (a 45-s
clip in 30-s windows gives 2 rows), concatenated in batch order — the model matches them to the
[AUDIO] placeholders in that order.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm
from transformers import VoxtralProcessor

from voxtune.data.audio import SAMPLE_RATE, AudioRejected, decode, to_mono_16k
from voxtune.data.manifest import Clip
from voxtune.errors import UserError
from voxtune.files import write_atomic

IGNORE_INDEX = -100  # label value the loss skips
CACHE_FORMAT = 1  # bump when the cached file layout changes
# mistral-common records the model id in the request but the tokens do not depend on it.
REQUEST_MODEL_ID = "voxtral"


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


def cached_clip_features(clip: Clip, prepared: Path, processor: VoxtralProcessor,
                         cache_dir: Path, language: str | None, key: str | None = None
                         ) -> tuple[Path, ClipFeatures]:
    """A clip's features from the cache, computed and stored on first use.

    `key` is `features_key(processor)`; pass it when calling for many clips (it hashes the
    tokenizer file). Returns the cache file too, so datasets can reload it lazily.
    """
    path = cache_path(cache_dir, clip, language, key or features_key(processor))
    if path.exists():
        return path, load_features(path)
    try:
        audio = read_audio(prepared / clip.audio_path)
    except AudioRejected as error:
        raise UserError(f"{prepared / clip.audio_path} (clip {clip.id}): {error}; run "
                        "`voxtune prepare` again to rebuild the prepared folder") from None
    features = encode_clip(processor, audio, language)
    save_features(path, features)
    return path, features


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


def collate(examples: Sequence[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Training batch from examples with `input_ids`, `labels` and `input_features`.

    Right-padded: padding gets `pad_token_id` in input_ids, 0 in attention_mask and -100 in
    labels. (The Mistral tokenizer pads on the left by default; that suits generation only.)
    """
    input_ids = [example["input_ids"] for example in examples]
    return {
        "input_ids": pad(input_ids, pad_token_id),
        "attention_mask": attention_mask(input_ids),
        "labels": pad([example["labels"] for example in examples], IGNORE_INDEX),
        "input_features": torch.cat([example["input_features"] for example in examples]),
    }


def collate_prompts(features: Sequence[ClipFeatures], pad_token_id: int
                    ) -> dict[str, torch.Tensor]:
    """Generation batch from cached features: prompts left-padded so all end where the
    generated text starts (generate derives positions from the attention mask)."""
    prompts = [item.prompt_ids for item in features]
    return {
        "input_ids": pad(prompts, pad_token_id, side="left"),
        "attention_mask": attention_mask(prompts, side="left"),
        "input_features": torch.cat([item.input_features for item in features]),
    }


@dataclass(frozen=True)
class TrainingCollator:
    """`collate` with the tokenizer's pad id bound, for `DataLoader`/`Trainer(data_collator=…)`."""

    pad_token_id: int

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        return collate(examples, self.pad_token_id)


class TranscriptionDataset(Dataset):
    """Training examples for clips of a prepared folder; features cached under `cache_dir`.

    All features are computed (or found in the cache) when the dataset is made, so the first
    epoch is as fast as the others and `lengths` is exact. Items load their features lazily from
    the cache files; the processor is not kept, so the dataset pickles cheaply to workers.
    """

    def __init__(self, clips: Sequence[Clip], prepared: Path, processor: VoxtralProcessor,
                 cache_dir: Path, language: str | None = None):
        key = features_key(processor)
        eos = processor.tokenizer.eos_token_id
        self.paths: list[Path] = []
        self.input_ids: list[list[int]] = []
        self.labels: list[list[int]] = []
        for clip in tqdm(clips, desc="audio features", unit="clip", disable=None):
            path, features = cached_clip_features(clip, prepared, processor, cache_dir,
                                                  clip.language or language, key)
            input_ids, labels = make_example(features.prompt_ids,
                                             transcript_ids(processor, clip.text), eos)
            self.paths.append(path)
            self.input_ids.append(input_ids)
            self.labels.append(labels)

    @property
    def lengths(self) -> list[int]:
        """Tokens per example."""
        return [len(input_ids) for input_ids in self.input_ids]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.input_ids[index], "labels": self.labels[index],
                "input_features": load_features(self.paths[index]).input_features}
