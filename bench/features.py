"""The feature data path: CPU cost and disk per clip of each path, against the upstream recipe's.

    make bench                                      # also runs .venv/bin/python bench/features.py
    .venv/bin/python bench/features.py --clips 96 --repeats 5

One process, one espeak-ng corpus prepared by `voxtune.data.prepare` (≈2.3-s clips), the
tiny-random processor (the real 30-s window, 128 mel bins, the real Tekken prompt layout): what
each way of turning prepared clips into the model's `input_features` costs, per clip.

  (a) upstream — Deep-unlearning/Finetune-Voxtral-ASR's collator (bench/train.py's
      `UpstreamCollator`): a `datasets` row decoded on access, then
      `processor.apply_transcription_request` per batch (every clip written to an in-memory WAV,
      read back by mistral-common, padded to 30 s, log-mel), in every epoch.
  (b) cache miss — `cache_clips` into an empty cache: decode, `LogMel` over up to 32 clips at
      once with one prompt per window count, write the 30-s fp32 log-mel (once per clip and
      processor).
  (c) cache hit — the dataset item (mmap of the cache file) + `TrainingCollator` (every epoch).
  (d) device path, here on the CPU — the dataset item (decode the FLAC) + `TrainingCollator`
      with `LogMel` (the feature extractor's torch path, clips of one window in one call);
      on a GPU the log-mel part runs there (bench/gpu.py measures it).
  Building each dataset is timed too: the cache path's build is (b) for every clip; the device
  path's reads every clip once (its windows) and asks the processor once per distinct prompt.

CPU ms per clip = process CPU seconds (all threads) / clips; best of `--repeats` (other work on
a shared machine only ever adds). Disk per clip: the cache file against the prepared FLAC. The
ratios are upstream's per-epoch CPU over each path's. Recorded figures: docs/benchmarks.md,
"Feature data path".
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from upstream import LANGUAGE, UpstreamCollator, make_corpus, quiet, upstream_rows  # sibling

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: the processor is built locally

# --- defaults (sized so that this takes well under a minute on 2 shared CPU cores) -------------
CLIPS = 48  # espeak-ng clips, ≈2.3 s each
BATCH_SIZE = 4  # clips per collated batch (the recipe's default batch)
REPEATS = 3  # passes per measurement; the cheapest counts


def cpu_ms_per_clip(work: Callable[[], object], clips: int, repeats: int) -> float:
    """The least CPU time (ms per clip) of `repeats` runs of `work`, which handles `clips`."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return 1000 * best / clips


