"""Peak memory and time of writing Mistral's layout (what vLLM loads) for a full-size Voxtral, as
`voxtune publish` does beside merged and fully tuned weights (voxtune/publish/consolidated.py).

    .venv/bin/python bench/consolidate.py                       # Mini, bf16 (≈ 9.4 GB on disk)
    .venv/bin/python bench/consolidate.py --model mistralai/Voxtral-Small-24B-2507   # ≈ 49 GB

The weights are zeros in the published shapes and dtype (bf16), written as transformers shards
of ≤ 2 GB with their index (conversion reads tensor by tensor, so the source's sharding does not
change its memory); the conversion then runs in a process of its own, whose peak resident
memory (ru_maxrss) is the figure: the publish pod's memory (charts/voxtune values
`jobs.resources.publish.memory`, 8 Gi) must hold it. Needs twice the weights in free disk.
Recorded figures: docs/benchmarks.md, "Serving".
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCE_SHARD_BYTES = 2 * 10**9
GIB = 2**30


def write_zero_checkpoint(model: str, folder: Path) -> int:
    """A transformers checkpoint of `model`'s shapes, all zeros in bf16; returns its bytes."""
    import torch
    from safetensors.torch import save_file
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration

    from voxtune.models.presets import build_tiny_random
    from voxtune.plan.geometry import load_config

    build_tiny_random(folder, 30)  # the processor files (tekken.json, feature extractor)
    (folder / "model.safetensors").unlink()
    config = VoxtralConfig(**{key: value for key, value in load_config(model).items()
                              if not key.startswith("_")})
    with torch.device("meta"):
        shapes = VoxtralForConditionalGeneration(config).state_dict()
    config.save_pretrained(folder)
    shards: list[dict[str, torch.Tensor]] = [{}]
    held, total = 0, 0
    weight_map: dict[str, int] = {}
    for name, tensor in shapes.items():
        size = tensor.numel() * 2
        if held + size > SOURCE_SHARD_BYTES and shards[-1]:
            shards.append({})
            held = 0
        shards[-1][name] = tensor  # meta: materialised one shard at a time below
        weight_map[name] = len(shards)
        held, total = held + size, total + size
    names = [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    for shard, name in zip(shards, names, strict=True):
        save_file({key: torch.zeros(value.shape, dtype=torch.bfloat16)
                   for key, value in shard.items()}, folder / name, metadata={"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {key: names[index - 1] for key, index in weight_map.items()}}))
    return total


def convert(folder: str) -> None:
    """The measured process: the conversion alone."""
    from voxtune.publish.consolidated import write_consolidated

    started = time.perf_counter()
    written = write_consolidated(Path(folder))
    print(json.dumps({"seconds": time.perf_counter() - started, "files": written["files"],
                      "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                      * 1024 / GIB}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mistralai/Voxtral-Mini-3B-2507")
    parser.add_argument("--convert", help=argparse.SUPPRESS)  # the measured process
    args = parser.parse_args()
    if args.convert:
        return convert(args.convert)
    folder = Path(tempfile.mkdtemp(prefix="voxtune-bench-consolidate-"))
    try:
        weights = write_zero_checkpoint(args.model, folder)
        done = subprocess.run([sys.executable, __file__, "--convert", str(folder)],
                              capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.splitlines()[-1])
        shards = [name for name in result["files"] if name.endswith(".safetensors")]
        print(f"{args.model}: {weights / GIB:.2f} GiB of bf16 weights → {len(shards)} "
              f"consolidated shards in {result['seconds']:.0f} s, peak resident memory "
              f"{result['peak_gib']:.2f} GiB")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
