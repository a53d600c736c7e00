"""voxtune.Client with the local backend: detached submit, wait, logs, follow, cancel, delete
(the same verbs the Kubernetes backend has; see test_controller.py for that one)."""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from voxtune.cli.runs import add_parsers
from voxtune.client import Client
from voxtune.data.synth import copy_samples
from voxtune.errors import UserError
from voxtune.executors import local
from voxtune.executors.local import LocalExecutor
from voxtune.plan.placement import machine_memory_gib, refuse_unless_fits
from voxtune.run.process import claim_run_folder
from voxtune.spec import RunSpec, Settings


def spec_file(tmp_path: Path, name: str = "mine") -> Path:
    manifest = copy_samples(tmp_path / "samples")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"name": name, "language": "en", "steps": ["prepare"],
                                    "data": {"sources": [str(manifest)]}}))
    return path


def test_detached_submit_wait_logs_and_delete(tmp_path: Path, voxtune_home: Path) -> None:
    client = Client("local")
    submitted = client.submit(spec_file(tmp_path))
    assert submitted.name == "mine" and submitted.phase == "Pending"
    followed = "".join(client.follow("mine"))
    final = client.wait("mine", timeout=120)
    assert final.phase == "Succeeded", final.message
    assert "kept 12 clips" in followed and "kept 12 clips" in client.logs("mine")
    assert [s.name for s in client.list()] == ["mine"]
    assert client.submit(spec_file(tmp_path)).phase == "Succeeded"  # same spec: nothing to do
    assert client.wait("mine", timeout=60).phase == "Succeeded"
    client.delete("mine")
    assert not (voxtune_home / "runs" / "mine").exists() and client.list() == []
    with pytest.raises(UserError, match="no run named"):
        client.status("mine")


