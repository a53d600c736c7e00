"""The one interface every backend implements and `voxtune.Client` is written against.

A new backend (Slurm, Ray, …) is one module in this package with a class that has these
methods, plus its name in `voxtune.client.BACKENDS`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from voxtune.run.status import RunStatus
from voxtune.spec import RunSpec


class Executor(Protocol):
    def load(self, path: Path) -> RunSpec:
        """A RunSpec or FineTuneRun file as this backend runs it (user input: layered, with
        paths resolved as the backend's machines see them)."""
        ...

    def resource(self, spec: RunSpec) -> dict[str, Any] | None:
        """The object `submit(spec)` creates on this backend (a FineTuneRun), for a preview;
        None where the spec alone is what runs."""
        ...

    def submit(self, spec: RunSpec) -> RunStatus:
        """Start the run and return its status at once; the same spec again is a no-op, a
        different spec under an existing name is refused."""
        ...

    def status(self, name: str) -> RunStatus: ...

    def spec(self, name: str) -> RunSpec:
        """The spec the run was submitted with."""
        ...

    def list(self) -> list[RunStatus]: ...

    def logs(self, name: str, step: str | None = None, node: int = 0) -> str:
        """The steps' logs; `node`: which node of a multi-node train step (0: rank 0's)."""
        ...

    def follow(self, name: str, step: str | None = None, node: int = 0) -> Iterator[str]:
        """The logs as they are written, until the run (or `step`) ends."""
        ...

    def cancel(self, name: str) -> RunStatus: ...

    def delete(self, name: str) -> None: ...

    def wait(self, name: str, timeout: float | None = None) -> RunStatus:
        """Block until Succeeded, Failed or Cancelled; TimeoutError after `timeout` seconds."""
        ...
