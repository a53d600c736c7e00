"""Word and character error rates of transcripts against references: pure text, no model.

The number a run reports is only worth something if people can compare it with the ones they
know, so the default normaliser is Whisper's, as the Open ASR Leaderboard and the Whisper and
Voxtral model cards use it (from the `whisper-normalizer` package, not re-written here):

    whisper  English (the clip's or run's language is en): EnglishTextNormalizer — numbers
             spoken ↔ written, British ↔ American spelling, contractions, fillers, symbols
             ("twenty five percent of the colour" = "25% of the color"); other languages,
             or none given: BasicTextNormalizer (lowercase, no punctuation or diacritics' marks)
    simple   lowercase, punctuation removed (hyphens and slashes become spaces)
    none     the texts as they are (whitespace collapsed)

Scores are corpus rates: total edits over total reference words (characters for CER), what
jiwer computes for lists. They are fractions here and in metrics.json; people see percents
(`voxtune.run.status.format_percent`).
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from voxtune.run.status import format_percent

Normalizer = Literal["whisper", "simple", "none"]
NORMALIZERS: tuple[Normalizer, ...] = ("whisper", "simple", "none")
REPETITION_RATIO = 2.4  # zlib compression ratio above which Whisper calls an output a loop
WORD_SEPARATORS = re.compile(r"[-‐‑‒–—/]+")  # "well-known" is two words, not "wellknown"
PUNCTUATION = re.compile(r"[^\w\s]+")
SPACES = re.compile(r"\s+")


@functools.cache
def _whisper(english: bool) -> Callable[[str], str]:
    from whisper_normalizer.basic import BasicTextNormalizer
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer() if english else BasicTextNormalizer()


def _simple(text: str) -> str:
    return PUNCTUATION.sub("", WORD_SEPARATORS.sub(" ", text.lower()))


def normalize(text: str, normalizer: Normalizer, language: str | None) -> str:
    """`text` as `normalizer` scores it for a clip in `language` (ISO-639-1, None = unknown)."""
    if normalizer == "whisper":
        text = _whisper(language == "en")(text)
    elif normalizer == "simple":
        text = _simple(text)
    elif normalizer != "none":
        raise ValueError(f"unknown normalizer {normalizer!r}; one of {', '.join(NORMALIZERS)}")
    return SPACES.sub(" ", text).strip()


def describe(normalizer: Normalizer, languages: Sequence[str | None]) -> str:
    """The normaliser in words, for cards, metrics.json and the UI."""
    if normalizer == "simple":
        return "simple (lowercase, punctuation removed)"
    if normalizer == "none":
        return "none (texts compared as written)"
    found = set(languages)
    if found == {"en"}:
        return "whisper (Whisper's EnglishTextNormalizer)"
    if "en" not in found:
        return "whisper (Whisper's BasicTextNormalizer)"
    return "whisper (EnglishTextNormalizer for English clips, BasicTextNormalizer for the rest)"


def is_repetitive(text: str) -> bool:
    data = text.encode("utf-8")
    return len(data) > 24 and len(data) / len(zlib.compress(data)) > REPETITION_RATIO


@dataclass
class Scores:
    """Corpus WER/CER (fractions) of one model on one set, and what went wrong how often."""

    wer: float
    cer: float
    clips: int  # transcribed
    words: int  # reference words scored (after normalisation)
    normalizer: str  # in words (`describe`)
    empty: int  # empty transcripts
    repetitive: int  # runaway repetition
    max_length: int  # cut off at the token limit (still scored: an unfinished transcript)
    cut_off: list[str] = field(default_factory=list)  # the ids of those clips
    wer_complete: float | None = None  # WER over the clips that were not cut off

    def as_metrics(self, prefix: str = "") -> dict[str, Any]:
        return {f"{prefix}{key}": value for key, value in asdict(self).items()}


def _rates(references: list[str], hypotheses: list[str]) -> tuple[float, float]:
    import jiwer

    if not references:
        return float("nan"), float("nan")
    return float(jiwer.wer(references, hypotheses)), float(jiwer.cer(references, hypotheses))


def score(references: Sequence[str], hypotheses: Sequence[str], *, normalizer: Normalizer,
          languages: Sequence[str | None], cut_off: Sequence[bool] | None = None,
          ids: Sequence[str] | None = None) -> Scores:
    """Corpus WER/CER of `hypotheses` against `references` (same order), each pair normalised
    for its language. Pairs whose reference normalises to nothing are not scored (there is
    nothing to err against) but their transcripts still count as empty or repetitive."""
    count = len(references)
    cut_off = list(cut_off) if cut_off is not None else [False] * count
    ids = list(ids) if ids is not None else [str(index) for index in range(count)]
    rows = [(normalize(ref, normalizer, lang), normalize(hyp, normalizer, lang), cut)
            for ref, hyp, lang, cut in zip(references, hypotheses, languages, cut_off,
                                               strict=True)]
    scored = [row for row in rows if row[0]]
    wer, cer = _rates([ref for ref, _, _ in scored], [hyp for _, hyp, _ in scored])
    complete = [row for row in scored if not row[2]]
    wer_complete = _rates([r for r, _, _ in complete], [h for _, h, _ in complete])[0]
    return Scores(
        wer=wer, cer=cer, clips=count, words=sum(len(ref.split()) for ref, _, _ in scored),
        normalizer=describe(normalizer, languages),
        empty=sum(not hyp for _, hyp, _ in rows),
        repetitive=sum(is_repetitive(hyp) for hyp in hypotheses),
        max_length=sum(cut_off), cut_off=[i for i, cut in zip(ids, cut_off, strict=True) if cut],
        wer_complete=wer_complete if complete and any(cut_off) else None)


def score_line(scores: Scores) -> str:
    """One line for logs and the CLI: "WER 12.5% CER 4.0% on 40 clips (normaliser …)"."""
    line = (f"WER {format_percent(scores.wer)} CER {format_percent(scores.cer)} on "
            f"{scores.clips} clips ({scores.normalizer})")
    if scores.cut_off:
        line += f"; {len(scores.cut_off)} cut off at the token limit: {', '.join(scores.cut_off)}"
    return line
