"""What the training benchmark measures besides time: peak memory (GPU or this process and
its DataLoader workers), a step clock that waits for the GPU, and the per-sample cost of each
side's data path outside training. Imported by the sibling script train.py.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import statistics
import time
from pathlib import Path
from typing import Any

from upstream import UpstreamCollator

WARMUP_STEPS = 3  # not timed: worker start-up, first allocations

def status_kib(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_peak_memory(on_gpu: bool) -> float:
    """Start a new peak; returns the memory in use now (GiB). ru_maxrss cannot be reset, so the
    CPU peak is the kernel's VmHWM, which writing 5 to /proc/self/clear_refs resets."""
    import torch

    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**30
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so runs start level
        Path("/proc/self/clear_refs").write_text("5")
    return status_kib(Path("/proc/self/status"), "VmRSS") / 2**20


def peak_memory_gib(on_gpu: bool) -> float:
    import torch

    if on_gpu:
        return torch.cuda.max_memory_allocated() / 2**30
    return status_kib(Path("/proc/self/status"), "VmHWM") / 2**20


def children_private_mib() -> float | None:
    """Memory only this process's children hold (DataLoader workers are forked: their RSS also
    counts every page shared with us, so private pages are the honest extra)."""
    total, found = 0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != os.getpid():
                continue
            rollup = stat.with_name("smaps_rollup").read_text().splitlines()
        except (OSError, ValueError, IndexError):
            continue
        found = True
        total += sum(int(line.split()[1]) for line in rollup if line.startswith("Private_"))
    return total / 1024 if found else None


def step_clock(on_gpu: bool) -> Any:
    """A Trainer callback that timestamps every step, and reads the workers' memory during the
    warm-up steps (outside the timed window; by the last step a worker may have exited)."""
    import torch
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.worker_mib: float | None = None

        def on_step_end(self, args, state, control, **kwargs):
            if on_gpu:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())
            if state.global_step < WARMUP_STEPS:
                worker = children_private_mib()
                if worker is not None:
                    self.worker_mib = max(worker, self.worker_mib or 0.0)

    return StepClock()


def median_ms(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def front_end_costs(processor: Any, rows: Any, ours: Any, batch_size: int) -> dict[str, float]:
    """Per-sample milliseconds of each side's data path outside training (median of batches)."""
    import numpy as np
    import torch

    from voxtune.train.collator import TrainingCollator

    upstream_collate, our_collate = UpstreamCollator(processor), TrainingCollator(
        processor.tokenizer.pad_token_id)
    batch = [rows[i] for i in range(batch_size)]
    extractor = processor.feature_extractor
    window = np.zeros(extractor.n_samples, dtype=np.float32)
    clip = batch[0]["audio"]["array"]
    window[:len(clip)] = clip
    threads = torch.get_num_threads()
    costs = {"(a) row access: datasets + FLAC decode": median_ms(lambda: rows[1], 20)}
    for count in sorted({threads, 1}, reverse=True):  # DataLoader workers run 1 torch thread
        torch.set_num_threads(count)
        costs[f"(a) collator, {count} thread(s)"] = median_ms(
            lambda: upstream_collate(batch), 10) / batch_size
        costs[f"(a) of which the log-mel of one 30-s window, {count} thread(s)"] = median_ms(
            lambda: extractor(window, sampling_rate=extractor.sampling_rate,
                              return_tensors="pt"), 10)
    torch.set_num_threads(threads)
    costs["(b) cached item (mmap) + collate"] = median_ms(
        lambda: our_collate([ours[i] for i in range(batch_size)]), 20) / batch_size
    return costs
