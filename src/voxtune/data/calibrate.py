"""Calibration: what a model gets wrong in the user's voice, and which prompt to record next.

    voxtune data calibrate --clips DIR --text FILE      # the report and the next prompts

1. `calibration_set`: a few prompts (10 by default) that cover as much of the domain text's
   vocabulary as they can, for the user to record first.
2. `error_report`: each calibration clip's reference and the model's transcript, normalised as
   voxtune scores them (voxtune.train.scoring), aligned by jiwer; every reference word keeps how
   often it was said, how often it was substituted or left out, what it was heard as (words
   jiwer inserted beside a substitution belong to it: "kubernetes" → "cooper netties"), and its
   character trigrams.
3. `rank`: the candidate prompts, best first. A prompt earns each failed word it contains,
   weighted by how often that word failed (times failed × share of times failed), divided by
   one more than the number of times the user has recorded it already (diminishing returns:
   the fifth clip of a word teaches less than the first); a word that shares enough of a failed
   word's trigrams ("kubectl" for "kubernetes") earns half. Each choice says why, in words.
4. `outcomes`: after a run, the same clips transcribed by the tuned model: which failed words
   are fixed, which still fail.

Pure: text in, text out; the transcripts come from whoever has the model (the CLI loads it,
the UI asks `voxtune serve`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from voxtune.run.status import format_percent
from voxtune.train.scoring import Normalizer, normalize

NGRAM = 3
# a prompt word sounds like a failed word when it holds this share of its trigrams, and at least
# MIN_SHARED of them (short words share two with too many others: "the", "then")
SIMILAR, MIN_SHARED = 0.3, 3
SIMILAR_WEIGHT = 0.5  # what such a word earns, against the failed word itself
CALIBRATION_PROMPTS = 10
TIMES = {1: "once", 2: "twice"}


def times(count: int) -> str:
    return TIMES.get(count, f"{count} times")


def ngrams(word: str) -> frozenset[str]:
    """The word's character trigrams, its edges marked ("kub" and " ku" of "kubectl")."""
    padded = f" {word} "
    return frozenset(padded[start:start + NGRAM] for start in range(len(padded) - NGRAM + 1))


@dataclass
class WordErrors:
    """One reference word across the calibration clips."""

    word: str  # normalised
    said: int = 0  # times it is in the references
    failed: int = 0  # substituted or left out
    heard: Counter[str] = field(default_factory=Counter)  # what was written instead; "" = nothing

    @property
    def ngrams(self) -> frozenset[str]:
        return ngrams(self.word)

    @property
    def weight(self) -> float:
        """How much recording this word is worth: how many times it failed, times the share
        of times it failed — 5 of 5 is surely a word the model does not know, 5 of 20 a word
        it mostly hears."""
        return self.failed * self.failed / self.said if self.said else 0.0

    def heard_as(self) -> str:
        """"misheard as 'cooper netties' twice", "left out once", or "wrong 3 times (as 'cube',
        'cubit', nothing)" when the failures differ."""
        forms = self.heard.most_common()
        if len(forms) == 1:
            heard, count = forms[0]
            return f"misheard as '{heard}' {times(count)}" if heard else f"left out {times(count)}"
        shown = ", ".join(f"'{heard}'" if heard else "nothing" for heard, _ in forms[:3])
        return f"wrong {times(self.failed)} (as {shown}{', …' if len(forms) > 3 else ''})"


@dataclass
class ErrorReport:
    """What the model got wrong in the calibration clips."""

    words: dict[str, WordErrors]  # every reference word, by its normalised form
    clips: int
    wer: float

    @property
    def errors(self) -> list[WordErrors]:
        """The words that failed at least once, the worst (by `WordErrors.weight`) first."""
        failed = [errors for errors in self.words.values() if errors.failed]
        return sorted(failed, key=lambda errors: (-errors.weight, errors.word))


def words_of(text: str, normalizer: Normalizer = "simple", language: str | None = None
             ) -> list[str]:
    return normalize(text, normalizer, language).split()


def error_report(pairs: Sequence[tuple[str, str]], normalizer: Normalizer = "simple",
                 language: str | None = None) -> ErrorReport:
    """The words of (reference, transcript) `pairs` and how each went. The simple normaliser
    by default: the report shows words as people wrote them (Whisper's would turn "seven" into
    "7"); pairs whose reference normalises to nothing are left out."""
    import jiwer

    rows = [(normalize(reference, normalizer, language), normalize(heard, normalizer, language))
            for reference, heard in pairs]
    rows = [row for row in rows if row[0]]
    words: dict[str, WordErrors] = {}
    if not rows:
        return ErrorReport(words, 0, float("nan"))
    output = jiwer.process_words([ref for ref, _ in rows], [hyp for _, hyp in rows])
    for reference, hypothesis, chunks in zip(output.references, output.hypotheses,
                                             output.alignments, strict=True):
        for word in reference:
            words.setdefault(word, WordErrors(word)).said += 1
        heard: dict[int, list[str]] = {}  # reference index → the words written for it
        for chunk in chunks:
            if chunk.type in ("substitute", "delete"):
                for offset in range(chunk.ref_end_idx - chunk.ref_start_idx):
                    written = chunk.hyp_start_idx + offset
                    heard[chunk.ref_start_idx + offset] = (
                        [hypothesis[written]] if chunk.type == "substitute" else [])
        for number, chunk in enumerate(chunks):
            if chunk.type != "insert":
                continue
            # an insertion beside a substitution is part of what that word was heard as
            after = chunks[number + 1] if number + 1 < len(chunks) else None
            before = chunks[number - 1] if number else None
            inserted = hypothesis[chunk.hyp_start_idx:chunk.hyp_end_idx]
            if after is not None and after.type == "substitute":
                heard[after.ref_start_idx][:0] = inserted
            elif before is not None and before.type == "substitute":
                heard[before.ref_end_idx - 1] += inserted
        for index, written_words in heard.items():
            errors = words[reference[index]]
            errors.failed += 1
            errors.heard[" ".join(written_words)] += 1
    return ErrorReport(words, len(rows), float(output.wer))


