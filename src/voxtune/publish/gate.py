"""The export gate: a model that differs from the one the train step evaluated is scored again
before it is published, and refused when its WER moved.

Exports are known to drift (a merge in bf16, a quantization, an adapter that silently does
nothing once folded in); the card's number must be the number of what users load. Today the
merged model (`publish.merge`) is the one such export: it is transcribed on the same eval
clips with the same settings (normaliser, token limit, language) as the adapter was, both
numbers go into metrics.json and the card (`merged_wer`, `merged_cer`, `merged_wer_drift` in
points), and publish stops with exit 2, nothing written or uploaded, when
|merged WER − evaluated WER| exceeds `publish.max_wer_drift` percentage points.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from voxtune.data.manifest import MANIFEST, read_manifest
from voxtune.errors import UserError
from voxtune.models.inference import TokenLimit
from voxtune.publish.bundle import TrainedRun
from voxtune.run.layout import METRICS, RunFolder
from voxtune.run.status import format_percent

EXPORTS = ("merged",)  # layouts whose weights are not the ones the train step evaluated


def run_limit(run: TrainedRun) -> TokenLimit:
    """The token limit the run's evaluation used (the spec's eval.max_new_tokens wins)."""
    return TokenLimit.from_dict(run.metrics.get("generation"), run.spec.eval.max_new_tokens)


def drift_problem(evaluated: float, exported: float, max_points: float, layout: str) -> str | None:
    """Why the export may not be published (None when its WER stayed within `max_points`)."""
    drift = 100 * abs(exported - evaluated)
    if math.isfinite(drift) and drift <= max_points:
        return None
    return (f"the {layout} model's WER on the eval split is {format_percent(exported)} where "
            f"the evaluated model's was {format_percent(evaluated)}: a drift of {drift:.1f} "
            f"points, over publish.max_wer_drift ({max_points:g}). Nothing was published. The "
            "export changed what the model transcribes: publish the adapter (without "
            "--merge), or raise publish.max_wer_drift if the change is expected")


def check_export(run: TrainedRun, staged: Path, layout: str, max_points: float) -> dict[str, Any]:
    """Score the model staged in `staged` (a `layout` export) like the train step scored the
    run, add `<layout>_wer`, `_cer`, `_wer_drift` to the run's metrics and the staged
    metrics.json, and raise UserError when it drifted; {} when nothing differs."""
    from voxtune.models.load import load_tuned
    from voxtune.train.evaluate import evaluate_clips

    evaluated = run.metrics.get("wer")
    if layout not in EXPORTS or not isinstance(evaluated, (int, float)):
        return {}  # the evaluated weights themselves, or nothing to compare with
    # the run's own prepared/, else the folder it was trained from (recorded by the train step)
    prepared = RunFolder(run.run_dir).prepared
    if not (prepared / MANIFEST).is_file() and run.metrics.get("prepared"):
        prepared = Path(run.metrics["prepared"])
    scored = {sample["id"] for sample in run.metrics.get("samples") or []}
    clips = [clip for clip in read_manifest(prepared, "eval") if clip.id in scored] \
        if (prepared / MANIFEST).is_file() else []
    if not clips:
        raise UserError(f"{prepared}: the eval clips the run was scored on are gone, so the "
                        f"{layout} model cannot be checked against them; publish without "
                        "--merge, or restore the prepared folder")
    exported, _ = load_tuned(str(staged))
    result = evaluate_clips(exported.model, exported.processor, clips, prepared,
                            run.spec.eval, run.spec.language, run_limit(run))
    record = {f"{layout}_wer": result.scores.wer, f"{layout}_cer": result.scores.cer,
              f"{layout}_wer_drift": round(100 * abs(result.scores.wer - evaluated), 3)}
    print(f"export gate: {layout} model WER {format_percent(result.scores.wer)}, evaluated "
          f"model {format_percent(evaluated)} ({len(clips)} eval clips)", flush=True)
    problem = drift_problem(evaluated, result.scores.wer, max_points, layout)
    if problem:
        raise UserError(problem)
    run.metrics.update(record)
    (staged / METRICS).write_text(json.dumps(run.metrics, indent=2, ensure_ascii=False) + "\n",
                                  encoding="utf-8")
    return record
