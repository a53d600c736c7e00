"""RunStatus, the status every backend reports, and what goes into it: progress, metrics,
whether the run holds a trained model, and what its publish step published."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from voxtune.run.progress import PhaseProgress, parse
from voxtune.run.steps import TERMINAL, Phase

# the eval split base vs tuned, the general set ("did it forget?"), the merged export
HEADLINE = ("wer", "cer", "base_wer", "base_cer", "general_wer", "general_cer",
            "base_general_wer", "base_general_cer", "merged_wer")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def step_progress(steps_done: int, steps: int, step: str,
                  output: str) -> tuple[str, PhaseProgress | None]:
    """("1/3 train 120/300", the running phase) from the newest progress line (voxtune.run.
    progress) in the running step's `output`; the same on both backends."""
    current = parse(output, step)
    text = f"{steps_done}/{steps}"
    return (f"{text} {current.phase} {current.done}/{current.total}" if current else text,
            current)


def headline_metrics(metrics_file: Path) -> dict[str, float]:
    """WER/CER base vs tuned from the train step's metrics file, for status and listings."""
    if not metrics_file.exists():
        return {}
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    return {key: metrics[key] for key in HEADLINE if isinstance(metrics.get(key), (int, float))}


def format_percent(value: Any, unit: str = "%", missing: str = "-") -> str:
    """A WER/CER the way people read it ("12.5%"); `missing` when it was not measured."""
    measured = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)
    return f"{100 * value:.1f}{unit}" if measured else missing


class StepStatus(BaseModel):
    state: Literal["pending", "running", "succeeded", "failed"] = "pending"
    started: str | None = None
    finished: str | None = None
    exit_code: int | None = None


class Publication(BaseModel):
    """What a publish step published (RUN/published.json, and in the run's status): public
    places and versions only; a token never goes in here."""

    name: str = Field(description="Model name (registry name, or the Hub repo's name).")
    model: str = Field(description="The registry version folder, or the Hub commit URL.")
    layout: str = Field(description="adapter, merged or full.")
    version: int | None = Field(None, description="Registry version number (local registry).")
    dataset: str | None = Field(None, description="Where the dataset went, if published.")
    space: str | None = Field(None, description="The demo Space (Hub id or folder), if any.")
    commits: dict[str, str] = Field(default_factory=dict,
                                    description="Hub repo → commit URL, one per repo written.")


class RunStatus(BaseModel):
    """Same model for the local executor and the FineTuneRun status."""

    name: str
    phase: Phase = "Pending"
    reason: str = Field("", description="Why the run is in its phase, one word: Running, "
                        "Unschedulable, ImagePullBackOff, QueueWaiting, StepFailed, "
                        "NoSpace, InvalidSpec, DoesNotFit, Rejected, Cancelled, Completed … (empty "
                        "where the "
                        "backend has nothing to add to the message).")
    step: str | None = None
    message: str = ""
    steps: dict[str, StepStatus] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    progress: str = Field("", description="Steps done / steps, and the running phase's units "
                          "done / total when its step reports them (kubectl's column).")
    current: PhaseProgress | None = Field(None, description="The running step's phase (model "
                                          "load, evaluation, training, publish): done / total, "
                                          "seconds elapsed and left. None once the run ended.")
    trained: bool = Field(False, description="The train step left a trained model (final/): "
                          "the run can be published and tried.")
    published: Publication | None = Field(None, description="What the publish step published.")
    wer: str = Field("", description="Word error rate on the eval split, base → tuned, in "
                     "percent (\"31.0% → 12.0%\"; kubectl's column); from `metrics`.")
    updated: str = Field(default_factory=now)

    @model_validator(mode="after")
    def _derived(self) -> RunStatus:
        if self.phase in TERMINAL:  # a finished or cancelled run has nothing left to estimate
            self.current = None
        self.wer = wer_change(self.metrics)
        return self


def wer_change(metrics: dict[str, float]) -> str:
    """"31.0% → 12.0%" (base → tuned), or "" before the run has scores."""
    if "wer" not in metrics:
        return ""
    return f"{format_percent(metrics.get('base_wer'))} → {format_percent(metrics['wer'])}"
