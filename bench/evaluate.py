"""Evaluation speed: batched greedy transcription (`transcribe_batch`) against one `generate`
per clip (what evaluation did before, and what the upstream recipe's loss-only eval never
measured), on the same clips and the same model, measured in the same run.

    python bench/evaluate.py                      # tiny random model on this CPU
    python bench/evaluate.py --model mistralai/Voxtral-Mini-3B-2507 --clips 64   # on a GPU

Prints seconds per clip for each batch size and the ratio to batch 1. Each row's transcripts
are compared with batch 1's, so a speed-up that changed a transcript would show here too.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def speech(seconds: float, seed: int) -> np.ndarray:
    """A voiced-sounding signal (harmonics of 150 Hz plus noise), like tests.helpers."""
    t = np.arange(int(seconds * 16_000)) / 16_000
    noise = np.random.default_rng(seed).standard_normal(len(t))
    signal = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    return (0.13 * signal + 0.01 * noise).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random-4s")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--batch-sizes", default="1,4,8,16")
    parser.add_argument("--tokens-per-second", type=float, default=6.0,
                        help="Token limit rate; the tiny model never stops, so this sets the "
                        "length of every transcript.")
    args = parser.parse_args()

    import torch

    from voxtune.models.inference import TokenLimit, transcribe_batch
    from voxtune.models.load import load

    model, processor = load(args.model)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    durations = np.random.default_rng(0).uniform(1.0, 3.9, args.clips)
    audios = [speech(seconds, index) for index, seconds in enumerate(durations)]
    order = np.argsort(durations)  # as evaluation sorts them
    audios = [audios[index] for index in order]
    limit = TokenLimit(per_second=args.tokens_per_second, floor=4)
    transcribe_batch(model, processor, audios[:2], ["en"] * 2, max_new_tokens=limit)  # warm-up

    reference: list = []
    baseline = None
    print(f"{'batch':>5} {'s/clip':>8} {'vs 1':>6} same-as-1")
    for size in (int(value) for value in args.batch_sizes.split(",")):
        start = time.perf_counter()
        found = []
        for first in range(0, len(audios), size):
            chunk = audios[first:first + size]
            found += transcribe_batch(model, processor, chunk, ["en"] * len(chunk),
                                      max_new_tokens=limit)
        per_clip = (time.perf_counter() - start) / len(audios)
        reference = reference or found
        baseline = baseline or per_clip
        print(f"{size:>5} {per_clip:>8.3f} {baseline / per_clip:>5.2f}x {found == reference}")


if __name__ == "__main__":
    main()
