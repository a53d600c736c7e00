"""RunStatus, the status every backend reports, and what goes into it: progress, ETA, metrics,
whether the run holds a trained model, and what its publish step published."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from voxtune.run.steps import Phase

# A step may print `progress 120/300` lines (done/total units of its work, e.g. optimizer
# steps); both backends turn the newest one into RunStatus.progress and an ETA.
PROGRESS = re.compile(r"^progress (\d+)/(\d+)\s*$", re.MULTILINE)
HEADLINE = ("wer", "cer", "base_wer", "base_cer")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def progress_and_eta(steps_done: int, steps: int, step: str, output: str,
                     started: datetime | None, at: datetime) -> tuple[str, str | None]:
    """("1/3 train 120/300", estimated end of the step) from the newest progress line in the
    step's `output` and when it started; the end is rounded up to the minute (UTC)."""
    progress, eta = f"{steps_done}/{steps}", None
    found = PROGRESS.findall(output)
    if found:
        current, total = (int(n) for n in found[-1])
        progress += f" {step} {current}/{total}"
        if current and total > current and started:
            end = at + (at - started) * (total - current) / current
            eta = (end.replace(second=0, microsecond=0) + timedelta(minutes=1)).astimezone(
                timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return progress, eta


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
                        "NoSpace, InvalidSpec, DoesNotFit, Cancelled, Completed … (empty where the "
                        "backend has nothing to add to the message).")
    step: str | None = None
    message: str = ""
    steps: dict[str, StepStatus] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    progress: str = Field("", description="Steps done / steps, and the train step's own "
                          "progress when it reports one.")
    eta: str | None = Field(None, description="Estimated end of the running step (UTC).")
    trained: bool = Field(False, description="The train step left a trained model (final/): "
                          "the run can be published and tried.")
    published: Publication | None = Field(None, description="What the publish step published.")
    updated: str = Field(default_factory=now)
