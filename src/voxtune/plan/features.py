"""Which data path a run's train step uses for the log-mel features, decided before it starts.

The Whisper-style feature extractor turns every clip into a fp32 log-mel of the whole 30-s
window (128 × 3000 floats ≈ 1.46 MiB), whatever the clip's length: a cache of those is ≈3×
the 16-kHz FLAC of a 30-s clip, 36× that of a 2.3-s one, and outgrows a shared volume at
Granary scale. bench/features.py measured on CPU (docs/benchmarks.md, "Feature data path"): a
cache miss costs ≈1.4× computing the log-mel per batch on the CPU, a cache hit ≈1/10 of it. So
the cache pays only on a CPU, from a clip's second read on, while it stays small; GPU runs,
single-pass runs and large ones compute the log-mel per batch on the device instead.
"""

from __future__ import annotations

from typing import Any, Literal

from voxtune.spec import RunSpec

FeaturePath = Literal["cache", "device"]
CACHE_LIMIT_GIB = 8.0  # the most the cache may take on the shared volume


def feature_path(gpus: int, clips: int | None, cache_gib_per_1000_clips: float,
                 passes: float | None = None) -> FeaturePath:
    """"cache" (log-mels cached per clip on disk) or "device" (computed per batch where the
    model runs). `gpus`: the GPUs the train step has (0 on a CPU); `clips`: train + eval clips;
    `passes`: how often training reads each train clip. None = not yet known."""
    if gpus > 0:
        return "device"  # the log-mel costs the GPU next to nothing; the cache costs disk
    if passes is not None and passes <= 1:
        return "device"  # a cache written and never read again only costs a miss per clip
    if clips is not None and clips * cache_gib_per_1000_clips / 1000 > CACHE_LIMIT_GIB:
        return "device"
    return "cache"


def training_passes(spec: RunSpec, train_clips: int, processes: int = 1) -> float:
    """How many times training reads each train clip: `training.max_steps` worth of batches
    over `processes` data-parallel processes, else `training.epochs`."""
    training = spec.training
    if training.max_steps is None:
        return training.epochs
    read = training.max_steps * training.batch_size * training.grad_accum * processes
    return read / max(train_clips, 1)


def run_feature_path(spec: RunSpec, config: dict[str, Any], train_clips: int, eval_clips: int,
                     gpus: int, processes: int = 1) -> FeaturePath:
    """`feature_path` for a run of `spec` on a base model whose config is `config`, with the
    plan's figure for the cache."""
    from voxtune.plan.geometry import Geometry
    from voxtune.plan.memory import feature_cache_gib_per_1000_clips

    per_1000 = feature_cache_gib_per_1000_clips(Geometry.from_config(config))
    return feature_path(gpus, train_clips + eval_clips, per_1000,
                        training_passes(spec, train_clips, processes))
