"""How a step is run and reported, by every backend: claim the folder, build the command, run
it with its log kept in the run folder, and word a failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from voxtune.errors import ExitCode, UserError
from voxtune.processes import die_with_parent
from voxtune.run.layout import RunFolder
from voxtune.spec import RunSpec

LOG_TAIL_LINES = 20  # of a failed step's log, in its status message


def claim_run_folder(run: RunFolder, spec: RunSpec) -> None:
    """Write spec.yaml; a folder that already holds a different spec belongs to another run."""
    if run.spec_file.exists() and run.read_spec() != spec:
        raise UserError(f"run {spec.name!r} already exists with a different spec "
                        f"({run.spec_file}); pick another name or delete that folder")
    run.write_spec(spec)


# What the engines set on every pod of a multi-node train step: Kubeflow Trainer's torch runtime
# injects them, a JobSet gets them from us. torchrun reads each PET_<OPTION> as its --<option>
# (torch.distributed.argparse_util.env), so the node's rank and the master's address are not
# in the command: one command serves every node.
NODE_ENV = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR",
            "PET_MASTER_PORT")
MASTER_PORT = 29500  # torchrun's default, and the Trainer's


def node_rank() -> int:
    """Which node of a multi-node train step this pod is (0 elsewhere)."""
    value = os.environ.get("PET_NODE_RANK", "")
    return int(value) if value.isdigit() else 0


def step_command(spec: RunSpec, step: str, run_dir: Path,
                 python: str = sys.executable) -> list[str]:
    """The step's entrypoint; training on several GPUs runs one process per GPU (torchrun).
    `python` is the interpreter in the step's image (the Kubernetes Jobs pass "python").

    On more than one node the command names the node count and GPUs per node the plan sized
    (a pod without the engine's variables then fails to meet its peers instead of training
    alone); node rank, master address and port come from PET_NODE_RANK, PET_MASTER_ADDR and
    PET_MASTER_PORT, static rendezvous (every node knows the master: no etcd, no elastic
    membership). A lost node fails the others' collectives; the engine restarts the group and
    training resumes from the last shared checkpoint."""
    entrypoint = ["-m", "voxtune", step, "--run-dir", str(run_dir)]
    resources = spec.resources
    if step == "train" and resources.nodes > 1:
        return [python, "-m", "voxtune.train.launch", f"--nnodes={resources.nodes}",
                f"--nproc-per-node={resources.gpus}", *entrypoint]
    if step == "train" and resources.gpus > 1:
        return [python, "-m", "voxtune.train.launch",
                f"--nproc-per-node={resources.gpus}", *entrypoint]
    return [python, *entrypoint]


def run_logged(command: list[str], log_path: Path, echo: Callable[[str], None],
               on_start: Callable[[int], None] | None = None) -> int:
    """Run `command`, copying its output line by line into `log_path` and to `echo`; SIGTERM to
    this process is passed on (as PID 1 of a pod it is the only one the kubelet signals)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        # The step dies with this process even when it is killed outright (no orphaned trainer
        # writing a run nobody owns any more).
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1, errors="replace",
                                   preexec_fn=die_with_parent)
        if on_start:
            on_start(process.pid)
        forwarding = threading.current_thread() is threading.main_thread()
        if forwarding:
            previous = signal.signal(signal.SIGTERM, lambda *_: process.send_signal(
                signal.SIGTERM))
        try:
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                log.flush()
                echo(line.rstrip())
            return process.wait()
        finally:
            if forwarding:
                signal.signal(signal.SIGTERM, previous)


def failure_message(step: str, code: int | None, log_tail: str) -> str:
    """How a failed step is reported by every backend."""
    kinds = {ExitCode.USER_ERROR: "bad input or config",
             ExitCode.NO_SPACE: "disk full: free space, then submit again to resume"}
    return f"{step} failed ({kinds.get(code, f'exit code {code}')}):\n{log_tail}"


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])
