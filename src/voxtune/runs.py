"""The run folder: the only way steps talk to each other, and the status every backend reports.

    runs/<run>/spec.yaml            the resolved RunSpec
               prepared/            manifest.jsonl, rejected.jsonl, audio/
               checkpoints/ final/ card/ space/ trackio/
               logs/<step>.log      each step's full output
               status.json          RunStatus below
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from voxtune.errors import UserError
from voxtune.files import child_path, write_atomic
from voxtune.spec import RUN_NAME, RunSpec, read_yaml

# Queued: submitted, waiting for a free slot of the local executor (VOXTUNE_LOCAL_MAX_RUNS).
Phase = Literal["Pending", "Queued", "Preparing", "Training", "Publishing", "Succeeded",
                "Failed", "Cancelled"]
TERMINAL: tuple[Phase, ...] = ("Succeeded", "Failed", "Cancelled")
PHASE_OF_STEP: dict[str, Phase] = {"prepare": "Preparing", "train": "Training",
                                   "publish": "Publishing"}


# A step may print `progress 120/300` lines (done/total units of its work, e.g. optimizer
# steps); both backends turn the newest one into RunStatus.progress and an ETA.
PROGRESS = re.compile(r"^progress (\d+)/(\d+)\s*$", re.MULTILINE)


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


def check_run_name(name: str) -> str:
    """`name` if it is a valid run name; a UserError naming the rule otherwise."""
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        raise UserError(f"{name!r} is not a valid run name: 1-40 lowercase letters, digits or "
                        "'-', starting and ending with a letter or digit")
    return name


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def named(cls, runs_dir: Path, name: str) -> RunFolder:
        """The folder of run `name` under `runs_dir`, for a name that came from a user: it must
        follow the run-name rule and stay inside `runs_dir` (`..`, `/x` or a symlink out are
        refused), so no command can read, write or delete outside it."""
        return cls(child_path(runs_dir, check_run_name(name), RUN_NAME, "run"))

    spec_file = property(lambda self: self.path / "spec.yaml")
    status_file = property(lambda self: self.path / "status.json")
    prepared = property(lambda self: self.path / "prepared")
    logs = property(lambda self: self.path / "logs")

    def log(self, step: str) -> Path:
        return self.logs / f"{step}.log"

    def read_spec(self) -> RunSpec:
        return RunSpec.model_validate(read_yaml(self.spec_file))

    def write_spec(self, spec: RunSpec) -> None:
        write_atomic(self.spec_file, spec.to_yaml().encode())

    def read_status(self) -> RunStatus:
        if not self.status_file.exists():
            return RunStatus(name=self.path.name)
        return RunStatus.model_validate_json(self.status_file.read_text())

    def write_status(self, status: RunStatus) -> None:
        status.updated = now()
        write_atomic(self.status_file, json.dumps(status.model_dump(), indent=2).encode())
