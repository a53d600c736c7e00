"""Two "nodes" on this machine, each running the exact command and environment a rendered JobSet
pod carries: harness → torchrun (--nnodes=2, one process per node, static rendezvous on
127.0.0.1, node rank and master from PET_*, set as the engine sets them) → `voxtune train` on the
tiny model with gloo, DDP and FSDP. Training checkpoints once, node 1 is SIGKILLed (a lost
node), node 0 fails by itself (its peer is gone), and both restarted — what the engine does
with the group — resume from the shared checkpoint to the same final step.

What stands in for the cluster, and only that: the pod's volume mounts (/data and /tmp are
folders here), the kubelet's downward API (PET_NODE_RANK = the pod's completion index), the
headless service's DNS name of node 0 (127.0.0.1) and a free port instead of 29500 (other
tests may hold it), and the image's `python` (this interpreter).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.test_fsdp import alive, children, losses
from tests.train_fixtures import shared_home, shared_tiny_home  # noqa: F401 (fixture)
from voxtune.controller.engines import build_jobset
from voxtune.controller.jobs import DATA_MOUNT, JobSettings, placement_for
from voxtune.run.layout import RunFolder
from voxtune.spec import RunSpec

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_tiny_home")]
ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "tests" / "fsdp_on_cpu_site"  # lets accelerate shard on CPU ranks
STEPS = 4
FAILS_WITHIN_S = 180  # node 0 notices its lost peer on the next collective (seconds here)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pod_of(spec: RunSpec) -> dict:
    """The container of the rendered JobSet's node pod (every node runs the same one)."""
    settings = JobSettings()
    jobset = build_jobset(spec, settings, placement_for(spec, settings))
    (replicated,) = jobset["spec"]["replicatedJobs"]
    (container,) = replicated["template"]["spec"]["template"]["spec"]["containers"]
    return container


def node_process(container: dict, rank: int, port: int, home: Path,
                 scratch: Path) -> subprocess.Popen:
    """Start node `rank` as the kubelet would start its pod; its own session, like a pod."""
    def mounted(text: str) -> str:
        for inside, outside in ((DATA_MOUNT, home), ("/tmp", scratch)):
            if text == inside or text.startswith(inside + "/"):
                return str(outside) + text[len(inside):]
        return text

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(SITE), str(ROOT), os.environ.get("PYTHONPATH")]))}
    for variable in container["env"]:
        if "value" in variable:
            env[variable["name"]] = mounted(variable["value"])
    downward = {"PET_NODE_RANK": str(rank), "PET_MASTER_ADDR": "127.0.0.1",
                "PET_MASTER_PORT": str(port)}
    assert set(downward) <= {v["name"] for v in container["env"]}  # the engine sets each
    env.update(downward)
    command = [sys.executable if part == "python" else mounted(part)
               for part in container["command"]]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def start_group(container: dict, home: Path, scratch: Path) -> list[subprocess.Popen]:
    port = free_port()
    return [node_process(container, rank, port, home, scratch) for rank in (0, 1)]


def finish(process: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        output, _ = process.communicate()
        pytest.fail(f"a node did not finish within {timeout} s:\n{output[-3000:]}")
    return process.returncode, output


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.train_fixtures import prepare_samples

    return prepare_samples(tmp_path_factory.mktemp("prepared"))


@pytest.mark.parametrize(("strategy", "mode"), [("ddp", "lora"), ("fsdp", "full")])
def test_two_nodes_train_lose_one_and_resume_together(strategy: str, mode: str,
                                                      prepared: Path, tmp_path: Path) -> None:
    spec = RunSpec(
        name=f"two-{strategy}-{uuid.uuid4().hex[:6]}", base_model="tiny-random-4s", mode=mode,
        language="en", steps=["train"], eval={"max_new_tokens": 4},  # WER is not the point
        training={"max_steps": STEPS, "save_steps": 2, "batch_size": 1, "grad_accum": 1,
                  "precision": "fp32", "learning_rate": 0.003},
        tracking={"enabled": False},
        resources={"nodes": 2, "gpus": 1, "engine": "jobset", "strategy": strategy})
    container = pod_of(spec)
    home, scratch = shared_home(), tmp_path / "scratch"
    scratch.mkdir()
    run = RunFolder(home / "runs" / spec.name)
    shutil.copytree(prepared, run.prepared)

    # 1. both nodes train until the first checkpoint is complete, then node 1 is lost
    nodes = start_group(container, home, scratch)
    first = run.checkpoints / "checkpoint-2" / "trainer_state.json"
    while not first.exists() and all(node.poll() is None for node in nodes):
        time.sleep(0.05)
    assert all(node.poll() is None for node in nodes), \
        "".join(node.communicate()[0][-2000:] for node in nodes)
    launchers = children(nodes[1].pid)  # node 1's torchrun, and its rank
    lost = [*launchers, *(rank for pid in launchers for rank in children(pid))]
    assert len(lost) == 2
    os.killpg(nodes[1].pid, 9)
    finish(nodes[1], 60)
    code, output = finish(nodes[0], FAILS_WITHIN_S)  # by itself: nobody kills node 0
    assert code != 0, output[-3000:]
    deadline = time.monotonic() + 10
    while alive(lost) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive(lost) == [], "node 1's torchrun or rank outlived its pod"
    assert not run.final.exists()
    killed_at = max(losses(run.path))
    assert killed_at < STEPS
    if strategy == "fsdp":  # every rank wrote its shard of the shared checkpoint
        shards = run.checkpoints / "checkpoint-2" / "pytorch_model_fsdp_0"
        assert {"__0_0.distcp", "__1_0.distcp"} <= {p.name for p in shards.iterdir()}

    # 2. the engine restarts the whole group: both resume from that checkpoint and finish
    restarted = start_group(container, home, scratch)
    results = [finish(node, 600) for node in restarted]
    for code, output in results:
        assert code == 0, output[-3000:]
    assert "resuming from" in results[0][1] and "resuming from" in results[1][1]
    assert ("FSDP2 across 2 processes" in results[0][1]) == (strategy == "fsdp")
    state = json.loads((run.checkpoints / f"checkpoint-{STEPS}" /
                        "trainer_state.json").read_text())
    assert state["global_step"] == STEPS
    assert json.loads(run.metrics.read_text())["train_steps"] == STEPS
    assert sorted(losses(run.path)) == list(range(1, STEPS + 1))  # went on, not over
    # each node kept its own log on the volume; rank 0's is the step's log
    assert run.log("train").exists() and run.log("train", 1).exists()
    assert "resuming from" in run.log("train", 1).read_text()
    assert run.final.is_dir()
