"""Generation-based WER/CER on the held-out split, for the base and the tuned model.

    voxtune evaluate --model RUN_DIR_OR_MODEL --data PREPARED_DIR

Text is normalised the same way for references and hypotheses before scoring: lowercase and
punctuation removal are on by default (EvalSpec), then whitespace is collapsed. Degenerate
outputs are counted, not hidden: empty transcripts, runaway repetition (a compression ratio
above 2.4, the threshold Whisper uses to detect loops) and generations cut at max_new_tokens.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jiwer

from voxtune.data.manifest import Clip, read_manifest
from voxtune.errors import UserError
from voxtune.models.inference import Transcript, transcribe
from voxtune.models.load import load_tuned
from voxtune.spec import EvalSpec

REPETITION_RATIO = 2.4


@dataclass
class Scores:
    wer: float
    cer: float
    clips: int
    empty: int
    repetitive: int
    max_length: int


def normalizer(spec: EvalSpec) -> jiwer.Compose:
    steps: list[Any] = []
    if spec.lowercase:
        steps.append(jiwer.ToLowerCase())
    if spec.remove_punctuation:
        steps.append(jiwer.RemovePunctuation())
    return jiwer.Compose([*steps, jiwer.RemoveMultipleSpaces(), jiwer.Strip()])


def is_repetitive(text: str) -> bool:
    data = text.encode("utf-8")
    return len(data) > 24 and len(data) / len(zlib.compress(data)) > REPETITION_RATIO


def score(references: list[str], transcripts: list[Transcript], spec: EvalSpec) -> Scores:
    """WER and CER over all clips (corpus level, as jiwer computes them) plus degenerate counts."""
    normalise = normalizer(spec)
    pairs = [(normalise(ref), normalise(hyp.text)) for ref, hyp in zip(references, transcripts,
                                                                       strict=True)]
    pairs = [(ref, hyp) for ref, hyp in pairs if ref]  # nothing to score against
    refs, hyps = [ref for ref, _ in pairs], [hyp for _, hyp in pairs]
    return Scores(
        wer=float(jiwer.wer(refs, hyps)) if refs else float("nan"),
        cer=float(jiwer.cer(refs, hyps)) if refs else float("nan"),
        clips=len(transcripts),
        empty=sum(not normalise(t.text) for t in transcripts),
        repetitive=sum(is_repetitive(t.text) for t in transcripts),
        max_length=sum(t.hit_max_length for t in transcripts),
    )


def transcribe_clips(model: Any, processor: Any, clips: list[Clip], prepared: Path,
                     language: str | None, max_new_tokens: int) -> list[Transcript]:
    """Each clip's transcript, in order, with the clip's (or the run's) language: through
    `voxtune.models.inference.transcribe`, the code voxtune serve and the Space run."""
    return [transcribe(model, processor, prepared / clip.audio_path, clip.language or language,
                       max_new_tokens=max_new_tokens) for clip in clips]


def samples(clips: list[Clip], base: list[str] | None,
            tuned: list[str] | None) -> list[dict[str, str | None]]:
    """Per-clip reference / base / tuned transcripts for metrics.json, the card and the UI."""
    return [{"id": clip.id, "reference": clip.text,
             "base": base[index] if base else None,
             "tuned": tuned[index] if tuned else None} for index, clip in enumerate(clips)]


def as_metrics(prefix: str, scores: Scores) -> dict[str, float]:
    return {f"{prefix}{key}": value for key, value in asdict(scores).items()}


def evaluate_folder(model: str, prepared: Path, split: str = "eval",
                    language: str | None = None) -> dict[str, Any]:
    """`voxtune evaluate`: scores plus each clip's reference and hypothesis."""
    clips = read_manifest(prepared, split)
    if not clips:
        raise UserError(f"{prepared}: no {split} clips")
    tuned, spec = load_tuned(model)
    settings = spec.eval if spec else EvalSpec()
    language = language or (spec.language if spec else None)
    transcripts = transcribe_clips(tuned.model, tuned.processor, clips, prepared, language,
                                   settings.max_new_tokens)
    scores = score([clip.text for clip in clips], transcripts, settings)
    return {**asdict(scores), "samples": [
        {"id": clip.id, "reference": clip.text, "hypothesis": transcript.text}
        for clip, transcript in zip(clips, transcripts, strict=True)]}
