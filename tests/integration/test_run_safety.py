"""Run names never become paths outside their root; one runner per run; a bounded number of runs
at once; `submit --wait` waits for the attempt it started (issue 10, items 1, 6, 7 and the local
executor's queue)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from voxtune.client import Client
from voxtune.data.synth import copy_samples
from voxtune.errors import ExitCode, UserError
from voxtune.executors.local import LocalExecutor
from voxtune.publish.registry import Registry
from voxtune.spec import RunSpec, Settings


def voxtune(*argv: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voxtune", *argv], capture_output=True,
                          text=True, env={**os.environ, "VOXTUNE_HOME": str(home)})


def prepare_spec(tmp_path: Path, name: str, source: Path | None = None) -> Path:
    source = source or copy_samples(tmp_path / f"samples-{name}")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "language": "en", "steps": ["prepare"],
                                    "data": {"sources": [str(source)]}}))
    return path


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


# --- 1. names are not paths ---------------------------------------------------------------------

# (absolute paths: the test adds one under tmp_path; never a real system folder here)
ESCAPES = ["..", "../..", "../outside", "a/b", "runs/../..", ".", "mine\n"]


@pytest.mark.parametrize("verb", ["delete", "status", "logs", "cancel"])
def test_no_run_command_reaches_outside_runs(tmp_path: Path, verb: str) -> None:
    home, outside = tmp_path / "home", tmp_path / "outside"
    for keep in (home / "runs" / "mine", home / "registry" / "me" / "1", outside):
        keep.mkdir(parents=True)
        (keep / "keep.txt").write_text("precious")
    (home / "runs" / "escape").symlink_to(outside)  # a link inside runs/ pointing out of it
    for name in [*ESCAPES, "escape", str(outside)]:
        done = voxtune(verb, name, home=home)
        assert done.returncode == ExitCode.USER_ERROR, (name, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert "not a valid run name" in done.stderr or "resolves outside" in done.stderr
    for keep in (home / "runs" / "mine", home / "registry" / "me" / "1", outside):
        assert sorted(p.name for p in keep.iterdir()) == ["keep.txt"], keep  # nothing added


def test_client_refuses_escaping_names(tmp_path: Path, voxtune_home: Path) -> None:
    (voxtune_home / "runs").mkdir(parents=True)
    (voxtune_home / "precious").write_text("x")
    client = Client("local")
    for name in ESCAPES:
        for verb in (client.delete, client.status, client.cancel, client.logs, client.spec):
            with pytest.raises(UserError, match="not a valid run name"):
                verb(name)
    assert (voxtune_home / "precious").exists()


def test_registry_names_stay_inside_the_registry(tmp_path: Path) -> None:
    (tmp_path / "outside" / "1").mkdir(parents=True)
    registry = Registry(tmp_path / "registry")
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "link").symlink_to(tmp_path / "outside")
    for reference in ["../outside", "..", "link", "link@1", "/abs", "a/../../outside"]:
        with pytest.raises(UserError):
            registry.find(reference)
    with pytest.raises(UserError):
        registry.publish("../outside", lambda staging, final: None)
    assert [p.name for p in (tmp_path / "outside").iterdir()] == ["1"]
    assert registry.entries() == []  # the link is not listed as a model
    done = voxtune("models", "show", "../outside", home=tmp_path)
    assert done.returncode == ExitCode.USER_ERROR and "Traceback" not in done.stderr


# --- 6. one runner per run -------------------------------------------------------------------

# A runner of its own (a separate process, like a detached submit) whose steps print their pid
# and then take `seconds`: so the test sees how many step processes a run really got.
RUNNER = textwrap.dedent("""
    import sys, time
    from voxtune.executors import local
    from voxtune.spec import RunSpec
    def command(spec, step, run_dir, python=sys.executable):
        return [python, "-c", "import os, time; print('pid', os.getpid(), flush=True); "
                f"time.sleep({float(sys.argv[2])})"]
    local.step_command = command
    status = local.LocalExecutor().run(RunSpec(name=sys.argv[1], steps=["prepare"]),
                                       echo=lambda line: print(line, flush=True))
    print("phase", status.phase, flush=True)