def report_lines(report: ErrorReport, limit: int = 20) -> list[str]:
    """The report for people: the rate, then each failed word with what it was heard as."""
    if not report.clips:
        return ["no calibration clips with a transcript"]
    lines = [f"{report.clips} calibration clips, WER {format_percent(report.wer)}; "
             f"{len(report.errors)} of {len(report.words)} words wrong at least once"]
    lines += [f"  {errors.word:20} wrong {errors.failed} of {errors.said}: {errors.heard_as()}"
              for errors in report.errors[:limit]]
    if len(report.errors) > limit:
        lines.append(f"  … and {len(report.errors) - limit} more")
    return lines


# --- choosing prompts ------------------------------------------------------------------------


def calibration_set(domain: Sequence[str], fallback: Sequence[str],
                    count: int = CALIBRATION_PROMPTS, normalizer: Normalizer = "simple",
                    language: str | None = None) -> list[str]:
    """`count` prompts that cover the most distinct words of the domain prompts (greedily,
    ties to the earlier), topped up from `fallback` (the built-in sentences) once the domain
    prompts add no new word."""
    chosen: list[str] = []
    covered: set[str] = set()
    for first, pool in ((True, domain), (False, fallback)):
        left = [prompt for prompt in pool if prompt not in chosen]
        while left and len(chosen) < count:
            best = max(left, key=lambda prompt: len(
                set(words_of(prompt, normalizer, language)) - covered))
            if first and not set(words_of(best, normalizer, language)) - covered:
                break  # the domain's words are covered: the rest is better spent elsewhere
            chosen.append(best)
            covered |= set(words_of(best, normalizer, language))
            left.remove(best)
    return chosen


@dataclass(frozen=True)
class Choice:
    """A candidate prompt, how much it is worth recording now, and why."""

    prompt: str
    score: float
    targets: tuple[str, ...]  # the failed words it holds (or sounds like), best first
    why: str


def _shown(word: str, prompt: str, normalizer: Normalizer, language: str | None) -> str:
    """`word` as the prompt writes it ("Kubernetes" for "kubernetes")."""
    return next((token.strip(".,;:!?\"'()") for token in prompt.split()
                 if words_of(token, normalizer, language) == [word]), word)


def rank(candidates: Sequence[str], report: ErrorReport, recorded: Sequence[str] = (),
         skip: Sequence[str] = (), normalizer: Normalizer = "simple",
         language: str | None = None) -> list[Choice]:
    """The candidates not in `recorded` (the clips the user trains on: their words earn less)
    or `skip` (the calibration clips), the most useful first (equal ones in their order)."""
    done = Counter(word for text in recorded for word in words_of(text, normalizer, language))
    recorded_texts = {tuple(words_of(text, normalizer, language))
                      for text in (*recorded, *skip)}
    failed = {errors.word: errors for errors in report.errors}

    def weight(word: str) -> float:
        return failed[word].weight / (1 + done[word])

    choices = []
    for prompt in candidates:
        words = words_of(prompt, normalizer, language)
        if tuple(words) in recorded_texts:
            continue
        exact = sorted({word for word in words if word in failed}, key=weight, reverse=True)
        similar: dict[str, str] = {}  # failed word → the prompt's word that sounds like it
        for word in dict.fromkeys(words):
            if word in failed:
                continue
            for target in failed:
                shared = len(ngrams(word) & failed[target].ngrams)
                if target not in exact and target not in similar and shared >= MIN_SHARED \
                        and shared >= SIMILAR * len(failed[target].ngrams):
                    similar[target] = word
        score = sum(weight(word) for word in exact) + \
            SIMILAR_WEIGHT * sum(weight(target) for target in similar)
        targets = (*exact, *sorted(similar, key=weight, reverse=True))
        choices.append(Choice(prompt, score, targets, _why(
            prompt, exact, similar, failed, done, normalizer, language)))
    return sorted(choices, key=lambda choice: -choice.score)


def _why(prompt: str, exact: list[str], similar: dict[str, str],
         failed: dict[str, WordErrors], done: Counter[str], normalizer: Normalizer,
         language: str | None) -> str:
    def show(word: str) -> str:
        return f"'{_shown(word, prompt, normalizer, language)}'"

    parts = [f"{show(word)}, {failed[word].heard_as()}" for word in exact[:2]]
    parts += [f"{show(word)}, which sounds like '{target}' ({failed[target].heard_as()})"
              for target, word in list(similar.items())[:max(0, 2 - len(parts))]]
    if not parts:
        return "nothing the model got wrong is in it: general speech"
    text = "contains " + "; and ".join(parts)
    again = [word for word in (*exact, *similar) if done[word]]
    if again:
        text += "; recorded already: " + ", ".join(
            f"'{word}' {times(done[word])}" for word in again[:2])
    return text


# --- after a run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """A word the calibration found wrong, and how the tuned model does on the same clips."""

    word: str
    before: WordErrors
    after: WordErrors | None  # None: the tuned transcripts were not of these clips

    @property
    def fixed(self) -> bool:
        return self.after is not None and self.after.failed == 0


def outcomes(before: ErrorReport, after: ErrorReport) -> list[Outcome]:
    """Each word `before` got wrong, with `after`'s result on it: still failing first."""
    found = [Outcome(errors.word, errors, after.words.get(errors.word))
             for errors in before.errors]
    return sorted(found, key=lambda outcome: outcome.fixed)

