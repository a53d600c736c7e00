"""Fold a LoRA adapter into its base: a standalone model that loads without peft.

    voxtune merge RUN_DIR [--output FOLDER]

`voxtune publish` with `publish.merge` uses it too. The result loads with transformers alone
and runs as fast as the base model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from voxtune.errors import UserError
from voxtune.models.load import load_tuned
from voxtune.run.layout import FINAL, METRICS, SPEC


def merged_dtype(metrics: dict[str, Any]) -> torch.dtype:
    """The dtype a merge folds the adapter in: bf16, Voxtral's release dtype (a Mini publish
    pod holds 9.4 GB, not 18.7), unless the train step ran the base in fp32 (`precision` in
    its metrics.json: a CPU without native bf16, or `training.precision: fp32`). Rounding such
    a model to bf16 changed the tiny test model's transcripts by 150 WER points, which
    publish's export gate refuses. Read from what the train step recorded, never from the
    host doing the merge, so the same run merges to the same weights on any publish pod."""
    return torch.float32 if metrics.get("precision") == "fp32" else torch.bfloat16


def run_metrics(run: str) -> dict[str, Any]:
    """metrics.json of a run folder, or of the run a final/ folder belongs to ({} if none)."""
    folder = Path(run)
    path = (folder if (folder / FINAL).is_dir() else folder.parent) / METRICS
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def export_merged(run: str, output: Path) -> Path:
    """Fold a LoRA adapter into its base and save a standalone model + processor + spec, in
    `merged_dtype` of the run."""
    from peft import PeftModel

    tuned, spec = load_tuned(run, merged_dtype(run_metrics(run)))
    if not isinstance(tuned.model, PeftModel):
        raise UserError(f"{run}: not a LoRA run (final/ holds full weights already)")
    merged = tuned.model.merge_and_unload()
    staging = output.with_name(f".{output.name}.tmp")
    merged.save_pretrained(staging)
    tuned.processor.save_pretrained(staging)
    if spec is not None:
        (staging / SPEC).write_text(spec.to_yaml(), encoding="utf-8")
    if output.exists():
        raise UserError(f"{output} already exists; remove it or choose another --output")
    staging.rename(output)
    return output
