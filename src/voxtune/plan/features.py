"""Which data path a run's train step uses for the log-mel features, decided before it starts.

The Whisper-style feature extractor turns every clip into a fp32 log-mel of the whole 30-s
window (128 × 3000 floats ≈ 1.46 MiB), whatever the clip's length: a cache of those is ~20× the
16-kHz audio and outgrows a shared volume at Granary scale. On a GPU the same log-mel is cheap
to compute on the device, every epoch. So: a cache on disk only for CPU runs small enough that
it pays; on-device features for GPU runs and for anything large.
"""

from __future__ import annotations

from typing import Literal

FeaturePath = Literal["cache", "device"]
CACHE_LIMIT_GIB = 8.0  # the most the cache may take on the shared volume


def feature_path(gpus: int, clips: int | None, cache_gib_per_1000_clips: float) -> FeaturePath:
    """"cache" (log-mels cached per clip on disk) or "device" (computed per batch where the
    model runs). `clips` is the number of train + eval clips, None when not yet known."""
    if gpus > 0:
        return "device"
    if clips is not None and clips * cache_gib_per_1000_clips / 1000 > CACHE_LIMIT_GIB:
        return "device"
    return "cache"