def slow_step(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Steps that print a line and then take `seconds` (SIGTERM ends them like a kill)."""
    def command(spec: RunSpec, step: str, run_dir: Path, python: str = sys.executable):
        return [python, "-c", f"import time; print('{step} working', flush=True); "
                              f"time.sleep({seconds})"]
    monkeypatch.setattr(local, "step_command", command)


def test_cancel_stops_the_running_step_and_submit_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slow_step(monkeypatch, 60)
    executor = LocalExecutor(Settings(home=tmp_path / "home"))
    spec = RunSpec(name="slow", steps=["prepare", "train"])
    result: list = []
    runner = threading.Thread(target=lambda: result.append(
        executor.run(spec, echo=lambda line: None)))
    runner.start()
    log = executor.folder("slow").log("prepare")
    deadline = time.monotonic() + 30
    while not (log.exists() and "working" in log.read_text()):
        assert time.monotonic() < deadline, "the step did not start"
        time.sleep(0.05)
    started = time.monotonic()
    executor.cancel("slow")
    runner.join(30)
    assert time.monotonic() - started < 10  # not the step's 60 s
    (status,) = result
    assert status.phase == "Cancelled" and executor.status("slow").phase == "Cancelled"
    assert status.steps["prepare"].state == "failed" and "train" not in status.steps
    assert executor.wait("slow", timeout=1).phase == "Cancelled"
    assert executor.cancel("slow").phase == "Cancelled"  # again: nothing to do

    slow_step(monkeypatch, 0)
    resumed = executor.run(spec, echo=lambda line: None)
    assert resumed.phase == "Succeeded"
    assert [s.state for s in resumed.steps.values()] == ["succeeded", "succeeded"]


def test_local_status_reports_progress_and_time_left_like_the_controller(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def command(spec: RunSpec, step: str, run_dir: Path, python: str = sys.executable):
        return [python, "-c", "import time; from voxtune.run.progress import report; "
                "report('prepare', 0, 4); time.sleep(0.2); report('prepare', 1, 4); "
                "time.sleep(60)"]
    monkeypatch.setattr(local, "step_command", command)
    executor = LocalExecutor(Settings(home=tmp_path / "home"))
    runner = threading.Thread(target=lambda: executor.run(
        RunSpec(name="counting", steps=["prepare", "train"]), echo=lambda line: None))
    runner.start()
    deadline = time.monotonic() + 30
    status_file = executor.folder("counting").status_file
    while not (status_file.exists() and "prepare 1/4" in executor.status("counting").progress):
        assert time.monotonic() < deadline, "no progress reached status.json"
        time.sleep(0.05)
    status = executor.status("counting")
    assert status.progress == "0/2 prepare 1/4"
    current = status.current
    assert current and current.elapsed_s and current.elapsed_s >= 0.2
    # 3 more units at the pace of the first: seconds left, not a clock time
    assert current.remaining_s == pytest.approx(3 * current.elapsed_s, abs=0.15)
    executor.cancel("counting")
    runner.join(30)
    assert executor.status("counting").current is None  # nothing to estimate once cancelled
    assert "progress prepare 1/4" in executor.logs("counting", "prepare")  # kept in the log


def test_cancel_without_a_runner_and_wait_timeout(tmp_path: Path) -> None:
    executor = LocalExecutor(Settings(home=tmp_path / "home"))
    run = executor.folder("stale")
    claim_run_folder(run, RunSpec(name="stale", steps=["prepare"]))
    with pytest.raises(TimeoutError, match="still Pending"):
        executor.wait("stale", timeout=0.3)
    assert executor.cancel("stale").phase == "Cancelled"  # nobody runs it: recorded at once
    executor.delete("stale")
    assert not run.path.exists()


def test_cli_submit_wait_list_with_the_local_backend(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="voxtune")
    add_parsers(parser.add_subparsers(dest="command", required=True))

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return args.handler(args)

    assert run("submit", str(spec_file(tmp_path)), "--wait") == 0
    out = capsys.readouterr().out
    assert "run mine submitted: Pending" in out and "mine: Succeeded" in out
    assert re.search(r"^mine: (Pending|Preparing) \((waiting|prepare)\) — ", out, re.MULTILINE)
    run("list")
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "PHASE", "STEP", "PROGRESS", "WER", "BASE→TUNED", "UPDATED"]
    assert re.match(r"mine\s+Succeeded\s+-\s+1/1\s", row)
    run("logs", "mine", "--step", "prepare", "--follow")
    assert "kept 12 clips" in capsys.readouterr().out


def test_unreachable_cluster_is_a_retryable_error_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {}}]}))
    done = subprocess.run([sys.executable, "-m", "voxtune", "list", "--backend", "kubernetes",
                           "--kubeconfig", str(kubeconfig)], capture_output=True, text=True)
    assert done.returncode == 75, done.stderr
    assert "cannot reach the Kubernetes API" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_run_that_cannot_fit_is_refused_before_anything_starts(
        tmp_path: Path, voxtune_home: Path) -> None:
    """Small-24B full fine-tuning on one GPU: exit 2 with what would fit, no run folder; the
    same check as the controller's (voxtune.plan.placement). FSDP would stage a 90 GiB copy in
    this machine's memory, so locally the advice is adapters."""
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump({"name": "big", "base_model": "mistralai/Voxtral-Small-24B-2507",
                                    "mode": "full", "steps": ["train"]}))
    with pytest.raises(UserError, match=r"does not fit .*use mode: qlora"):
        Client("local").submit(path)
    for command in ("submit", "run"):
        done = subprocess.run([sys.executable, "-m", "voxtune", command, str(path)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert "does not fit" in done.stderr and "mode: lora" in done.stderr
        assert "Traceback" not in done.stderr
    assert not (voxtune_home / "runs" / "big").exists()


def test_a_cpu_run_is_checked_against_this_machines_memory() -> None:
    memory = machine_memory_gib()
    assert memory is not None
    tiny = refuse_unless_fits(RunSpec(name="tiny", base_model="tiny-random",
                                      resources={"gpus": 0}), local=True)
    assert tiny is not None and tiny.fits and tiny.host_limit_gib == pytest.approx(memory)
    # Small-24B trained in fp32 on a CPU: ≈400 GiB, more than a machine that runs tests has
    small = RunSpec(name="small", base_model="mistralai/Voxtral-Small-24B-2507",
                    resources={"gpus": 0})
    with pytest.raises(UserError, match=r"it needs ≈\d+ GiB of memory and this machine has"):
        Client("local").submit(small)
