"""WER/CER scoring: the normalisers, corpus rates, cut-offs, and `voxtune wer` on real files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from voxtune.cli import main
from voxtune.models.inference import TokenLimit
from voxtune.train.scoring import normalize, score

SAME_WORDS = [  # (reference as spoken, how Voxtral writes it)
    ("twenty five percent", "25%"),
    ("the colour of the sea", "the color of the sea"),
    ("mister smith is well known", "Mr. Smith is well-known."),
    ("it is twelve dollars", "It's $12."),
]


@pytest.mark.parametrize(("reference", "hypothesis"), SAME_WORDS,
                         ids=[pair[1] for pair in SAME_WORDS])
def test_whisper_normaliser_scores_formatting_as_no_error(reference: str, hypothesis: str) -> None:
    scores = score([reference], [hypothesis], normalizer="whisper", languages=["en"])
    assert scores.wer == 0 and scores.cer == 0
    assert "EnglishTextNormalizer" in scores.normalizer


@pytest.mark.parametrize(("reference", "hypothesis"), SAME_WORDS[:2],
                         ids=[pair[1] for pair in SAME_WORDS[:2]])
def test_simple_normaliser_keeps_formatting_differences(reference: str, hypothesis: str) -> None:
    assert score([reference], [hypothesis], normalizer="simple", languages=["en"]).wer > 0


@pytest.mark.parametrize(("normalizer", "language", "text", "expected"), [
    ("simple", "en", "A well-known, fine day!", "a well known fine day"),
    ("none", "en", "  Mr.  Smith ", "Mr. Smith"),
    ("whisper", "sv", "Hej, världen!", "hej världen"),  # basic normaliser: no English rules
    ("whisper", None, "Twenty-five", "twenty five"),
], ids=["simple-splits-hyphens", "none", "basic-for-swedish", "basic-without-language"])
def test_normalisers(normalizer: str, language: str | None, text: str, expected: str) -> None:
    assert normalize(text, normalizer, language) == expected


def test_corpus_rates_weigh_every_word_the_same() -> None:
    # 1 error in 1 word and 0 in 9: the corpus WER is 1/10, not the mean of 1.0 and 0.0
    references = ["hello", "one two three four five six seven eight nine"]
    hypotheses = ["goodbye", "one two three four five six seven eight nine"]
    scores = score(references, hypotheses, normalizer="simple", languages=["en", "en"])
    assert scores.wer == pytest.approx(0.1) and scores.words == 10


def test_cut_off_transcripts_are_scored_counted_and_listed() -> None:
    scores = score(["a b c d", "e f"], ["a b", "e f"], normalizer="none", languages=[None, None],
                   cut_off=[True, False], ids=["long", "short"])
    assert scores.wer == pytest.approx(2 / 6)  # the unfinished transcript still counts
    assert scores.max_length == 1 and scores.cut_off == ["long"]
    assert scores.wer_complete == 0


def test_token_limit_follows_duration_but_never_below_the_floor() -> None:
    limit = TokenLimit(per_second=15, floor=40)
    assert limit.for_seconds(1) == 40 and limit.for_seconds(30) == 450
    assert TokenLimit(fixed=7).for_seconds(30) == 7
    recorded = TokenLimit.from_dict(limit.as_dict())
    assert recorded == limit and TokenLimit.from_dict(limit.as_dict(), 9).fixed == 9


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_wer_command_plain_text_in_percent(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ref = write(tmp_path / "ref.txt", [pair[0] for pair in SAME_WORDS] + ["one two three"])
    hyp = write(tmp_path / "hyp.txt", [pair[1] for pair in SAME_WORDS] + ["one two four"])
    assert main(["wer", "--ref", str(ref), "--hyp", str(hyp), "--language", "en"]) == 0
    out = capsys.readouterr().out
    # one wrong word among the normalised references' 15 ("25%" is one word)
    assert "WER 6.7%" in out and "15 reference words" in out and "EnglishTextNormalizer" in out


def test_wer_command_jsonl_by_id_as_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ref = write(tmp_path / "ref.jsonl", [json.dumps({"id": "a", "text": "the colour"}),
                                         json.dumps({"id": "b", "text": "hello world"})])
    hyp = write(tmp_path / "hyp.jsonl", [json.dumps({"id": "b", "text": "hello word"}),
                                         json.dumps({"id": "a", "text": "the color"})])
    assert main(["wer", "--ref", str(ref), "--hyp", str(hyp), "--normalizer", "simple",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["wer"] == pytest.approx(0.5) and result["utterances"] == 2
    assert result["normalizer"].startswith("simple") and math.isfinite(result["cer"])


@pytest.mark.parametrize(("ref", "hyp", "message"), [
    (["a", "b"], ["a"], "2 lines and --hyp 1"),
    (None, ["a"], "no such file"),
], ids=["line-count", "missing-file"])
def test_wer_command_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture,
                                 ref: list[str] | None, hyp: list[str], message: str) -> None:
    ref_path = write(tmp_path / "ref.txt", ref) if ref else tmp_path / "absent.txt"
    hyp_path = write(tmp_path / "hyp.txt", hyp)
    assert main(["wer", "--ref", str(ref_path), "--hyp", str(hyp_path)]) == 2
    assert message in capsys.readouterr().err


def test_wer_command_needs_every_reference_id(tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    ref = write(tmp_path / "ref.jsonl", [json.dumps({"id": "a", "text": "x"})])
    hyp = write(tmp_path / "hyp.jsonl", [json.dumps({"id": "z", "text": "x"})])
    assert main(["wer", "--ref", str(ref), "--hyp", str(hyp)]) == 2
    assert "no text for 1 reference ids: a" in capsys.readouterr().err
