"""The export gate's rule: how far an exported model's WER may move (percentage points)."""

from __future__ import annotations

import pytest

from voxtune.publish.gate import drift_problem


@pytest.mark.parametrize(("evaluated", "exported", "max_points", "refused"), [
    (0.125, 0.125, 0.5, False),
    (0.125, 0.129, 0.5, False),  # 0.4 points
    (0.125, 0.131, 0.5, True),  # 0.6 points
    (0.125, 0.119, 0.5, True),  # better is a change too: the card's number would be wrong
    (0.125, 0.30, 20.0, False),  # a lossy export accepted on purpose
    (0.125, float("nan"), 0.5, True),  # nothing scorable is never "no drift"
], ids=["same", "within", "over", "better-but-over", "accepted", "nan"])
def test_drift_rule(evaluated: float, exported: float, max_points: float, refused: bool) -> None:
    problem = drift_problem(evaluated, exported, max_points, "merged")
    assert (problem is not None) == refused
    if problem:
        assert "publish.max_wer_drift" in problem and "Nothing was published" in problem
