"""Local executor: run a RunSpec's steps one after another as subprocesses, no cluster needed.

    voxtune run examples/demo.yaml          # what `make demo` does

Each step is the same entrypoint a Kubernetes Job runs (`voxtune <step> --run-dir RUN`), its
output goes to logs/<step>.log (and the terminal), and status.json records progress. Submitting
the same spec again skips finished steps; a different spec under an existing name is refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from voxtune.errors import ExitCode, UserError
from voxtune.runs import PHASE_OF_STEP, RunFolder, RunStatus, StepStatus, now
from voxtune.spec import RunSpec, Settings

# Steps this version can run; later steps are added here as they are built.
AVAILABLE_STEPS = ("prepare", "train")
LOG_TAIL_LINES = 20
HEADLINE = ("wer", "cer", "base_wer", "base_cer")


class LocalExecutor:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()

    def folder(self, name: str) -> RunFolder:
        return RunFolder(self.settings.runs_dir / name)

    def submit(self, spec: RunSpec, echo: Callable[[str], None] = print) -> RunStatus:
        """Run every step of `spec` in order and return the final status."""
        unavailable = [step for step in spec.steps if step not in AVAILABLE_STEPS]
        if unavailable:
            raise UserError(f"steps {unavailable} are not available in this version; "
                            f"set steps to a subset of {list(AVAILABLE_STEPS)}")
        run = self.folder(spec.name)
        if run.spec_file.exists() and run.read_spec() != spec:
            raise UserError(f"run {spec.name!r} already exists with a different spec "
                            f"({run.spec_file}); pick another name or delete that folder")
        run.write_spec(spec)
        status = run.read_status()
        for step in spec.steps:
            if status.steps.get(step, StepStatus()).state == "succeeded":
                echo(f"[{step}] already succeeded, skipping")
                continue
            status = self._run_step(run, status, step, echo)
            if status.phase == "Failed":
                return status
        status.phase, status.step, status.message = "Succeeded", None, "all steps succeeded"
        run.write_status(status)
        return status

    def _run_step(self, run: RunFolder, status: RunStatus, step: str,
                  echo: Callable[[str], None]) -> RunStatus:
        status.phase, status.step, status.message = PHASE_OF_STEP[step], step, f"running {step}"
        status.steps[step] = StepStatus(state="running", started=now())
        run.write_status(status)
        run.logs.mkdir(parents=True, exist_ok=True)
        command = step_command(run.read_spec(), step, run.path)
        with open(run.log(step), "w", encoding="utf-8") as log:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, bufsize=1)
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                log.flush()
                echo(f"[{step}] {line.rstrip()}")
            code = process.wait()
        result = status.steps[step]
        result.finished, result.exit_code = now(), code
        result.state = "succeeded" if code == 0 else "failed"
        status.metrics.update(headline_metrics(run.path))
        if code != 0:
            status.phase = "Failed"
            kind = "bad input or config" if code == ExitCode.USER_ERROR else f"exit code {code}"
            status.message = f"{step} failed ({kind}):\n{tail(run.log(step))}"
        run.write_status(status)
        return status

    def status(self, name: str) -> RunStatus:
        run = self.folder(name)
        if not run.path.is_dir():
            raise UserError(f"no run named {name!r} under {self.settings.runs_dir}")
        return run.read_status()

    def list(self) -> list[RunStatus]:
        runs = self.settings.runs_dir
        folders = sorted(runs.iterdir()) if runs.is_dir() else []
        return [RunFolder(path).read_status() for path in folders if path.is_dir()]

    def logs(self, name: str, step: str | None = None) -> str:
        run = self.folder(name)
        steps = [step] if step else [s for s in run.read_spec().steps if run.log(s).exists()]
        return "".join(f"==> {s} <==\n{run.log(s).read_text(encoding='utf-8')}" for s in steps
                       if run.log(s).exists())


def step_command(spec: RunSpec, step: str, run_dir: Path) -> list[str]:
    """The step's entrypoint; training on several GPUs runs one process per GPU (torchrun)."""
    entrypoint = ["-m", "voxtune", step, "--run-dir", str(run_dir)]
    if step == "train" and spec.resources.gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run",
                f"--nproc-per-node={spec.resources.gpus}", *entrypoint]
    return [sys.executable, *entrypoint]


def headline_metrics(run_dir: Path) -> dict[str, float]:
    """WER/CER base vs tuned from the train step's metrics.json, for status and listings."""
    path = run_dir / "metrics.json"
    if not path.exists():
        return {}
    metrics = json.loads(path.read_text(encoding="utf-8"))
    return {key: metrics[key] for key in HEADLINE if isinstance(metrics.get(key), (int, float))}


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])
