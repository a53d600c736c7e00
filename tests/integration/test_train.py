"""The train step end to end on the tiny model: outputs, LoRA/full, kills, SIGTERM, two processes.

Training really runs (CPU, tiny random Voxtral, bundled speech clips); processes are really
killed. `tiny-random-4s` (a 4-s audio window) keeps steps short where the window does not matter.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import free_port
from tests.train_fixtures import (  # noqa: F401 (fixture)
    prepare_samples,
    shared_home,
    shared_tiny_home,
)
from voxtune.cli import build_parser
from voxtune.data.manifest import read_manifest
from voxtune.models.load import load
from voxtune.run.progress import LINE, parse
from voxtune.spec import LoraSpec
from voxtune.train.adapt import apply_lora

pytestmark = pytest.mark.usefixtures("shared_tiny_home")
TWO_RANKS = ("-m", "voxtune.train.launch", "--nproc-per-node=2")  # what a 2-GPU Job runs
TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("prepared")
    return prepare_samples(folder)


def train(prepared: Path, output: Path, *extra: str, wait: bool = True,
          launcher: tuple[str, ...] = (), env: Mapping[str, str] | None = None
          ) -> subprocess.CompletedProcess | subprocess.Popen:
    """`voxtune train` in a subprocess; `env` replaces the environment (default: this one)."""
    command = [sys.executable, *launcher, "-m", "voxtune", "train", "--data", str(prepared),
               "--output", str(output), "--language", "en", *extra]
    env = {**(os.environ if env is None else env), "VOXTUNE_HOME": str(shared_home())}
    if wait:
        return subprocess.run(command, capture_output=True, text=True, env=env)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


def wait_for(path: Path, process: subprocess.Popen) -> None:
    while not path.exists() and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None, "training ended before the signal could be sent"


def steps_done(output: Path) -> int:
    checkpoints = sorted((output / "checkpoints").glob("checkpoint-*"),
                         key=lambda p: int(p.name.split("-")[1]))
    return json.loads((checkpoints[-1] / "trainer_state.json").read_text())["global_step"]


def test_lora_run_writes_loadable_outputs_and_no_training_state(prepared: Path,
                                                                 tmp_path: Path) -> None:
    output = tmp_path / "run"
    done = train(prepared, output, "--model", "tiny-random-4s", "--mode", "lora",
                 "--max-steps", "6", "--save-steps", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WER" in done.stdout and "smoke-test model" in done.stdout
    # trackio's own hint (`trackio show`, on the UI's port) is replaced by ours
    assert f"voxtune dashboard {output}" in done.stdout and "trackio show" not in done.stdout
    # the lines both backends turn into status.current: every phase, training step by step
    reports = [(m["phase"], m["done"], m["total"]) for m in LINE.finditer(done.stdout)]
    trained = [(str(n), "6") for n in range(7)]
    assert reports == [("load", "0", "1"), ("load", "1", "1"), ("base-eval", "0", "2"),
                       ("base-eval", "2", "2"), *(("train", *step) for step in trained),
                       ("tuned-eval", "0", "2"), ("tuned-eval", "2", "2")], reports
    assert "remaining=" in done.stdout

    final = output / "final"
    assert {p.name for p in final.iterdir()} >= {"adapter_model.safetensors", "adapter_config.json",
                                                "tekken.json", "processor_config.json",
                                                "spec.yaml"}
    assert not [p for p in final.rglob("*") if p.name in TRAINING_STATE]
    assert len(list((output / "checkpoints").glob("checkpoint-*"))) == 2  # keep_checkpoints

    metrics = json.loads((output / "metrics.json").read_text())
    for key in ("wer", "cer", "base_wer", "base_cer", "train_loss", "eval_loss",
                "train_samples_per_second", "peak_memory_gb", "wall_time_s", "empty",
                "repetitive", "max_length"):
        assert isinstance(metrics[key], (int, float)), key
    assert metrics["smoke_model"] is True and metrics["train_steps"] == 6
    assert all(row["reference"] and row["base"] is not None and row["tuned"] is not None
               for row in metrics["samples"])

    # `voxtune evaluate` reloads adapter + base from the run folder and agrees with metrics.json
    evaluated = subprocess.run([sys.executable, "-m", "voxtune", "evaluate", "--model",
                                str(output), "--data", str(prepared)], capture_output=True,
                               text=True, env={**os.environ,
                                               "VOXTUNE_HOME": str(shared_home())})
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert json.loads(evaluated.stdout)["wer"] == pytest.approx(metrics["wer"])

    # trackio kept the step losses inside the run folder
    databases = list((output / "trackio").rglob("*.db"))
    assert databases
    with sqlite3.connect(databases[0]) as db:
        rows = db.execute("select count(*) from metrics").fetchone()[0]
    assert rows >= 6
    assert_dashboard_serves(output)


def assert_dashboard_serves(run: Path) -> None:
    """`voxtune dashboard RUN --port P` answers HTTP on P until it is stopped."""
    port = free_port()
    dashboard = subprocess.Popen([sys.executable, "-m", "voxtune", "dashboard", str(run),
                                  "--port", str(port)], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert dashboard.poll() is None, dashboard.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
                    assert page.status == 200
                    break
            except OSError:  # not listening yet
                assert time.monotonic() < deadline, "the dashboard never answered"
                time.sleep(0.2)
    finally:
        dashboard.terminate()
        dashboard.communicate(timeout=30)


def test_dashboard_ui_and_serve_can_run_at_once() -> None:
    parser = build_parser()
    ports = [parser.parse_args(argv).port
             for argv in (["dashboard", "run"], ["ui"], ["serve", "model"])]
    assert len(set(ports)) == 3, ports


def test_full_fine_tuning_freezes_the_audio_encoder(prepared: Path, tmp_path: Path) -> None:
    output = tmp_path / "full"
    done = train(prepared, output, "--model", "tiny-random-4s", "--mode", "full",
                 "--max-steps", "2", "--learning-rate", "0.01")
    assert done.returncode == 0, done.stderr[-3000:]
    # final/ is bf16 (half of the fp32 master weights) and loads as bf16
    assert json.loads((output / "final" / "config.json").read_text())["dtype"] == "bfloat16"
    kept = "audio_tower.embed_positions"  # Voxtral keeps its position table fp32 itself
    stored = load_file(output / "final" / "model.safetensors")
    assert {t.dtype for name, t in stored.items() if kept not in name} == {torch.bfloat16}
    tuned_model = load(str(output / "final"))[0]
    assert {p.dtype for name, p in tuned_model.named_parameters()
            if kept not in name} == {torch.bfloat16}
    base = load("tiny-random-4s")[0].state_dict()
    tuned = tuned_model.state_dict()
    assert tuned.keys() == base.keys()
    changed = {name for name in tuned  # an untouched weight is the base's, rounded to bf16
               if not torch.equal(tuned[name], base[name].to(tuned[name].dtype))}
    assert changed and not any("audio_tower" in name for name in changed)
    assert any("language_model" in name for name in changed)
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["optimizer"] == "adamw_torch"  # auto on a CPU; adamw_8bit is for GPUs


@pytest.mark.parametrize(("lora", "adapted"), [
    (LoraSpec(), {"q_proj", "k_proj", "v_proj", "o_proj"}),
    (LoraSpec(mlp=True), {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                          "down_proj"}),
], ids=["attention", "attention+mlp"])
def test_lora_adapts_only_the_language_model(lora: LoraSpec, adapted: set[str]) -> None:
    model = apply_lora(load("tiny-random-4s")[0], lora)
    names = [name for name, _ in model.named_modules() if name.endswith(".lora_A")]
    assert names and all("language_model" in name for name in names)
    assert {name.split(".")[-2] for name in names} == adapted


def test_lora_can_train_the_projector() -> None:
    model = apply_lora(load("tiny-random-4s")[0], LoraSpec(projector=True))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert any("multi_modal_projector" in name for name in trainable)
    assert not any("audio_tower" in name for name in trainable)


def test_sigkill_then_same_command_resumes_to_the_same_step_count(prepared: Path,
                                                                   tmp_path: Path) -> None:
    output = tmp_path / "killed"
    # the 4-s window: steps ~10x cheaper than the 30-s one, and still 20 left to kill it in
    args = ("--model", "tiny-random-4s", "--mode", "lora", "--max-steps", "24", "--save-steps",
            "2")
    process = train(prepared, output, *args, wait=False)
    wait_for(output / "checkpoints" / "checkpoint-4" / "trainer_state.json", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (output / "final").exists()

    resumed = train(prepared, output, *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    assert steps_done(output) == 24
    assert json.loads((output / "metrics.json").read_text())["train_steps"] == 24


def test_sigterm_saves_a_checkpoint_and_exits_retryable(prepared: Path, tmp_path: Path) -> None:
    output = tmp_path / "preempted"
    args = ("--model", "tiny-random-4s", "--mode", "lora", "--max-steps", "60", "--save-steps",
            "10")
    process = train(prepared, output, *args, wait=False)
    wait_for(output / "checkpoints" / "checkpoint-10" / "trainer_state.json", process)
    process.send_signal(signal.SIGTERM)
    log, _ = process.communicate()
    assert process.returncode == 75, log[-3000:]
    assert "run the same command again" in log
    stopped_at = steps_done(output)
    assert 10 < stopped_at < 60  # saved where it stopped, not only at the last save_steps
    finished = train(prepared, output, *args)
    assert finished.returncode == 0 and f"checkpoint-{stopped_at}" in finished.stdout
    assert steps_done(output) == 60


@pytest.mark.slow
def test_two_processes_train_data_parallel(prepared: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo): each step consumes twice the examples."""
    args = ("--model", "tiny-random-4s", "--mode", "lora", "--max-steps", "2", "--batch-size",
            "1", "--grad-accum", "1", "--save-steps", "2")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    done = train(prepared, tmp_path / "ddp", *args, launcher=TWO_RANKS,
                 env={**os.environ, "TMPDIR": str(temporary)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(temporary.iterdir())  # torchrun's files went with it
    single = train(prepared, tmp_path / "one", *args)
    assert single.returncode == 0
    epochs = [json.loads((tmp_path / name / "checkpoints" / "checkpoint-2" /
                          "trainer_state.json").read_text())["epoch"] for name in ("ddp", "one")]
    assert epochs[0] == pytest.approx(2 * epochs[1])
    assert (tmp_path / "ddp" / "final" / "adapter_model.safetensors").exists()
    # each rank transcribed half of the eval clips and the halves were gathered, in order:
    # the same base model gives the same transcripts and WER as one process
    ddp, one = (json.loads((tmp_path / name / "metrics.json").read_text())
                for name in ("ddp", "one"))
    assert len(ddp["samples"]) >= 2 and ddp["clips"] == one["clips"]
    assert [row["base"] for row in ddp["samples"]] == [row["base"] for row in one["samples"]]
    assert ddp["base_wer"] == one["base_wer"] and ddp["normalizer"] == one["normalizer"]


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(prepared: Path,
                                                               tmp_path: Path) -> None:
    """Ranks see SIGTERM at different step ends; they must agree on where to stop and save
    together, or one saves while the other waits in the next step's all-reduce."""
    output = tmp_path / "preempted"
    process = train(prepared, output, "--model", "tiny-random-4s", "--mode", "lora",
                    "--max-steps", "200", "--save-steps", "200", "--batch-size", "1",
                    launcher=TWO_RANKS, wait=False)
    assert process.stdout is not None
    lines = []
    try:
        for line in process.stdout:  # the ranks are stepping once training reports a step
            lines.append(line)
            reported = parse(line, "train")
            if reported and reported.phase == "train" and reported.done:  # not the model load
                break
        ranks = [int(p.name) for p in Path("/proc").glob("[0-9]*")
                 if (p / "environ").exists() and _rank_of(p) == "1"
                 and str(output) in (p / "cmdline").read_text(errors="replace")]
        assert len(ranks) == 1, lines
        os.kill(ranks[0], signal.SIGTERM)  # rank 1 only: rank 0 learns of it from rank 1
        # without agreement the ranks wait on each other: this times out instead
        log = "".join(lines) + process.communicate(timeout=300)[0]
    finally:
        process.kill()  # the ranks die with the launcher (their parent-death signal)
        process.wait()
    assert process.returncode == 75, log[-3000:]  # the rank's own code, through the launcher
    # both ranks stop at the same step with 75; the launcher names whichever it saw end first
    assert re.search(r"rank [01] exited with code 75", log) and "Traceback" not in log, log[-3000:]
    stopped_at = steps_done(output)  # a whole checkpoint: rank 0 saved it too
    assert 2 <= stopped_at < 200
    saved = output / "checkpoints" / f"checkpoint-{stopped_at}"
    assert (saved / "adapter_model.safetensors").exists()
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in saved.iterdir()}


def _rank_of(process: Path) -> str | None:
    try:
        variables = (process / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for variable in variables:
        if variable.startswith(b"RANK="):
            return variable[5:].decode()
    return None


@pytest.mark.parametrize(("code", "expected"), [(2, 2), (75, 75), (-9, 137)])
def test_the_launcher_exits_with_the_failed_ranks_code(tmp_path: Path, code: int,
                                                       expected: int) -> None:
    """torchrun itself exits 1 with a traceback whatever its ranks did."""
    script = tmp_path / "rank.py"
    failing = f"os.kill(os.getpid(), {-code})" if code < 0 else f"sys.exit({code})"
    script.write_text(f"import os, sys\nif os.environ['RANK'] == '1':\n    {failing}\n")
    done = subprocess.run([sys.executable, *TWO_RANKS, str(script)], capture_output=True,
                          text=True)
    assert done.returncode == expected, done.stderr[-2000:]
    assert f"rank 1 exited with code {expected}" in done.stderr
    assert "Traceback" not in done.stderr


def test_no_train_clips_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "prepared").mkdir()
    (tmp_path / "prepared" / "manifest.jsonl").write_text("")
    done = train(tmp_path / "prepared", tmp_path / "out", "--model", "tiny-random-4s")
    assert done.returncode == 2 and "no train clips" in done.stderr
    assert "Traceback" not in done.stderr


def test_merged_export_matches_the_adapter(prepared: Path, tmp_path: Path) -> None:
    from voxtune.models.load import load_tuned
    from voxtune.train.collator import TrainingCollator, TranscriptionDataset

    output = tmp_path / "lora"
    done = train(prepared, output, "--model", "tiny-random-4s", "--mode", "lora",
                 "--max-steps", "3", "--precision", "fp32", "--learning-rate", "0.05")
    assert done.returncode == 0, done.stderr[-3000:]
    merged = subprocess.run([sys.executable, "-m", "voxtune", "merge", str(output)],
                            capture_output=True, text=True,
                            env={**os.environ, "VOXTUNE_HOME": str(shared_home())})
    assert merged.returncode == 0, merged.stderr[-2000:]
    assert not list((output / "merged").glob("adapter_*"))

    # merged in the dtype the run evaluated the adapter in (fp32 here; bf16 on bf16 hardware),
    # so the merge does not round away what the card's WER was measured on
    stored = load_file(output / "merged" / "model.safetensors")
    assert {t.dtype for name, t in stored.items()
            if "audio_tower.embed_positions" not in name} == {torch.float32}
    tuned, _ = load_tuned(str(output))
    adapter_model, processor = tuned.model, tuned.processor
    standalone, _ = load(str(output / "merged"), torch.float32)
    clips = read_manifest(prepared, "eval")[:2]
    dataset = TranscriptionDataset(clips, prepared, processor, tmp_path / "cache", "en")
    batch = TrainingCollator(processor.tokenizer.pad_token_id)([dataset[0], dataset[1]])
    with torch.no_grad():
        expected = adapter_model(**batch).logits
        actual = standalone(**batch).logits
        untuned = load("tiny-random-4s")[0](**batch).logits
    # folding B·A into W only reorders fp32 sums; the adapter moved the logits far more
    rounding = (expected - actual).abs().max()
    assert (expected - untuned).abs().max() > 1000 * rounding
    assert torch.allclose(expected, actual, rtol=1e-4, atol=1e-4)
