"""The one transcription path: batched greedy generation and the token limit, on the tiny model.

The tiny random model never says end-of-sequence, so it is the model "that would go on": every
transcript runs to its limit, which shows exactly where each limit lies.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import speechlike
from tests.train_fixtures import shared_tiny_home, write_clip  # noqa: F401 (fixture)
from voxtune.models.inference import TokenLimit, transcribe, transcribe_batch
from voxtune.models.load import load
from voxtune.spec import EvalSpec
from voxtune.train.collator import transcript_ids
from voxtune.train.evaluate import evaluate_clips, token_limit

pytestmark = pytest.mark.usefixtures("shared_tiny_home")
# ~3 words a second for 30 s: fast speech, far more tokens than the old fixed limit of 128
LONG_REFERENCE = " ".join(["the quick brown fox jumps over the lazy dog near the river bank"] * 8)


def test_batch_of_n_gives_each_recording_its_batch_of_one_transcript() -> None:
    model, processor = load("tiny-random-4s")
    audios = [speechlike(seconds, seed=index) for index, seconds in enumerate([0.5, 3.9, 1.5, 2.7])]
    # different languages give prompts of different lengths: the batch is really left-padded
    languages = ["en", None, "fr", "auto"]
    limit = TokenLimit(per_second=4, floor=3)  # limits from 3 to 16 tokens in one batch
    alone = [transcribe(model, processor, audio, language, max_new_tokens=limit)
             for audio, language in zip(audios, languages, strict=True)]
    together = transcribe_batch(model, processor, audios, languages, max_new_tokens=limit)
    assert together == alone
    assert len({transcript.text for transcript in together}) == len(audios)


def test_a_30_second_reference_is_never_cut_off_by_the_limit(tmp_path: Path) -> None:
    model, processor = load("tiny-random")
    clip = write_clip(tmp_path, "long", 30.0, LONG_REFERENCE, "en")
    reference_tokens = len(transcript_ids(processor, LONG_REFERENCE))
    assert reference_tokens > 128  # what evaluation used to allow
    limit = token_limit(EvalSpec(), processor, [clip])
    assert limit.for_seconds(clip.duration) >= reference_tokens
    result = evaluate_clips(model, processor, [clip], tmp_path, EvalSpec(), "en", limit)
    generated = len(processor.tokenizer.encode(result.transcripts[0].text,
                                               add_special_tokens=False))
    # the model went on past the whole reference's length before the limit stopped it …
    assert generated >= reference_tokens
    # … and that stop is reported and listed, not silently scored as a transcript
    assert result.scores.max_length == 1 and result.scores.cut_off == ["long"]


def test_a_fixed_limit_replaces_the_rule(tmp_path: Path) -> None:
    model, processor = load("tiny-random-4s")
    clip = write_clip(tmp_path, "short", 2.0, "hello there", "en")
    settings = EvalSpec(max_new_tokens=3)
    limit = token_limit(settings, processor, [clip])
    result = evaluate_clips(model, processor, [clip], tmp_path, settings, "en", limit)
    assert limit.for_seconds(30) == 3 and result.transcripts[0].hit_max_length
