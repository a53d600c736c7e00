"""The model card's numbers: the Results section and the `model-index` the Hub reads. Pure
functions of `ModelFacts`.

Everything is in percent here (model cards and the Open ASR Leaderboard show percents), the
fractions of metrics.json times 100, and each result names the normaliser it was scored with.
"""

from __future__ import annotations

from typing import Any

from voxtune.models.inference import TokenLimit
from voxtune.publish.card_facts import (
    SAMPLE_ROWS,
    ModelFacts,
    cell,
    clips_text,
    finite,
    in_table,
    is_hub_id,
    percent,
)


def normalizer_words(facts: ModelFacts) -> str:
    """The normaliser the numbers were scored with, as metrics.json names it."""
    return str(facts.metrics.get("normalizer") or f"{facts.spec.eval.normalizer}")


def _result(task_name: str, dataset: dict[str, Any], wer: Any, cer: Any,
            normalizer: str) -> dict[str, Any]:
    args = {"normalizer": normalizer}
    return {"task": {"type": "automatic-speech-recognition", "name": task_name},
            "dataset": dataset,
            "metrics": [{"type": "wer", "value": percent(wer), "name": "WER (%)", "args": args},
                        {"type": "cer", "value": percent(cer), "name": "CER (%)", "args": args}]}


def model_index(facts: ModelFacts) -> list[dict[str, Any]]:
    """The Hub's evaluation results: the user's eval split (of the weights published: the
    merged model's own numbers when it was merged) and the general set, each with its
    normaliser."""
    metrics = facts.metrics
    clips = metrics.get("clips")
    held_out = f"held-out eval split ({clips_text(clips)})" if clips else "held-out eval split"
    dataset = {"type": facts.dataset_ref if facts.on_hub and facts.dataset_ref else "custom",
               "name": f"{facts.name} {held_out}", "split": "eval"}
    prefix = "merged_" if facts.layout == "merged" and finite(metrics.get("merged_wer")) else ""
    results = [_result("Speech Recognition", dataset, metrics[f"{prefix}wer"],
                       metrics[f"{prefix}cer"], normalizer_words(facts))]
    general = facts.spec.eval.general
    if general is not None and finite(metrics.get("general_wer")):
        general_set = {"type": general.dataset if is_hub_id(general.dataset) else "custom",
                       "name": f"{general.dataset} ({clips_text(metrics.get('general_clips'))})",
                       "split": general.split}
        if general.config:
            general_set["config"] = general.config
        results.append(_result("Speech Recognition (general speech)", general_set,
                               metrics["general_wer"], metrics["general_cer"],
                               str(metrics.get("general_normalizer") or normalizer_words(facts))))
    return [{"name": facts.name, "results": results}]


def _score_rows(metrics: dict[str, Any], prefix: str, base_name: str,
                merged: bool) -> list[str]:
    rows = ["| model | WER | CER |", "|---|---:|---:|",
            f"| base `{base_name}` | {in_table(metrics.get(f'base_{prefix}wer'))} | "
            f"{in_table(metrics.get(f'base_{prefix}cer'))} |",
            f"| **fine-tuned** | **{in_table(metrics.get(f'{prefix}wer'))}** | "
            f"**{in_table(metrics.get(f'{prefix}cer'))}** |"]
    if merged:
        rows.append(f"| merged (these weights, re-scored) | {in_table(metrics['merged_wer'])} "
                    f"| {in_table(metrics.get('merged_cer'))} |")
    return rows


def general_section(facts: ModelFacts) -> list[str]:
    """"Did it forget?": the general set, base vs tuned."""
    metrics, general = facts.metrics, facts.spec.eval.general
    if general is None or not finite(metrics.get("general_wer")):
        return []
    lines = ["", "### General speech (did fine-tuning hurt other speech?)", "",
             f"{clips_text(metrics.get('general_clips', '?'))} of `{general.dataset}` "
             f"(split {general.split}), never trained on:", ""]
    lines += _score_rows(metrics, "general_", facts.base_preset or facts.spec.base_model, False)
    base = metrics.get("base_general_wer")
    if finite(base):
        change = 100 * (metrics["general_wer"] - base)
        lines += ["", f"WER change on general speech: {change:+.1f} points."]
    return lines


def results_section(facts: ModelFacts) -> str:
    metrics = facts.metrics
    if not facts.evaluated:
        return "## Results\n\nNot evaluated: the run had no held-out clips.\n"
    base_name = facts.base_preset or facts.spec.base_model
    merged = facts.layout == "merged" and finite(metrics.get("merged_wer"))
    lines = ["## Results", "",
             f"Word and character error rates in percent on "
             f"{clips_text(metrics.get('clips', '?'))} held out: corpus rates (all edits over "
             f"all reference words or characters), greedy decoding, up to "
             f"{_limit_words(facts)}; references and transcripts normalised with "
             f"{normalizer_words(facts)}. Lower is better.", ""]
    lines += _score_rows(metrics, "", base_name, merged)
    if finite(metrics.get("base_wer")) and metrics["base_wer"] > 0:
        change = 100 * (metrics["wer"] - metrics["base_wer"]) / metrics["base_wer"]
        lines += ["", f"Relative WER change: {change:+.1f} %."]
    if merged:
        lines += ["", f"The merged weights were transcribed again on the same clips before "
                  f"publishing: {metrics.get('merged_wer_drift', 0):g} points from the "
                  "evaluated adapter."]
    degenerate = [f"{metrics[key]} {label}" for key, label in
                  (("empty", "empty"), ("repetitive", "repetitive"),
                   ("max_length", "cut at the length limit")) if metrics.get(key)]
    if degenerate:
        lines += ["", f"Degenerate fine-tuned outputs: {', '.join(degenerate)}."]
    if metrics.get("cut_off"):
        lines += ["", "Cut off at the token limit (scored as they are): "
                  + ", ".join(f"`{clip}`" for clip in metrics["cut_off"]) + "."]
    lines += general_section(facts)
    samples = metrics.get("samples") or []
    if samples:
        lines += ["", "### Sample transcripts (held-out clips, as generated)", "",
                  "| reference | base | fine-tuned |", "|---|---|---|"]
        lines += [f"| {cell(row.get('reference'))} | {cell(row.get('base'))} | "
                  f"{cell(row.get('tuned'))} |" for row in samples[:SAMPLE_ROWS]]
    return "\n".join(lines) + "\n"


def _limit_words(facts: ModelFacts) -> str:
    limit = generation_limit(facts)
    if limit.fixed is not None:
        return f"{limit.fixed} new tokens per clip"
    return (f"{limit.per_second:g} new tokens per second of audio (at least {limit.floor}, "
            "the longest reference and then some)")


def generation_limit(facts: ModelFacts) -> TokenLimit:
    return TokenLimit.from_dict(facts.metrics.get("generation"), facts.spec.eval.max_new_tokens)
