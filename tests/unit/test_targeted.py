"""Targeted recording, pure: prompts cut from the user's text, the calibration error report (jiwer's
alignment), the chooser and its reasons, the after-run outcome — and bench/targeted.py's saved
result, on which the chooser is run again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voxtune.data.calibrate import (
    calibration_set,
    error_report,
    outcomes,
    rank,
    report_lines,
)
from voxtune.data.prompts import MAX_WORDS, MIN_WORDS, cut, pool
from voxtune.ui.phrases import PHRASES

RESULT = Path(__file__).resolve().parents[2] / "bench" / "results" / "targeted.json"
GLOSSARY = """Kubernetes
Helm chart
kubectl

The controller reconciles every FineTuneRun. Then it watches the Jobs!
The controller reconciles every FineTuneRun.
"""


@pytest.mark.parametrize("text, expected", [
    pytest.param(GLOSSARY, ["Kubernetes, Helm chart, kubectl.",
                            "The controller reconciles every FineTuneRun.",
                            "Then it watches the Jobs!"], id="glossary-joined-duplicates-dropped"),
    pytest.param("Call me. The train leaves at nine", ["Call me, The train leaves at nine."],
                 id="too-short-joins-the-next"),
    pytest.param("Voxtral", ["Voxtral."], id="a-lone-term-is-kept"),
    pytest.param("   \n\n ", [], id="blank"),
])
def test_cut_makes_readable_prompts(text: str, expected: list[str]) -> None:
    assert cut(text) == expected


def test_cut_splits_long_sentences_into_prompts_of_at_most_25_words() -> None:
    long = " ".join(f"word{index}" for index in range(60)) + ", and a clause after the comma."
    prompts = cut(long)
    assert all(MIN_WORDS <= len(prompt.split()) <= MAX_WORDS for prompt in prompts), prompts
    assert " ".join(prompts).count("word") == 60  # nothing lost


def test_pool_puts_the_users_text_first_without_repeating_a_builtin_sentence() -> None:
    builtin = PHRASES["en"][:3]
    found = pool(f"Helm charts install voxtune. {builtin[0].upper()}", builtin)
    assert found == ["Helm charts install voxtune.", builtin[0].upper(), *builtin[1:]]


PAIRS = [("Kubernetes runs Helm charts", "cooper netties runs charts"),
         ("The Kubernetes operator", "the cooper netties operator"),
         ("kubernetes is great", "kubernetes is grate")]


def test_the_report_keeps_what_each_word_was_heard_as_from_jiwers_alignment() -> None:
    report = error_report(PAIRS)
    worst = report.errors[0]
    # jiwer aligns "cooper" as an insertion before the substitution: it belongs to the word
    assert (worst.word, worst.failed, worst.said) == ("kubernetes", 2, 3)
    assert worst.heard_as() == "misheard as 'cooper netties' twice"
    assert report.words["helm"].heard_as() == "left out once"
    assert {errors.word for errors in report.errors} == {"kubernetes", "helm", "great"}
    assert " ku" in worst.ngrams and "kub" in worst.ngrams
    assert report.clips == 3 and report.wer == pytest.approx(6 / 10)  # an insertion counts
    assert report_lines(report)[1].split()[:4] == ["kubernetes", "wrong", "2", "of"]


def test_varied_failures_are_summed_up_and_a_word_always_wrong_comes_first() -> None:
    report = error_report([("seven four", "eleven four"), ("seven four", "four"),
                           ("seven four", "heaven for"), ("four", "for"), ("four", "fore"),
                           ("four", "four")])
    assert report.words["seven"].heard_as() == "wrong 3 times (as 'eleven', nothing, 'heaven')"
    # both failed 3 times; seven in 3 of 3 clips, four in 3 of 6
    assert [errors.word for errors in report.errors] == ["seven", "four"]


CANDIDATES = ["The weather is nice today.", "Helm installs the chart.",
              "Kubernetes schedules pods on nodes.", "Use kubectl to apply it.",
              "Kubernetes runs Helm charts"]


def test_the_chooser_ranks_by_failed_words_and_says_why() -> None:
    choices = rank(CANDIDATES, error_report(PAIRS), skip=[PAIRS[0][0]])
    assert [choice.prompt for choice in choices] == [
        "Kubernetes schedules pods on nodes.", "Helm installs the chart.",
        "Use kubectl to apply it.", "The weather is nice today."]  # the calibration one: skipped
    assert choices[0].why == "contains 'Kubernetes', misheard as 'cooper netties' twice"
    # kubectl shares the trigrams of "kubernetes": half the weight, and said so
    # failed 2 of 3 times: weight 2 × 2/3
    assert choices[2].score == pytest.approx(0.5 * 4 / 3) and "sounds like 'kubernetes'" in \
        choices[2].why
    assert choices[3].score == 0 and "nothing the model got wrong" in choices[3].why


def test_words_recorded_already_earn_less() -> None:
    report = error_report(PAIRS)
    fresh = rank(CANDIDATES, report)
    assert fresh[0].prompt.startswith("Kubernetes")
    recorded = ["Kubernetes again.", "Kubernetes once more.", "Kubernetes, a third time."]
    tired = rank(CANDIDATES, report, recorded=recorded, skip=[PAIRS[0][0]])
    # kubernetes: 4/3 / (1 + 3 clips) = 1/3 < helm's 1 / (1 + 0)
    assert tired[0].prompt == "Helm installs the chart."
    kubernetes = next(choice for choice in tired if choice.prompt.startswith("Kubernetes s"))
    assert kubernetes.score == pytest.approx(1 / 3)
    assert "recorded already: 'kubernetes' 3 times" in kubernetes.why


def test_the_calibration_set_covers_the_domain_vocabulary_first() -> None:
    domain = ["Helm installs charts.", "Helm installs charts quickly.",
              "Kubernetes schedules pods."]
    chosen = calibration_set(domain, PHRASES["en"], count=3)
    assert chosen[:2] == ["Helm installs charts quickly.", "Kubernetes schedules pods."]
    assert chosen[2] in PHRASES["en"]  # the near-duplicate adds one word; a sentence adds more


def test_outcomes_say_which_words_the_tuned_model_fixed() -> None:
    after = error_report([("Kubernetes runs Helm charts", "kubernetes runs charts"),
                          ("The Kubernetes operator", "the kubernetes operator"),
                          ("kubernetes is great", "kubernetes is great")])
    found = {outcome.word: outcome for outcome in outcomes(error_report(PAIRS), after)}
    assert found["kubernetes"].fixed and found["great"].fixed
    assert not found["helm"].fixed and found["helm"].after.heard_as() == "left out once"
    assert next(iter(found)) == "helm"  # still failing first


# --- bench/targeted.py's saved result: the chooser run again on it --------------------------


def test_the_benchmark_found_the_weak_word_and_targeted_beat_random() -> None:
    result = json.loads(RESULT.read_text(encoding="utf-8"))
    weak, prompts = result["weak_word"], result["prompts_per_arm"]
    report = error_report([tuple(pair) for pair in result["calibration"]["pairs"]])
    assert report.errors[0].word == weak, report_lines(report)
    chosen = rank(result["calibration"]["candidates"], report)[:prompts]
    assert all(weak in choice.prompt.split() for choice in chosen)
    assert [choice.prompt for choice in chosen] == result["arms"]["targeted"]["prompts"]
    draws = [arm for name, arm in result["arms"].items() if name.startswith("random")]
    assert len(draws) >= 3, "one random draw proves little"
    assert all(result["arms"]["targeted"]["weak_error"] < arm["weak_error"] for arm in draws), \
        result["arms"]


def test_the_runs_page_says_which_calibration_words_are_fixed() -> None:
    from voxtune.ui.views import calibration_outcomes

    after = error_report([("Kubernetes runs Helm charts", "kubernetes runs charts")])
    text = calibration_outcomes("ana-run", outcomes(error_report(PAIRS), after))
    assert text.startswith("**1 of 3 calibration words fixed** by ana-run")
    assert "| helm | left out once | still wrong: left out once |" in text
    assert "| kubernetes | misheard as 'cooper netties' twice | **fixed** |" in text
    assert "| great | misheard as 'grate' once | not in the checked clips |" in text
    assert "Check the words" in calibration_outcomes("ana-run", None)
