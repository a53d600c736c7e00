"""The pipeline's steps and the phases a run goes through, declared once for every backend."""

from __future__ import annotations

from typing import Literal, get_args

Step = Literal["prepare", "train", "publish"]
STEPS: tuple[Step, ...] = get_args(Step)  # in pipeline order

# Queued: submitted, waiting for a free slot of the local executor (VOXTUNE_LOCAL_MAX_RUNS).
Phase = Literal["Pending", "Queued", "Preparing", "Training", "Publishing", "Succeeded",
                "Failed", "Cancelled"]
PHASES: tuple[Phase, ...] = get_args(Phase)
TERMINAL: tuple[Phase, ...] = ("Succeeded", "Failed", "Cancelled")
PHASE_OF_STEP: dict[Step, Phase] = {"prepare": "Preparing", "train": "Training",
                                    "publish": "Publishing"}
