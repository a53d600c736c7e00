"""The run folder: the only way steps talk to each other, and the status every backend reports.

    runs/<run>/spec.yaml            the resolved RunSpec
               prepared/            manifest.jsonl, rejected.jsonl, audio/
               checkpoints/ final/ card/ space/ trackio/
               logs/<step>.log      each step's full output
               status.json          RunStatus below
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from voxtune.files import write_atomic
from voxtune.spec import RunSpec, read_yaml

Phase = Literal["Pending", "Preparing", "Training", "Publishing", "Succeeded", "Failed",
                "Cancelled"]
PHASE_OF_STEP: dict[str, Phase] = {"prepare": "Preparing", "train": "Training",
                                   "publish": "Publishing"}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
    updated: str = Field(default_factory=now)


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)

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
