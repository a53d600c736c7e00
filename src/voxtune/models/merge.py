"""Fold a LoRA adapter into its base: a standalone model that loads without peft.

    voxtune merge RUN_DIR [--output FOLDER]

`voxtune publish` with `publish.merge` uses it too. The result loads with transformers alone
and runs as fast as the base model.
"""

from __future__ import annotations

from pathlib import Path

from voxtune.errors import UserError
from voxtune.models.load import load_tuned
from voxtune.run.layout import SPEC


def export_merged(run: str, output: Path) -> Path:
    """Fold a LoRA adapter into its base and save a standalone model + processor + spec, in
    the dtype the run's evaluation ran the adapter in (`load.inference_dtype`): bf16 for a run
    on bf16 hardware (Voxtral's release dtype; a Mini publish pod holds 9.4 GB, not 18.7),
    fp32 for one trained in fp32. Rounding an fp32-evaluated model to bf16 here changed the
    transcripts of the tiny test model by 150 WER points, which publish's export gate refuses:
    a merge must give users the model the card's number was measured on."""
    from peft import PeftModel

    tuned, spec = load_tuned(run)
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