def batches(count: int, size: int) -> list[list[int]]:
    return [list(range(start, min(start + size, count))) for start in range(0, count, size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=CLIPS, help="espeak-ng clips to synthesize")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="clips per batch")
    parser.add_argument("--repeats", type=int, default=REPEATS,
                        help="passes per measurement, the cheapest counts; raise on a busy host")
    options = parser.parse_args()

    import torch

    from voxtune.data.manifest import read_manifest
    from voxtune.models.load import load
    from voxtune.train.collator import (
        LogMel,
        TrainingCollator,
        TranscriptionDataset,
        cache_clips,
        features_key,
    )

    print(f"bench/features.py: {options.clips} clips, batch {options.batch_size}, best of "
          f"{options.repeats}; {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="voxtune-bench-features-") as scratch:
        prepared = make_corpus(Path(scratch), options.clips)
        clips = read_manifest(prepared)
        with quiet():
            processor = load("tiny-random")[1]
        count_clips, groups = len(clips), batches(len(clips), options.batch_size)
        pad = processor.tokenizer.pad_token_id
        key = features_key(processor)

        rows = upstream_rows(clips, prepared)
        upstream = UpstreamCollator(processor)

        def upstream_epoch() -> None:
            for group in groups:
                upstream([rows[i] for i in group])

        caches = itertools.count()

        def cache_misses() -> None:  # a fresh, empty cache every pass
            folder = Path(scratch) / f"cache-{next(caches)}"
            cache_clips(clips, prepared, processor, folder, LANGUAGE, key)

        cache_dir = Path(scratch) / "cache"
        with quiet():
            cached = TranscriptionDataset(clips, prepared, processor, cache_dir, LANGUAGE)
            device = TranscriptionDataset(clips, prepared, processor, None, LANGUAGE)
        from_cache, on_device = TrainingCollator(pad), TrainingCollator(pad, LogMel.of(processor))

        def epoch(dataset: TranscriptionDataset, collator: TrainingCollator) -> Callable[[], None]:
            def run() -> None:
                for group in groups:
                    collator([dataset[i] for i in group])
            return run

        def build(cache: Path | None) -> Callable[[], object]:
            def run() -> object:
                with quiet():
                    return TranscriptionDataset(clips, prepared, processor, cache, LANGUAGE)
            return run

        work = {
            "(a) upstream collator, every epoch": upstream_epoch,
            "(b) cache miss: decode + processor + write, once": cache_misses,
            "(c) cache hit: mmap item + collate, every epoch": epoch(cached, from_cache),
            "(d) device path on CPU: decode + LogMel + collate, every epoch": epoch(device,
                                                                                  on_device),
        }
        # at torch's default threads, and at 1: what a DataLoader worker (upstream's) or a
        # busy second core leaves; CPU time counts every thread, idle spinning included
        threads = torch.get_num_threads()
        costs: dict[str, dict[int, float]] = {label: {} for label in work}
        for count in sorted({threads, 1}, reverse=True):
            torch.set_num_threads(count)
            for label, run in work.items():
                costs[label][count] = cpu_ms_per_clip(run, count_clips, options.repeats)
        torch.set_num_threads(threads)
        builds = {"cache path, warm cache (per run)": cpu_ms_per_clip(build(cache_dir), count_clips,
                                                                      options.repeats),
                  "device path (per run)": cpu_ms_per_clip(build(None), count_clips,
                                                           options.repeats)}
        cache_bytes = sum(path.stat().st_size for path in cached.paths) / count_clips
        audio_bytes = sum((prepared / clip.audio_path).stat().st_size
                          for clip in clips) / count_clips
        seconds = sum(clip.duration for clip in clips) / count_clips

    upstream_cost = costs["(a) upstream collator, every epoch"]
    counts = sorted(upstream_cost, reverse=True)
    header = " | ".join(f"CPU ms per clip, {n} thread{'s' if n > 1 else ''} | upstream / this"
                        for n in counts)
    print(f"\n| data path ({seconds:.1f}-s clips, 30-s window) | {header} |\n"
          + "|---" * (1 + 2 * len(counts)) + "|")
    for label, by_threads in costs.items():
        cells = " | ".join(f"{by_threads[n]:.2f} | {upstream_cost[n] / by_threads[n]:.2f}×"
                           for n in counts)
        print(f"| {label} | {cells} |")
    for label, value in builds.items():
        print(f"| build the dataset: {label}, {counts[0]} threads | {value:.2f} | — |")
    fewest = counts[-1]  # the steadiest figures: no idle threads counted
    miss = costs["(b) cache miss: decode + processor + write, once"][fewest]
    hit = costs["(c) cache hit: mmap item + collate, every epoch"][fewest]
    on_cpu = costs["(d) device path on CPU: decode + LogMel + collate, every epoch"][fewest]
    print(f"\n| disk per clip | KiB | vs the prepared FLAC |\n|---|---|---|\n"
          f"| prepared 16-kHz FLAC (what the device path reads) | {audio_bytes / 1024:.0f} | "
          f"1.0× |\n| cached 30-s fp32 log-mel + prompt ids | {cache_bytes / 1024:.0f} | "
          f"{cache_bytes / audio_bytes:.1f}× |")
    # over E epochs the cache costs miss + (E-1)·hit, the device path E·on_cpu
    print(f"\nOver E epochs on a CPU ({fewest} thread) the cache costs {miss:.1f} + "
          f"(E−1)·{hit:.2f} ms per clip, "
          f"the device path E·{on_cpu:.1f}: the cache is cheaper from the "
          f"{'first' if miss <= on_cpu else 'second'} epoch on; it costs "
          f"{cache_bytes / 2**30 * 1000:.2f} GiB per 1,000 clips of disk.")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
