"""A user's targeted recording: the domain text, the calibration clips with what the model heard,
and each run's transcripts of them — beside the workspace's recordings, never among them.

    VOXTUNE_HOME/users/<key>/calibration/state.json     text, language, model, the calibration
                                                          prompts, skipped prompts, the round
                                        /clips.jsonl     one row per calibration take (the last
                                                          take of a prompt counts)
                                        /clips/<id>.<ext> the takes
                                        /runs.json       run → {clip id: tuned transcript}

Calibration clips stay out of the training data on purpose: they are the user's held-out set,
so "fixed" after a run means the tuned model gets the word right in clips it never trained on.
The error report is rebuilt from these files on every call (a few clips: cheap), with the
transcripts of the round being recorded for: the base model's, or after "record more for the
words still wrong" the tuned run's.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from voxtune.data.calibrate import ErrorReport, error_report
from voxtune.files import write_atomic
from voxtune.ui.workspace import Workspace, safe_name

CALIBRATION = "calibration"


@dataclass
class State:
    text: str = ""
    language: str = "en"
    model: str = ""  # what transcribed the calibration clips (shown; the demo URL on a cluster)
    prompts: list[str] = field(default_factory=list)  # the calibration set, in order
    skipped: list[str] = field(default_factory=list)  # targeted prompts the user passed over
    round_of: str | None = None  # the run whose tuned transcripts the ranking targets
    active: bool = False  # the Record page prompts from here (else its built-in sentences)


class Calibration:
    """One user's calibration files (see the module docstring)."""

    def __init__(self, workspace: Workspace):
        self.folder = workspace.root / CALIBRATION

    state_file = property(lambda self: self.folder / "state.json")
    clips_file = property(lambda self: self.folder / "clips.jsonl")
    runs_file = property(lambda self: self.folder / "runs.json")

    def state(self) -> State:
        if not self.state_file.is_file():
            return State()
        return State(**json.loads(self.state_file.read_text(encoding="utf-8")))

    def save(self, state: State) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.state_file, json.dumps(asdict(state), ensure_ascii=False,
                                                 indent=1).encode())

    def start(self, state: State) -> None:
        """A new calibration: the earlier one's clips and run transcripts go."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.save(state)

    def clips(self) -> dict[str, dict[str, Any]]:
        """The latest take of each calibration prompt, by prompt."""
        if not self.clips_file.is_file():
            return {}
        rows = [json.loads(line) for line in self.clips_file.read_text(encoding="utf-8")
                .splitlines() if line.strip()]
        return {row["text"]: row for row in rows}

    def add(self, audio: Path, text: str, heard: str) -> dict[str, Any]:
        """Keep a take of calibration prompt `text` and what the model heard in it."""
        clip_id = uuid.uuid4().hex[:12]
        relative = f"clips/{clip_id}-{safe_name(audio.name)}"
        (self.folder / "clips").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(audio, self.folder / relative)
        row = {"id": clip_id, "audio_path": relative, "text": text, "heard": heard}
        with open(self.clips_file, "a", encoding="utf-8") as log:
            log.write(json.dumps(row, ensure_ascii=False) + "\n")
        return row

    def audio(self, row: dict[str, Any]) -> Path:
        return self.folder / row["audio_path"]

    def run_transcripts(self) -> dict[str, dict[str, str]]:
        if not self.runs_file.is_file():
            return {}
        return json.loads(self.runs_file.read_text(encoding="utf-8"))

    def set_run_transcripts(self, run: str, heard: dict[str, str]) -> None:
        found = {**self.run_transcripts(), run: heard}
        write_atomic(self.runs_file, json.dumps(found, ensure_ascii=False, indent=1).encode())

    def report(self, run: str | None = None) -> ErrorReport:
        """The error report of the calibration clips: the base model's transcripts, or `run`'s
        tuned ones (clips it has no transcript of are left out)."""
        state, clips = self.state(), self.clips().values()
        if run is None:
            pairs = [(row["text"], row["heard"]) for row in clips]
        else:
            tuned = self.run_transcripts().get(run, {})
            pairs = [(row["text"], tuned[row["id"]]) for row in clips if row["id"] in tuned]
        return error_report(pairs, language=state.language)
