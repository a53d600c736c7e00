"""bench/gpu.py cannot rot between GPU sessions: its --smoke mode runs the same code on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_fixtures import shared_home

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_mode_trains_every_case_it_can_and_says_why_it_skips_the_others(
        tmp_path: Path) -> None:
    output = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--smoke", "--output", str(output)],
        capture_output=True, text=True,
        env={**os.environ, "VOXTUNE_HOME": str(shared_home()),
             "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "bench/gpu.py on CPU" in done.stdout  # the card (here: none) is named first
    result = json.loads(output.read_text())
    rows = {row["case"]: row for row in result["rows"]}
    assert set(rows) == {"mini-lora", "mini-full", "small-qlora"}
    bitsandbytes_cases = {"mini-full", "small-qlora"}
    for name, row in rows.items():
        if name in bitsandbytes_cases and "skipped" in row:
            assert "bitsandbytes" in row["skipped"] and row["skipped"] in done.stdout
            continue
        assert "error" not in row, row
        for side in ("ours", "upstream"):
            assert row[side]["samples_per_s"] > 0 and row[side]["tokens_per_s"] > 0
            assert row[side]["flops_per_s"] > 0
        assert row["plan_gib"] > 0
        assert set(row["data_path_ms_per_clip"]) == {
            "ours: read audio", "ours: log-mel on cpu", "upstream: row + collator on the CPU"}
    assert "error" not in rows["mini-lora"] and "ours" in rows["mini-lora"]  # no bitsandbytes
