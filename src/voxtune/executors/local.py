"""Local executor: run a RunSpec's steps one after another as subprocesses, no cluster needed.

    voxtune run my-run.yaml                 # in the foreground (`run` below; `voxtune demo` too)
    voxtune submit my-run.yaml              # detached (`submit`): `voxtune logs --follow` watches

Each step is the same entrypoint a Kubernetes Job runs (`voxtune <step> --run-dir RUN`), its
output goes to logs/<step>.log (and the terminal), and status.json records progress. Submitting
the same spec again skips finished steps (and resumes a cancelled or failed run); a different spec
under an existing name is refused. `cancel` sends SIGTERM to the running step (train saves a
checkpoint).

One runner per run: the runner holds an exclusive lock on the run folder's `runner.lock` while it
goes through the steps, so a second submit of a running run is a no-op. The kernel drops the lock
when the runner dies, however it dies, so a killed runner never leaves a run stuck. At most
`VOXTUNE_LOCAL_MAX_RUNS` runs (default 1) go through their steps at once; the others wait as
Queued, holding one of the slot locks under VOXTUNE_HOME/.local-slots/ once they start.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from voxtune.errors import UserError
from voxtune.run.layout import RunFolder, runs_dir
from voxtune.run.process import claim_run_folder, failure_message, run_logged, step_command, tail
from voxtune.run.progress import PhaseProgress, describe, parse, worth_showing
from voxtune.run.status import RunStatus, StepStatus, headline_metrics, now, step_progress
from voxtune.run.steps import PHASE_OF_STEP, TERMINAL
from voxtune.spec import RUN_NAME, RunSpec, Settings, load_user_spec

POLL_S = 0.2
QUEUE_POLL_S = 1.0  # how often a queued run looks for a free slot
# A probe of the runner lock (cancel, delete, submit) holds it for microseconds; a runner that
# finds it taken retries this long before concluding another runner owns the run.
LOCK_RETRY_S = 1.0


class LocalExecutor:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()

    def folder(self, name: str) -> RunFolder:
        return RunFolder.named(self.settings.home, name)

    def load(self, path: Path) -> RunSpec:
        return load_user_spec(path)

    def resource(self, spec: RunSpec) -> None:
        """Nothing: a local run is its spec.yaml (the protocol asks for the backend's object)."""
        return None

    def submit(self, spec: RunSpec) -> RunStatus:
        """Start the steps of `spec` in a background process and return at once (then `wait`,
        `logs`, `cancel`). A run that is already running is left alone (its status is
        returned)."""
        run, running = self._claim(spec)
        if running is not None:
            return running
        status = run.read_status()
        if status.phase == "Succeeded":
            return status  # nothing to run
        status = self._new_attempt(run, status)
        run.logs.mkdir(parents=True, exist_ok=True)
        with open(run.logs / "runner.log", "ab") as log:
            subprocess.Popen([sys.executable, "-m", "voxtune.executors.local", spec.name],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True,
                             env={**os.environ, "VOXTUNE_HOME": str(self.settings.home)})
        return status

    def run(self, spec: RunSpec, echo: Callable[[str], None] = print) -> RunStatus:
        """Run every step of `spec` in order in this process and return the final status
        (`voxtune run`, the demo). A run that is already running is left alone."""
        run, running = self._claim(spec)
        if running is not None:
            return running
        status = run.read_status()
        if status.phase != "Succeeded":  # a succeeded run only reports its steps as done
            self._new_attempt(run, status)
        return self.run_steps(spec.name, echo)

    def _claim(self, spec: RunSpec) -> tuple[RunFolder, RunStatus | None]:
        """The run's folder, holding `spec`; with the status of the attempt already going when
        another runner is at it (then there is nothing to start)."""
        run = self.folder(spec.name)
        claim_run_folder(run, spec)
        if _runner_alive(run):
            if not _cancel_file(run).exists():
                return run, run.read_status()  # the same run, already going: a no-op
            self._wait_for_runner(run)  # a cancelled runner is stopping: resume after it
        return run, None

    @staticmethod
    def _new_attempt(run: RunFolder, status: RunStatus) -> RunStatus:
        _cancel_file(run).unlink(missing_ok=True)  # submitting again resumes a cancelled run
        # A new attempt starts now: `wait` must not mistake the previous attempt's Failed or
        # Cancelled for this one's result.
        status.phase, status.step, status.message, status.current = (
            "Pending", None, "submitted; starting", None)
        run.write_status(status)
        return status

    def run_steps(self, name: str, echo: Callable[[str], None] = print) -> RunStatus:
        """The steps of an already submitted run that have not succeeded yet, in order; a no-op
        returning the status when another runner already owns the run."""
        run = self.folder(name)
        spec = run.read_spec()
        with _runner_lock(run) as owned:
            if not owned:
                echo(f"run {name!r} is already being run by another process")
                return run.read_status()
            _write_pid(_runner_file(run))
            try:
                with _slot(self.settings.home, self.settings.local_max_runs,
                           lambda: self._queued(run), lambda: _cancel_file(run).exists()) as got:
                    if not got:
                        return self._cancelled(run, run.read_status())
                    return self._steps(run, spec, echo)
            finally:
                _runner_file(run).unlink(missing_ok=True)

    def _queued(self, run: RunFolder) -> None:
        status = run.read_status()
        if status.phase != "Queued":
            limit = self.settings.local_max_runs
            status.phase, status.message = "Queued", (
                f"waiting for a free slot: {limit} run{'s' if limit > 1 else ''} at a time on "
                "this machine (VOXTUNE_LOCAL_MAX_RUNS)")
            run.write_status(status)

    def _wait_for_runner(self, run: RunFolder, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while _runner_alive(run):
            if time.monotonic() > deadline:
                raise UserError(f"run {run.path.name!r} is still running after cancel; try "
                                "again")
            time.sleep(POLL_S)

    def _steps(self, run: RunFolder, spec: RunSpec, echo: Callable[[str], None]) -> RunStatus:
        status = run.read_status()
        for step in spec.steps:
            if status.steps.get(step, StepStatus()).state == "succeeded":
                echo(f"[{step}] already succeeded, skipping")
                continue
            if _cancel_file(run).exists():
                return self._cancelled(run, status)
            status = self._run_step(run, status, step, echo)
            if status.phase in ("Failed", "Cancelled"):
                return status
        status.phase, status.step, status.message = "Succeeded", None, "all steps succeeded"
        status.progress, status.current = f"{len(spec.steps)}/{len(spec.steps)}", None
        run.write_status(status)
        return status

    def _run_step(self, run: RunFolder, status: RunStatus, step: str,
                  echo: Callable[[str], None]) -> RunStatus:
        status.phase, status.step, status.message = PHASE_OF_STEP[step], step, f"running {step}"
        status.steps[step] = StepStatus(state="running", started=now())
        spec = run.read_spec()
        command = step_command(spec, step, run.path)
        done = sum(s.state == "succeeded" for s in status.steps.values())
        status.progress, status.current = step_progress(done, len(spec.steps), step, "")
        run.write_status(status)
        shown: list[PhaseProgress] = []  # the last progress the terminal was told

        def on_line(line: str) -> None:
            if parse(line, step) is None:
                echo(f"[{step}] {line}")
                return
            # into status.json, the same progress the controller reports from a pod's log
            status.progress, status.current = step_progress(done, len(spec.steps), step, line)
            run.write_status(status)
            if worth_showing(status.current, shown[-1] if shown else None):
                shown.append(status.current)
                echo(f"[{step}] {describe(status.current)}")

        try:
            code = run_logged(command, run.log(step), on_line,
                              on_start=lambda pid: _write_pid(_step_file(run), pid))
        finally:
            _step_file(run).unlink(missing_ok=True)
        result = status.steps[step]
        result.finished, result.exit_code = now(), code
        result.state = "succeeded" if code == 0 else "failed"
        status.metrics.update(headline_metrics(run.metrics))
        status.trained = status.trained or run.final.is_dir()
        status.published = run.read_published() or status.published
        if _cancel_file(run).exists() and code != 0:
            return self._cancelled(run, status)
        if code != 0:
            status.phase, status.current = "Failed", None
            status.message = failure_message(step, code, tail(run.log(step)))
        run.write_status(status)
        return status

    @staticmethod
    def _cancelled(run: RunFolder, status: RunStatus) -> RunStatus:
        status.phase, status.message = "Cancelled", "cancelled; submit again to resume"
        status.current = None
        run.write_status(status)
        return status

    def _existing(self, name: str) -> RunFolder:
        run = self.folder(name)
        if not run.path.is_dir():
            raise UserError(f"no run named {name!r} under {runs_dir(self.settings.home)}")
        return run

    def status(self, name: str) -> RunStatus:
        return self._existing(name).read_status()

    def spec(self, name: str) -> RunSpec:
        return self._existing(name).read_spec()

    def list(self) -> list[RunStatus]:
        runs = runs_dir(self.settings.home)
        folders = sorted(runs.iterdir()) if runs.is_dir() else []
        return [RunFolder(path).read_status() for path in folders
                if path.is_dir() and not path.is_symlink() and RUN_NAME.fullmatch(path.name)]

    def logs(self, name: str, step: str | None = None, node: int = 0) -> str:
        run = self._existing(name)
        steps = [step] if step else run.read_spec().steps
        logs = [(s, run.log(s, node if s == "train" else 0)) for s in steps]
        return "".join(f"==> {s} <==\n{log.read_text(encoding='utf-8')}" for s, log in logs
                       if log.exists())

    def follow(self, name: str, step: str | None = None, node: int = 0) -> Iterator[str]:
        """Each step's log as it is written, until the step (or the whole run) ends."""
        run = self._existing(name)
        for current in [step] if step else run.read_spec().steps:
            yield from _follow_file(run.log(current, node if current == "train" else 0),
                                    lambda s=current: _step_over(run.read_status(), s))

    def cancel(self, name: str) -> RunStatus:
        """Stop the run: SIGTERM to the running step, and no further steps."""
        run = self._existing(name)
        status = run.read_status()
        if status.phase in TERMINAL:
            return status
        _cancel_file(run).touch()
        if not _runner_alive(run):  # nothing is running it: record it ourselves
            return self._cancelled(run, status)
        _signal(_step_file(run), signal.SIGTERM)  # the runner records Cancelled after it
        return status

    def delete(self, name: str, timeout: float = 60.0) -> None:
        """Cancel the run if it is running, then remove its folder (data, checkpoints, logs)."""
        run = self._existing(name)
        if _runner_alive(run):
            self.cancel(name)
            self._wait_for_runner(run, timeout)
        shutil.rmtree(run.path)

    def wait(self, name: str, timeout: float | None = None) -> RunStatus:
        """Block until the run has Succeeded, Failed or been Cancelled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (status := self.status(name)).phase not in TERMINAL:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {name!r} is still {status.phase} after {timeout:g} s")
            time.sleep(POLL_S)
        return status


# --- who is running a run: pid files in its folder ----------------------------------------------


def _runner_file(run: RunFolder) -> Path:
    return run.path / "runner.pid"  # the process going through the steps


def _step_file(run: RunFolder) -> Path:
    return run.path / "step.pid"  # the running step's process


def _cancel_file(run: RunFolder) -> Path:
    return run.path / "cancel"  # present = cancel requested


def _write_pid(path: Path, pid: int | None = None) -> None:
    path.write_text(str(pid or os.getpid()))


@contextmanager
def _locked(path: Path, retry_s: float = 0.0) -> Iterator[bool]:
    """Hold an exclusive flock on `path` for the block; yields False (without it) when another
    process holds it for longer than `retry_s`. The kernel releases it when its holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        deadline = time.monotonic() + retry_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.02)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _runner_lock(run: RunFolder) -> AbstractContextManager[bool]:
    return _locked(run.path / "runner.lock", LOCK_RETRY_S)


def _runner_alive(run: RunFolder) -> bool:
    """Whether a runner holds the run (a probe: takes and drops the lock if it is free)."""
    with _locked(run.path / "runner.lock") as free:
        return not free


@contextmanager
def _slot(home: Path, slots: int, on_wait: Callable[[], None],
          cancelled: Callable[[], bool]) -> Iterator[bool]:
    """One of `slots` machine-wide run slots for the block: waits (calling `on_wait` once
    queued) until one is free; yields False if `cancelled()` while waiting."""
    folder = home / ".local-slots"
    while True:
        for number in range(slots):
            with _locked(folder / f"slot-{number}.lock") as got:
                if got:
                    yield True
                    return
        if cancelled():
            yield False
            return
        on_wait()
        time.sleep(QUEUE_POLL_S)


def _signal(path: Path, signum: int) -> bool:
    try:
        os.kill(int(path.read_text()), signum)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return False
    return True


def _step_over(status: RunStatus, step: str) -> bool:
    return status.phase in TERMINAL or status.steps.get(step, StepStatus()).state in (
        "succeeded", "failed")


def _follow_file(path: Path, finished: Callable[[], bool]) -> Iterator[str]:
    position = 0
    while True:
        done = finished()  # read before the file, so the last lines are never missed
        if path.exists():
            with open(path, encoding="utf-8", errors="replace") as handle:
                handle.seek(position)
                chunk = handle.read()
                position = handle.tell()
            if chunk:
                yield chunk
        if done:
            return
        time.sleep(POLL_S)


if __name__ == "__main__":  # the background process of a detached submit
    LocalExecutor().run_steps(sys.argv[1])
