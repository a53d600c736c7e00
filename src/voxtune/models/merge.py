"""Fold a LoRA adapter into its base: a standalone model that loads without peft.

    voxtune merge RUN_DIR [--output FOLDER]

`voxtune publish` with `publish.merge` uses it too. The result loads with transformers alone
and runs as fast as the base model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from voxtune.errors import UserError
from voxtune.models.load import load_tuned
from voxtune.run.layout import SPEC

# The dtype Mistral releases Voxtral in: half of fp32's memory on the host that merges (a publish
# pod: Mini 9.4 GB, not 18.7), and what users expect to load, whatever this CPU computes fast.
MERGED_DTYPE = torch.bfloat16


def export_merged(run: str, output: Path) -> Path:
    """Fold a LoRA adapter into its base and save a standalone model + processor + spec, in
    MERGED_DTYPE."""
    from peft import PeftModel

    tuned, spec = load_tuned(run, MERGED_DTYPE)
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
