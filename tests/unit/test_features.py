"""Which feature data path a run takes: the rule, and the figures it is fed from a spec."""

from __future__ import annotations

import pytest

from voxtune.plan import plan_run
from voxtune.plan.features import feature_path, run_feature_path, training_passes
from voxtune.plan.geometry import load_config
from voxtune.spec import RunSpec

MINI = "mistralai/Voxtral-Mini-3B-2507"
PER_1000 = 1.43  # GiB of cached 30-s log-mels per 1,000 clips


def spec(**training) -> RunSpec:
    return RunSpec.model_validate({"name": "features", "training": training})


@pytest.mark.parametrize(("gpus", "clips", "passes", "expected"), [
    (0, 200, 3.0, "cache"),  # a small CPU run: recomputing every epoch costs 10× a cache hit
    (0, None, None, "cache"),  # not known yet: a CPU run caches
    (1, 200, 3.0, "device"),  # on a GPU the log-mel is cheap where the model runs
    (8, 100_000, 2.0, "device"),
    (0, 6_000, 3.0, "device"),  # 8.6 GiB of cache: over the limit
    (0, 5_000, 3.0, "cache"),  # 7.2 GiB
    (0, 200, 1.0, "device"),  # each clip read once: a cache would never be hit
], ids=["small-cpu", "unknown-cpu", "gpu", "large-gpu", "large-cpu", "under-limit", "one-pass"])
def test_rule_caches_only_small_multi_pass_cpu_runs(gpus, clips, passes, expected) -> None:
    assert feature_path(gpus, clips, PER_1000, passes) == expected


@pytest.mark.parametrize(("training", "processes", "passes"), [
    ({"epochs": 2.0}, 1, 2.0),
    ({"max_steps": 10, "batch_size": 4, "grad_accum": 2}, 1, 80 / 40),
    ({"max_steps": 10, "batch_size": 4, "grad_accum": 2}, 2, 160 / 40),
], ids=["epochs", "max-steps", "two-processes"])
def test_passes_count_every_clip_read(training, processes, passes) -> None:
    assert training_passes(spec(**training), 40, processes) == pytest.approx(passes)


def test_a_run_is_judged_by_the_plans_cache_figure() -> None:
    run = spec(epochs=3.0)
    per_1000 = plan_run(run).estimate.feature_cache_gib_per_1000_clips
    assert per_1000 == pytest.approx(1.43, abs=0.01)  # 128 × 3000 fp32 per clip
    config = load_config(MINI)
    limit = int(8.0 / per_1000 * 1000)  # clips the 8-GiB cache limit holds
    assert run_feature_path(run, config, limit - 100, 100, gpus=0) == "cache"
    assert run_feature_path(run, config, limit, 100, gpus=0) == "device"
    assert run_feature_path(run, config, 100, 10, gpus=1) == "device"