""")


def start_runner(home: Path, name: str, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", RUNNER, name, str(seconds)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "VOXTUNE_HOME": str(home)})


def step_pids(executor: LocalExecutor, name: str) -> list[str]:
    log = executor.folder(name).log("prepare")
    text = log.read_text() if log.exists() else ""
    return [line.split()[1] for line in text.splitlines() if line.startswith("pid ")]


def test_the_same_run_submitted_twice_at_once_gets_one_runner(tmp_path: Path) -> None:
    home = tmp_path / "home"
    executor = LocalExecutor(Settings(home=home))
    runners = [start_runner(home, "twice", 3) for _ in range(2)]
    outputs = [runner.communicate(timeout=120)[0] for runner in runners]
    assert len(step_pids(executor, "twice")) == 1, outputs  # one step process, not two
    # the other one was a no-op: it either found the run's lock taken before starting a runner
    # or its runner found it taken ("already being run by another process")
    assert sum("[prepare] pid" in out for out in outputs) == 1, outputs
    assert executor.status("twice").phase == "Succeeded"


def test_a_killed_runner_leaves_no_lock_and_no_step_behind(tmp_path: Path) -> None:
    home = tmp_path / "home"
    executor = LocalExecutor(Settings(home=home))
    runner = start_runner(home, "killed", 120)
    wait_for(lambda: step_pids(executor, "killed"), "the step did not start")
    (step,) = step_pids(executor, "killed")
    runner.send_signal(signal.SIGKILL)
    runner.wait(30)
    wait_for(lambda: not Path(f"/proc/{step}").exists()
             or "zombie" in Path(f"/proc/{step}/status").read_text().lower(),
             "the step outlived its killed runner")
    again = start_runner(home, "killed", 0)  # the lock died with the runner: this one runs
    out = again.communicate(timeout=120)[0]
    assert "phase Succeeded" in out, out
    assert len(step_pids(executor, "killed")) == 2


# --- the local executor's queue -----------------------------------------------------------


def test_runs_beyond_the_limit_wait_as_queued(tmp_path: Path) -> None:
    home = tmp_path / "home"
    executor = LocalExecutor(Settings(home=home))  # VOXTUNE_LOCAL_MAX_RUNS default: 1
    first = start_runner(home, "first", 4)
    wait_for(lambda: step_pids(executor, "first"), "first did not start")
    second = start_runner(home, "second", 0)
    wait_for(lambda: executor.folder("second").status_file.exists()
             and executor.status("second").phase == "Queued", "second was not queued")
    status = executor.status("second")
    assert "VOXTUNE_LOCAL_MAX_RUNS" in status.message and not step_pids(executor, "second")
    assert [s.phase for s in executor.list()] == ["Preparing", "Queued"]
    for runner in (first, second):
        runner.communicate(timeout=120)
    done = {s.name: s for s in executor.list()}
    assert {s.phase for s in done.values()} == {"Succeeded"}
    assert done["second"].steps["prepare"].started >= done["first"].steps["prepare"].finished

    # a queued run can be cancelled before it starts
    blocker = start_runner(home, "blocker", 30)
    wait_for(lambda: step_pids(executor, "blocker"), "blocker did not start")
    queued = start_runner(home, "waiting", 0)
    wait_for(lambda: executor.folder("waiting").status_file.exists()
             and executor.status("waiting").phase == "Queued", "waiting was not queued")
    executor.cancel("waiting")
    assert "phase Cancelled" in queued.communicate(timeout=60)[0]
    assert not step_pids(executor, "waiting")
    executor.cancel("blocker")
    blocker.communicate(timeout=60)


# --- 7. submit --wait waits for the attempt it started ------------------------------------


def test_submit_wait_after_a_failure_waits_for_the_new_attempt(tmp_path: Path) -> None:
    home = tmp_path / "home"
    missing = tmp_path / "later" / "data.jsonl"  # the source appears only before the retry
    spec = prepare_spec(tmp_path, "retry", missing)
    first = voxtune("submit", str(spec), "--wait", home=home)
    assert first.returncode != 0 and "retry: Failed" in first.stdout, first.stdout
    samples = copy_samples(tmp_path / "later")
    assert samples == missing
    second = voxtune("submit", str(spec), "--wait", home=home)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "retry: Succeeded" in second.stdout


def test_submit_wait_after_a_cancel_waits_for_the_resumed_run(tmp_path: Path) -> None:
    home = tmp_path / "home"
    executor = LocalExecutor(Settings(home=home))
    runner = start_runner(home, "resume", 60)
    wait_for(lambda: step_pids(executor, "resume"), "the step did not start")
    executor.cancel("resume")
    runner.communicate(timeout=60)
    assert executor.status("resume").phase == "Cancelled"
    spec = RunSpec(name="resume", steps=["prepare"])
    # a detached submit (what `submit --wait` does); this attempt runs the real prepare step,
    # which fails on the spec's empty source list: its own result, not the old Cancelled
    status = executor.submit(spec)
    assert status.phase == "Pending"
    final = executor.wait("resume", timeout=120)
    assert final.phase == "Failed" and final.message.startswith("prepare failed"), final


def test_a_full_disk_is_named_in_the_local_status(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from voxtune.executors import local

    def command(spec, step, run_dir, python=sys.executable):
        return [python, "-c", "import sys; print('error: no space left on /x'); sys.exit(74)"]
    monkeypatch.setattr(local, "step_command", command)
    executor = LocalExecutor(Settings(home=tmp_path / "home"))
    status = executor.run(RunSpec(name="full", steps=["prepare"]), echo=lambda line: None)
    assert status.phase == "Failed"
    assert status.message.startswith("prepare failed (disk full: free space, then submit again")
