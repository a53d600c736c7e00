"""FSDP on two CPU processes (gloo), tiny model: same losses as one process, sharded
checkpoints, SIGKILL of the whole torchrun group, resume, and a final/ that loads.

accelerate drops its FSDP plugin for CPU processes (tests/fsdp_on_cpu.py), so this file doubles
as the torchrun script: run as `__main__` it lifts that one gate and runs `voxtune`. Everything
after it is the real path a GPU run takes: the Trainer's FSDP branches, accelerate's
`fully_shard` of the layers voxtune names, torch.distributed.checkpoint shards, and voxtune's
gather of final/.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.train_fixtures import shared_home, shared_tiny_home  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_tiny_home")]
ROOT = Path(__file__).resolve().parents[2]  # so each rank running this file finds `tests`
STEPS = 8
# Same clips per optimizer step: 2 processes × batch 1 against 1 process × batch 2. fp32 and a
# learning rate high enough that the loss moves, so a wrong shard or a lost update shows.
ARGS = ("--model", "tiny-random-4s", "--mode", "full", "--max-steps", str(STEPS),
        "--save-steps", "2", "--grad-accum", "1", "--precision", "fp32",
        "--learning-rate", "0.003")
# Per-step losses of the two runs agree to this (measured: identical to the 4 digits logged);
# float sums reduced in another order differ far less, a missed shard far more.
LOSS_TOLERANCE = 1e-3


def train(prepared: Path, output: Path, *extra: str, processes: int = 1,
          wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    """`voxtune train` with `processes` ranks (the launcher a Job runs); its own session, so a
    kill takes all of them."""
    launcher = (("-m", "voxtune.train.launch", f"--nproc-per-node={processes}", __file__)
                if processes > 1 else ("-m", "voxtune"))
    command = [sys.executable, *launcher, "train", "--data", str(prepared), "--output",
               str(output), "--language", "en", *ARGS, *extra]
    env = {**os.environ, "VOXTUNE_HOME": str(shared_home()),
           "VOXTUNE_SPEC__RESOURCES__STRATEGY": "fsdp",
           "VOXTUNE_SPEC__TRACKING__ENABLED": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if wait:
        return subprocess.run(command, capture_output=True, text=True, env=env)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)


def losses(output: Path) -> dict[int, float]:
    """Logged loss per optimizer step, from the newest checkpoint's trainer state."""
    newest = max((output / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name[11:]))
    history = json.loads((newest / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def children(parent: int) -> list[int]:
    """Live (not zombie) processes whose parent is `parent`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue  # ended while we looked
        if int(ppid) == parent and state != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pids: list[int]) -> list[int]:
    """Those of `pids` still running (a zombie has stopped: only its exit status is left)."""
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.append(pid)
    return running


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.train_fixtures import prepare_samples

    return prepare_samples(tmp_path_factory.mktemp("prepared"))


def test_fsdp_trains_like_one_process_and_resumes_after_sigkill(prepared: Path,
                                                                tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from voxtune.models.load import load

    single = train(prepared, tmp_path / "one", "--batch-size", "2")
    assert single.returncode == 0, single.stderr[-3000:]
    assert "FSDP" not in single.stdout  # one process: nothing to shard

    output = tmp_path / "fsdp"
    process = train(prepared, output, "--batch-size", "1", processes=2, wait=False)
    first = output / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    while not first.exists() and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None, process.communicate()[0][-3000:]
    ranks = children(process.pid)
    assert len(ranks) == 2
    # torchrun starts each rank in its own session, so this kills torchrun alone: the ranks
    # must go with it (their parent-death signal), not train on as orphans
    os.killpg(process.pid, signal.SIGKILL)
    log, _ = process.communicate(timeout=60)  # the pipe closes once every rank has gone
    deadline = time.monotonic() + 10
    while alive(ranks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive(ranks) == [], "a rank outlived torchrun"
    assert "FSDP2 across 2 processes" in log and "LlamaDecoderLayer" in log, log[-3000:]
    # rank 1 read no weights: rank 0 sent them (the losses below match only if it did)
    assert "rank 1: base built empty, its shard comes from rank 0" in log
    assert not (output / "final").exists()
    shards = output / "checkpoints" / "checkpoint-2"
    assert {p.name for p in (shards / "pytorch_model_fsdp_0").iterdir()} >= {
        "__0_0.distcp", "__1_0.distcp", ".metadata"}  # each rank wrote its own shard
    assert (shards / "optimizer_0" / ".metadata").exists()
    killed_at = max(losses(output))
    assert killed_at < STEPS

    resumed = train(prepared, output, "--batch-size", "1", processes=2)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    state = json.loads((output / "checkpoints" / f"checkpoint-{STEPS}" /
                        "trainer_state.json").read_text())
    assert state["global_step"] == STEPS
    assert json.loads((output / "metrics.json").read_text())["train_steps"] == STEPS

    expected, actual = losses(tmp_path / "one"), losses(output)
    assert sorted(actual) == list(range(1, STEPS + 1))  # the resumed run went on, not over
    assert expected[STEPS] < expected[1] - 0.05  # it learned, so the comparison means something
    for step, loss in expected.items():
        assert actual[step] == pytest.approx(loss, abs=LOSS_TOLERANCE), step

    # final/ is one ordinary checkpoint, gathered from the shards, with the same weights
    final = output / "final"
    assert not list(final.glob("*.distcp")) and not (final / "pytorch_model_fsdp_0").exists()
    saved = load_file(final / "model.safetensors")
    saved_alone = load_file(tmp_path / "one" / "final" / "model.safetensors")
    # the names and dtypes the recipe saves without FSDP, so publish and merge see no difference
    assert {k: v.dtype for k, v in saved.items()} == {k: v.dtype for k, v in saved_alone.items()}
    tuned, reference = load(str(final))[0], load(str(tmp_path / "one" / "final"))[0]
    expected_weights = reference.state_dict()
    for name, tensor in tuned.state_dict().items():
        assert torch.allclose(tensor, expected_weights[name], atol=1e-4), name


def test_fsdp_lora_saves_an_adapter_that_loads(prepared: Path, tmp_path: Path) -> None:
    """A frozen bf16 base and fp32 adapters (and projector copy) in the same FSDP units, under
    bf16 mixed precision; final/ holds the adapter."""
    from safetensors.torch import load_file

    from voxtune.models.load import load_tuned

    done = train(prepared, tmp_path / "lora", "--mode", "lora", "--max-steps", "2",
                 "--batch-size", "1", "--precision", "bf16", "--lora-targets",
                 "attention,projector", processes=2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "FSDP2 across 2 processes" in done.stdout
    final = tmp_path / "lora" / "final"
    assert (final / "adapter_model.safetensors").exists()
    assert not (final / "model.safetensors").exists()
    adapter = load_file(final / "adapter_model.safetensors")
    assert any("multi_modal_projector" in name for name in adapter)
    tuned, _ = load_tuned(str(final))
    assert tuned.base == "tiny-random-4s"


if __name__ == "__main__":  # torchrun runs this file as each rank's script
    from tests.fsdp_on_cpu import lift_accelerate_cpu_gate

    lift_accelerate_cpu_gate()
    from voxtune.cli import main

    sys.exit(main())
