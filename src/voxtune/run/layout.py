"""Where everything lives: VOXTUNE_HOME's runs and registry, and every artifact of a run folder.

    $VOXTUNE_HOME/runs/<run>/spec.yaml        the resolved RunSpec (what runs)
                             prepared/        manifest.jsonl, rejected.jsonl, audio/   (prepare)
                             checkpoints/     rolling trainer checkpoints              (train)
                             final/           what a user loads, with its spec.yaml    (train)
                             base-eval.json   the base model's scores, cached          (train)
                             general/         eval.general's clips, prepared           (train)
                             metrics.json     WER/CER base vs tuned, losses, samples   (train)
                             published.json   where the model went, no token           (publish)
                             trackio/         the metrics dashboard's store            (train)
                             merged/          `voxtune merge`'s default output
                             logs/<step>.log  each step's full output (<step>-node<N>.log: node N's)
                             status.json      RunStatus
    $VOXTUNE_HOME/registry/<model>/<version>/ published models                         (publish)

Steps communicate only through this folder; nothing else spells these names.
"""

from __future__ import annotations

import json
from pathlib import Path

from voxtune.errors import UserError
from voxtune.files import child_path, write_atomic
from voxtune.run.status import Publication, RunStatus, now
from voxtune.spec import RUN_NAME, RunSpec, read_resolved_spec

SPEC = "spec.yaml"  # also beside every model voxtune writes (final/, registry versions, Hub)
METRICS = "metrics.json"  # also in every published version
FINAL = "final"
REGISTRY = "registry"


def runs_dir(home: Path) -> Path:
    return Path(home) / "runs"


def registry_dir(home: Path) -> Path:
    """The local model registry (publish's default destination)."""
    return Path(home) / REGISTRY


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
    def of(cls, path: Path) -> RunFolder:
        """The run folder of `path`, which is a run folder or its final/."""
        path = Path(path)
        return cls(path.parent if path.name == FINAL else path)

    @classmethod
    def named(cls, home: Path, name: str) -> RunFolder:
        """The folder of run `name` under VOXTUNE_HOME `home`, for a name that came from a user:
        it must follow the run-name rule and stay inside the runs folder (`..`, `/x` or a
        symlink out are refused), so no command can read, write or delete outside it."""
        return cls(child_path(runs_dir(home), check_run_name(name), RUN_NAME, "run"))

    def sibling(self, name: str) -> RunFolder:
        """Run `name`'s folder beside this one (the same runs folder, locally or on a pod's
        volume), with the same checks as `named`."""
        return RunFolder(child_path(self.path.parent, check_run_name(name), RUN_NAME, "run"))

    spec_file = property(lambda self: self.path / SPEC)
    status_file = property(lambda self: self.path / "status.json")
    prepared = property(lambda self: self.path / "prepared")
    checkpoints = property(lambda self: self.path / "checkpoints")
    final = property(lambda self: self.path / FINAL)
    final_spec_file = property(lambda self: self.final / SPEC)  # what the model was trained with
    base_eval = property(lambda self: self.path / "base-eval.json")
    general = property(lambda self: self.path / "general")  # eval.general's prepared clips
    metrics = property(lambda self: self.path / METRICS)
    published = property(lambda self: self.path / "published.json")
    trackio = property(lambda self: self.path / "trackio")
    merged = property(lambda self: self.path / "merged")
    logs = property(lambda self: self.path / "logs")

    def log(self, step: str, node: int = 0) -> Path:
        """The step's log; a multi-node train step's other nodes each keep their own."""
        return self.logs / (f"{step}.log" if node == 0 else f"{step}-node{node}.log")

    def read_spec(self) -> RunSpec:
        return read_resolved_spec(self.spec_file)

    def write_spec(self, spec: RunSpec) -> None:
        write_atomic(self.spec_file, spec.to_yaml().encode())

    def read_published(self) -> Publication | None:
        """What this run's publish step last published, if it did."""
        if not self.published.is_file():
            return None
        return Publication.model_validate_json(self.published.read_text(encoding="utf-8"))

    def write_published(self, record: Publication) -> None:
        write_atomic(self.published, record.model_dump_json(indent=2).encode())

    def read_status(self) -> RunStatus:
        if not self.status_file.exists():
            return RunStatus(name=self.path.name)
        return RunStatus.model_validate_json(self.status_file.read_text())

    def write_status(self, status: RunStatus) -> None:
        status.updated = now()
        write_atomic(self.status_file, json.dumps(status.model_dump(), indent=2).encode())
