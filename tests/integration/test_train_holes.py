"""The train step's answers to issue 10, each shown by a real `voxtune train` subprocess.

Transcripts too long for their clip are skipped by name; a step that will not end does not hold
up SIGTERM; a full disk is one line and exit 74; local tracking sends nothing to the Hub.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from tests.emulators.hub import HubEmulator, hub_emulator  # noqa: F401 (fixture)
from tests.integration.test_train import train
from tests.train_fixtures import shared_tiny_home, write_clip  # noqa: F401 (fixture)
from tests.unit.test_train_holes import small_disk
from voxtune.data.manifest import MANIFEST, jsonl_bytes
from voxtune.models.load import load
from voxtune.train.collator import transcript_ids
from voxtune.train.signals import SIGTERM_GRACE_S

pytestmark = pytest.mark.usefixtures("shared_tiny_home")
NO_TRACKING = {"VOXTUNE_SPEC__TRACKING__ENABLED": "false"}
LONG = "word " * 3000  # ~6,000 tokens for a 1-s clip: over the default limit of 512
SLOW_CLIPS = 160  # one optimizer step of 160 clips of ~8,000 tokens: minutes on a CPU


def prepared_folder(folder: Path, train_texts: Sequence[str],
                    eval_texts: Sequence[str] = ()) -> Path:
    """A prepared folder of 1-s clips with these transcripts (ids train-N, eval-N)."""
    clips = [write_clip(folder, f"train-{n}", 1.0, text, "en", seed=n)
             for n, text in enumerate(train_texts)]
    clips += [replace(write_clip(folder, f"eval-{n}", 1.0, text, "en", seed=100 + n),
                      split="eval") for n, text in enumerate(eval_texts)]
    (folder / MANIFEST).write_bytes(jsonl_bytes(clips))
    return folder


def with_env(**values: str) -> dict[str, str]:
    return {**os.environ, **values}


# --- transcripts longer than data.max_transcript_tokens -------------------------------------


def test_long_transcripts_are_skipped_by_name_and_the_rest_train(tmp_path: Path) -> None:
    prepared = prepared_folder(tmp_path / "prepared", ["one two", LONG, "three four", "five"],
                               ["six seven", LONG])
    done = train(prepared, tmp_path / "run", "--model", "tiny-random-4s", "--max-steps", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    tokens = len(transcript_ids(load("tiny-random-4s")[1], LONG))
    for clip_id in ("train-1", "eval-1"):
        assert (f"skipped clip {clip_id}: its transcript is {tokens:,} tokens, over "
                "data.max_transcript_tokens (512)") in done.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["skipped_long_transcripts"] == 2 and metrics["train_steps"] == 2
    assert [row["id"] for row in metrics["samples"]] == ["eval-0"]


def test_only_long_transcripts_is_one_clear_error(tmp_path: Path) -> None:
    prepared = prepared_folder(tmp_path / "prepared", [LONG, LONG])
    done = train(prepared, tmp_path / "run", "--model", "tiny-random-4s", "--max-steps", "2")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "every train clip's transcript is over data.max_transcript_tokens (512)" in done.stderr
    assert "Traceback" not in done.stderr


# --- SIGTERM during a step that does not end soon ---------------------------------------------


@pytest.fixture(scope="module")
def slow_steps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Clips whose transcripts make one step of all of them take minutes on the tiny model."""
    text = "word " * 4000  # 8,000 tokens: allowed with data.max_transcript_tokens 8192
    return prepared_folder(tmp_path_factory.mktemp("slow") / "prepared", [text] * SLOW_CLIPS)


def start_slow_training(prepared: Path, output: Path) -> subprocess.Popen:
    """One optimizer step over every clip, with the transcript limit raised to let them in."""
    return train(prepared, output, "--model", "tiny-random-4s", "--max-steps", "1",
                 "--batch-size", "1", "--grad-accum", str(SLOW_CLIPS), wait=False,
                 env=with_env(VOXTUNE_SPEC__DATA__MAX_TRANSCRIPT_TOKENS="8192", **NO_TRACKING))


def read_until(process: subprocess.Popen, text: str) -> str:
    """The output up to the first line containing `text` (fails if the process ends first)."""
    seen = []
    for line in process.stdout:
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"no {text!r} before the process ended:\n{''.join(seen)[-3000:]}")


def interrupted_slow_step(prepared: Path, output: Path, signals: int) -> str:
    """Send `signals` SIGTERMs (each after the line the previous one causes) to a run inside
    its one long step; its output once it exited 75 without writing a checkpoint."""
    process = start_slow_training(prepared, output)
    try:
        read_until(process, f"training: max_steps 1, {SLOW_CLIPS} clips per step")
        for sent in range(signals):
            if sent:
                read_until(process, "SIGTERM: saving a checkpoint when step 1 ends")
            process.send_signal(signal.SIGTERM)
        log, _ = process.communicate()
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 75, log[-3000:]
    assert not list(output.glob("checkpoints/checkpoint-*"))
    return log


@pytest.mark.slow
def test_sigterm_in_a_step_that_does_not_end_exits_75_after_the_grace(
        slow_steps: Path, tmp_path: Path) -> None:
    log = interrupted_slow_step(slow_steps, tmp_path / "run", signals=1)
    assert "SIGTERM: saving a checkpoint when step 1 ends" in log
    assert (f"SIGTERM {SIGTERM_GRACE_S} s ago: step 1 was interrupted without a new checkpoint; "
            "run the same command again") in log


@pytest.mark.slow
def test_a_second_sigterm_stops_a_step_at_once(slow_steps: Path, tmp_path: Path) -> None:
    log = interrupted_slow_step(slow_steps, tmp_path / "run", signals=2)
    assert "second SIGTERM: step 1 was interrupted without a new checkpoint" in log


# --- a full disk ------------------------------------------------------------------------------


@pytest.mark.parametrize(("disk_size", "full_at"), [
    ("2m", "checkpoints"),  # the weights fit, the optimizer state (torch.save) does not
    ("4m", ""),  # the checkpoint fits, the final weights (safetensors) do not
], ids=["checkpoint", "final"])
def test_a_full_disk_is_one_line_and_exit_74(tmp_path: Path, disk_size: str,
                                            full_at: str) -> None:
    prepared = prepared_folder(tmp_path / "prepared", ["one two", "three four"])
    with small_disk(tmp_path / "disk", disk_size) as disk:
        done = train(prepared, disk / "run", "--model", "tiny-random-4s", "--mode", "full",
                     "--max-steps", "1", "--save-steps", "1", env=with_env(**NO_TRACKING))
    assert done.returncode == 74, done.stderr[-3000:]
    assert f"error: no space left on {disk / 'run' / full_at}" in done.stderr
    assert "Traceback" not in done.stderr


# --- nothing goes to the Hub ------------------------------------------------------------------


def test_local_tracking_sends_no_request_to_the_hub(hub_emulator: HubEmulator,  # noqa: F811
                                                   tmp_path: Path) -> None:
    sentinel = "hf_sentinel_token_must_stay_here"
    prepared = prepared_folder(tmp_path / "prepared", ["one two", "three four"], ["five six"])
    done = train(prepared, tmp_path / "run", "--model", "tiny-random-4s", "--max-steps", "1",
                 env=hub_emulator.client_env(token=sentinel, hf_home=str(tmp_path / "hf")))
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((tmp_path / "run" / "trackio").rglob("*.db"))  # tracking did run, locally
    assert [f"{r.method} {r.path}" for r in hub_emulator.requests] == []
