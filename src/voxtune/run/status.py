"""RunStatus, the status every backend reports, and what goes into it: progress, ETA, metrics."""

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


class RunStatus(BaseModel):
    """Same model for the local executor and the FineTuneRun status."""

    name: str
    phase: Phase = "Pending"
    step: str | None = None
    message: str = ""
    steps: dict[str, StepStatus] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    progress: str = Field("", description="Steps done / steps, and the train step's own "
                          "progress when it reports one.")
    eta: str | None = Field(None, description="Estimated end of the running step (UTC).")
    updated: str = Field(default_factory=now)
