"""Golden files under tests/data/golden: compared byte for byte, rewritten only on request.

    VOXTUNE_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_jobs.py tests/unit/test_crd.py
"""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"


def check_golden(name: str, text: str) -> None:
    """Compare `text` with tests/data/golden/<name>; VOXTUNE_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN / name
    if os.environ.get("VOXTUNE_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing; create it with VOXTUNE_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), (
        f"{name} differs from its golden file; if that is intended, rerun with "
        "VOXTUNE_UPDATE_GOLDEN=1 and review the diff")
