"""Generation-based WER/CER of a model on prepared clips: the held-out split, the general set.

    voxtune evaluate --model RUN_DIR_OR_MODEL --data PREPARED_DIR

Clips are transcribed greedily in batches of `eval.batch_size`, sorted by duration so a batch
holds similar lengths, through `voxtune.models.inference.transcribe_batch` (the code `voxtune
serve` and the Space run). Each clip may take as many tokens as its duration allows
(`inference.TokenLimit`), never fewer than the longest reference scored, so a real transcript
is never cut off; clips cut off all the same are counted and listed, not hidden. Scoring
(normalisers, corpus WER/CER) is `voxtune.train.scoring`. Under data parallelism every rank
transcribes its share and the transcripts are gathered, so no rank waits on the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxtune.data.manifest import Clip, read_manifest
from voxtune.errors import UserError
from voxtune.models.inference import MIN_NEW_TOKENS, TokenLimit, Transcript, transcribe_batch
from voxtune.spec import EvalSpec, RunSpec
from voxtune.train.scoring import Scores, score

REFERENCE_SLACK = 8  # tokens beyond the longest reference: the EOS and formatting ("25%")


@dataclass
class Evaluated:
    """One model on one set of clips: the scores and each clip's raw transcript, in order."""

    scores: Scores
    transcripts: list[Transcript]

    @property
    def texts(self) -> list[str]:
        return [transcript.text for transcript in self.transcripts]


def token_limit(settings: EvalSpec, processor: Any, clips: list[Clip]) -> TokenLimit:
    """The run's TokenLimit: the default rate, at least the longest of `clips`' references in
    tokens (plus slack); `eval.max_new_tokens` replaces it with one fixed number."""
    from voxtune.train.collator import transcript_ids

    longest = max((len(transcript_ids(processor, clip.text)) for clip in clips), default=0)
    return TokenLimit(floor=max(MIN_NEW_TOKENS, longest + REFERENCE_SLACK),
                      fixed=settings.max_new_tokens)


def shard(count: int, rank: int, world: int) -> list[int]:
    """The indices rank `rank` of `world` transcribes: every world-th one, so each rank gets
    short and long clips alike."""
    return list(range(rank, count, world))


def transcribe_clips(model: Any, processor: Any, clips: list[Clip], prepared: Path,
                     language: str | None, limit: TokenLimit, batch_size: int,
                     indices: list[int] | None = None,
                     on_batch: Callable[[int], Any] = lambda count: None
                     ) -> dict[int, Transcript]:
    """{index: transcript} of `clips` (those at `indices`, default all), each with its own
    language or the run's, in batches of similar duration; `on_batch(n)` after each batch of
    n clips (a progress bar)."""
    indices = list(range(len(clips))) if indices is None else indices
    ordered = sorted(indices, key=lambda index: clips[index].duration)
    found: dict[int, Transcript] = {}
    for start in range(0, len(ordered), batch_size):
        batch = ordered[start:start + batch_size]
        transcripts = transcribe_batch(
            model, processor, [prepared / clips[index].audio_path for index in batch],
            [clips[index].language or language for index in batch], max_new_tokens=limit)
        found.update(zip(batch, transcripts, strict=True))
        on_batch(len(batch))
    return found


def gather(found: dict[int, Transcript], count: int, world: int) -> list[Transcript]:
    """Every rank's transcripts, in clip order, on every rank (`world` 1: only this one's)."""
    if world > 1:
        import torch.distributed as dist

        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, found)
        found = {index: transcript for part in parts for index, transcript in part.items()}
    return [found[index] for index in range(count)]


def evaluate_clips(model: Any, processor: Any, clips: list[Clip], prepared: Path,
                   settings: EvalSpec, language: str | None, limit: TokenLimit,
                   shards: tuple[int, int] = (0, 1),
                   on_batch: Callable[[int], Any] = lambda count: None) -> Evaluated:
    """Transcribe and score `clips`. `shards` (rank, world size): under torch.distributed
    every rank calls it, transcribes its share, and all get the whole result. `on_batch(n)`:
    this rank transcribed n more clips."""
    rank, world = shards
    found = transcribe_clips(model, processor, clips, prepared, language, limit,
                             settings.batch_size, shard(len(clips), rank, world), on_batch)
    transcripts = gather(found, len(clips), world)
    scores = score([clip.text for clip in clips], [t.text for t in transcripts],
                   normalizer=settings.normalizer,
                   languages=[clip.language or language for clip in clips],
                   cut_off=[t.hit_max_length for t in transcripts],
                   ids=[clip.id for clip in clips])
    return Evaluated(scores, transcripts)


def samples(clips: list[Clip], base: list[str] | None, tuned: list[str] | None,
            cut_off: set[str] = frozenset()) -> list[dict[str, Any]]:
    """Per-clip reference / base / tuned raw transcripts for metrics.json, the card and the
    UI; `cut_off`: the clips whose tuned transcript hit its token limit."""
    return [{"id": clip.id, "reference": clip.text,
             "base": base[index] if base else None,
             "tuned": tuned[index] if tuned else None,
             **({"cut_off": True} if clip.id in cut_off else {})}
            for index, clip in enumerate(clips)]


def evaluate_folder(model: str, prepared: Path, split: str = "eval",
                    language: str | None = None) -> dict[str, Any]:
    """`voxtune evaluate`: scores plus each clip's reference and hypothesis, with the settings
    (normaliser, token limit) the model's run used."""
    from voxtune.models.load import load_tuned

    clips = read_manifest(prepared, split)
    if not clips:
        raise UserError(f"{prepared}: no {split} clips")
    tuned, spec = load_tuned(model)
    settings = spec.eval if spec else EvalSpec()
    language = language or (spec.language if spec else None)
    limit = token_limit(settings, tuned.processor, clips)
    result = evaluate_clips(tuned.model, tuned.processor, clips, prepared, settings, language,
                            limit)
    return {**result.scores.as_metrics(), "generation": limit.as_dict(), "samples": [
        {"id": clip.id, "reference": clip.text, "hypothesis": transcript.text}
        for clip, transcript in zip(clips, result.transcripts, strict=True)]}


def evaluation_metrics(spec: RunSpec, tuned: dict[str, Evaluated], base: dict[str, Any],
                       limit: TokenLimit) -> dict[str, Any]:
    """metrics.json's evaluation keys: the eval split's scores (`wer`, `cer`, … and `base_…`),
    the general set's (`general_…`, `base_general_…`, `general_dataset`), and the token limit
    they were transcribed with (`generation`, which serve and the Space use too)."""
    metrics: dict[str, Any] = {"generation": limit.as_dict()}
    for name, prefix in (("eval", ""), ("general", "general_")):
        if name in tuned:
            metrics.update(tuned[name].scores.as_metrics(prefix))
        metrics.update({f"base_{prefix}{key}": value
                        for key, value in base.get(name, {}).get("scores", {}).items()})
    if spec.eval.general is not None and "general" in tuned:
        metrics["general_dataset"] = spec.eval.general.dataset
    return metrics
