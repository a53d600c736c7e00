"""The product's train step makes a random tiny Voxtral listen: a short run of bench/learn.py.

A model that only learns what digit strings look like gets a held-out CER near guessing; the
audio-blind control (same clips, audio shuffled between them) measures that level in the same
run. The test passes only when the model trained on the real pairing ends clearly below it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.learn import Settings, learning_curves, table, uses_audio, verdict

from tests.helpers import requires_espeak

# The benchmark's recipe on a smaller problem: 2–3 digits in a 2-s window. Fixed steps and no
# time budget: a busy machine makes the test slower, never flaky.
SHORT = Settings(model="tiny-random-2s", digits=(2, 3), steps=800, minutes=60.0,
                 eval_every=60.0, train_clips=1200, eval_clips=20)


@pytest.mark.slow
@requires_espeak
def test_short_run_beats_the_audio_blind_control(tmp_path: Path) -> None:
    curves = learning_curves(tmp_path, SHORT)
    print(table(curves), verdict(curves), sep="\n")
    audio, control = curves["audio"].final, curves["control"].final
    assert audio.step == control.step == SHORT.steps
    assert control.cer > 0.5, "the control should be near guessing: it cannot hear"
    assert uses_audio(curves), verdict(curves)  # ends 0.25 (CER) or more below the control
