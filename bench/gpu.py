"""GPU benchmark: full-size random Voxtral Mini and Small, LoRA / full / QLoRA, against the plan.

    python bench/gpu.py                         # one H100/H200-class GPU: ≈5 min, at most 8
    python bench/gpu.py --only mini-lora --output /tmp/gpu.json
    python bench/gpu.py --smoke                 # CPU, tiny-random geometry, 2 steps (a test)

No network, no weights: each case builds a randomly initialised VoxtralForConditionalGeneration
from the configuration voxtune ships for the model (src/voxtune/plan/presets/*.json) directly
on the GPU, with the tiny-random processor (the same 30-s window, prompt layout and special
tokens; its token ids lie inside the real vocabulary). The cases:

  mini-lora    Voxtral-Mini-3B, LoRA (voxtune's `apply_lora`), bf16 base, batch 8
  mini-full    Voxtral-Mini-3B, full FT (encoder frozen), fp32 master weights under bf16
               autocast, 8-bit AdamW (bitsandbytes), gradient checkpointing, batch 8
  small-qlora  Voxtral-Small-24B, LoRA on a 4-bit NF4 decoder (bitsandbytes, double-quantized),
               the rest upcast to fp32 (peft's k-bit preparation, as the plan counts it),
               gradient checkpointing, batch 4

Each case runs in its own process (one that runs out of memory, times out or crashes loses
only its own row) for WARMUP + STEPS optimizer steps on synthetic clips (noise, 3–20 s, random
transcripts; content does not change the cost), fed by voxtune's device data path
(`TranscriptionDataset(…, None)` + `LogMel` on the GPU), then as many steps fed by the upstream
recipe's collator (bench/train.py's `UpstreamCollator`: `apply_transcription_request` per batch
on the CPU, in one DataLoader worker as upstream) on the same model, for the ratio. It reports
samples/s and tokens/s (real tokens, audio placeholders included), MFU = k·Σ(parameters of a part
× the positions it processes)/s over the card's dense bf16 peak, k = 6 for full, 4 for LoRA
(encoder: 1,500 positions per window; projector: 375; language model and head: the text tokens;
embedding lookups not counted), peak GPU memory (reserved by PyTorch's allocator, + the CUDA
context as the plan counts it) next to `voxtune.plan.plan_run` for the same spec, and the
log-mel's cost per clip on the GPU against the upstream collator's on the CPU.

Needs the train extra (torch, transformers, peft, mistral-common[audio]) and bitsandbytes;
without bitsandbytes (or without a GPU for it) its cases are skipped and the output says so.
Writes every row, failed ones too, to `--output` (default bench/results/gpu.json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from upstream import PEAK_FLOPS, UpstreamCollator  # sibling bench script: one upstream, one table

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: every model here is built locally

# --- defaults (sized so that all three cases take ≤ 8 minutes on one H100/H200) --------------
MINI, SMALL = "mistralai/Voxtral-Mini-3B-2507", "mistralai/Voxtral-Small-24B-2507"
STEPS, WARMUP = 24, 3  # timed steps per data path; untimed first steps (allocations, autotune)
CLIPS = 64  # synthetic clips, cycled
SECONDS = (3.0, 20.0)  # clip durations, uniform
# --smoke: only that the code runs, on a busy 2-core CPU: a 4-s window, short clips, batch 2
SMOKE_PRESET, SMOKE_SECONDS, SMOKE_BATCH, SMOKE_CLIPS = "tiny-random-4s", (1.0, 3.0), 2, 4
WORDS_PER_SECOND = 2.5
CASE_TIMEOUT_S = {"mini-lora": 120, "mini-full": 150, "small-qlora": 210}
RESULTS = Path(__file__).with_name("results") / "gpu.json"


@dataclass(frozen=True)
class Case:
    name: str
    model: str  # a preset the plan knows
    mode: str  # lora | full | qlora
    batch_size: int
    checkpointing: bool

    @property
    def needs_bitsandbytes(self) -> bool:
        return self.mode != "lora"  # full: 8-bit AdamW; qlora: the 4-bit base

    def spec(self, base_model: str, on_gpu: bool, max_tokens: int) -> Any:
        from voxtune.spec import RunSpec

        return RunSpec.model_validate({
            "name": f"bench-{self.name}", "base_model": base_model, "mode": self.mode,
            # the plan's longest sequence: a 30-s window and the corpus' longest transcript
            "data": {"max_transcript_tokens": max_tokens, "max_chars_per_second": 100.0},
            "training": {"batch_size": self.batch_size, "grad_accum": 1,
                         "gradient_checkpointing": self.checkpointing},
            "resources": {"gpus": 1 if on_gpu else 0}})


CASES = (Case("mini-lora", MINI, "lora", 8, False), Case("mini-full", MINI, "full", 8, True),
         Case("small-qlora", SMALL, "qlora", 4, True))


# --- the corpus (no espeak-ng needed: the machine with the GPU may have none) -----------------

def make_corpus(folder: Path, clips: int, seconds_range: tuple[float, float],
                seed: int = 0) -> list[Any]:
    """`clips` noise clips stored as the prepare step stores them (16-kHz FLAC + Clip)."""
    import numpy as np
    import soundfile

    from voxtune.data.manifest import AUDIO_DIR, Clip

    rng = np.random.default_rng(seed)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    corpus = []
    for index in range(clips):
        seconds = float(rng.uniform(*seconds_range))
        relative = f"{AUDIO_DIR}/clip{index}.flac"
        (folder / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
        soundfile.write(folder / relative, 0.1 * rng.standard_normal(int(seconds * 16_000)),
                        16_000, subtype="PCM_16")
        text = " ".join(rng.choice(words, int(seconds * WORDS_PER_SECOND)))
        corpus.append(Clip(id=f"clip{index}", audio_path=relative, text=text, duration=seconds,
                           language="en", split="train", source="bench:noise"))
    return corpus


class UpstreamRows:
    """Upstream's (audio, text) rows, the audio decoded on every access as `datasets` does."""

    def __init__(self, clips: list[Any], prepared: Path):
        self.clips, self.prepared = clips, prepared

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        from voxtune.train.collator import read_audio

        clip = self.clips[index]
        return {"audio": {"array": read_audio(self.prepared / clip.audio_path),
                          "sampling_rate": 16_000}, "text": clip.text}


# --- one case, in its own process ---------------------------------------------------------------

def bitsandbytes_missing(on_gpu: bool) -> str | None:
    """Why bitsandbytes cannot run here, or None."""
    if not on_gpu:
        return "bitsandbytes' 8-bit optimizers and 4-bit layers need a CUDA GPU"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        return f"bitsandbytes is not installed ({error})"
    return None


def build_model(case: Case, preset: str, on_gpu: bool) -> Any:
    """The case's geometry with random weights, built where it trains, adapted as the mode says."""
    import torch
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration

    from voxtune.plan.geometry import load_config
    from voxtune.spec import TrainingSpec
    from voxtune.train.adapt import apply_lora, prepare_full

    config = VoxtralConfig(**{k: v for k, v in load_config(preset).items()
                              if not k.startswith("_")})
    # full FT keeps fp32 master weights (as the recipe); adapters train over a bf16 base
    dtype = torch.float32 if case.mode == "full" or not on_gpu else torch.bfloat16
    torch.manual_seed(0)
    with torch.device("cuda" if on_gpu else "cpu"):
        model = VoxtralForConditionalGeneration._from_config(config, dtype=dtype)
    if case.mode == "qlora":
        from peft import prepare_model_for_kbit_training

        quantize_language_model(model)
        # as the plan counts QLoRA: what stays unquantized is upcast to fp32 (checkpointing below)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = (prepare_full(model, TrainingSpec()) if case.mode == "full"
             else apply_lora(model, TrainingSpec().lora))
    if case.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if case.mode != "full":
            model.enable_input_require_grads()  # the frozen embeddings give no grad to recompute
    return model.train()


def quantize_language_model(model: Any) -> None:
    """QLoRA's base: every Linear of the language model's decoder becomes a 4-bit NF4
    bitsandbytes layer (double-quantized statistics, computing in bf16); the encoder, projector,
    embeddings and head are not quantized. Layer by layer on the GPU, so the peak is the bf16
    model that was built."""
    import bitsandbytes as bnb
    import torch

    # parents only: a list holding the Linear modules would keep every bf16 weight alive
    parents = [module for module in model.model.language_model.modules()
               if any(type(child) is torch.nn.Linear for child in module.children())]
    for parent in parents:
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear:
                continue
            layer = bnb.nn.Linear4bit(child.in_features, child.out_features,
                                      bias=child.bias is not None, compute_dtype=torch.bfloat16,
                                      compress_statistics=True, quant_type="nf4", device="meta")
            layer.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False,
                                             compress_statistics=True, quant_type="nf4",
                                             module=layer).to(child.weight.device)
            if child.bias is not None:
                layer.bias = child.bias
            setattr(parent, name, layer)
    torch.cuda.empty_cache()


def make_optimizer(name: str, parameters: list[Any], on_gpu: bool) -> Any:
    import torch

    if name == "adamw_torch":
        return torch.optim.AdamW(parameters, lr=1e-5, fused=on_gpu)
    import bitsandbytes as bnb

    return {"adamw_8bit": bnb.optim.AdamW8bit,
            "paged_adamw_8bit": bnb.optim.PagedAdamW8bit}[name](parameters, lr=1e-5)


def train_steps(model: Any, optimizer: Any, loader: Any, steps: int, warmup: int,
                on_gpu: bool) -> dict[str, float]:
    """`warmup` + `steps` optimizer steps; samples/s and tokens/s over the timed ones."""
    import torch

    device = "cuda" if on_gpu else "cpu"
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu
                else contextlib.nullcontext())
    batches, samples, tokens, started = iter(loader), 0, 0, 0.0
    for step in range(warmup + steps):
        if step == warmup:
            if on_gpu:
                torch.cuda.synchronize()
            started, samples, tokens = time.perf_counter(), 0, 0
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        samples += batch["input_ids"].shape[0]
        tokens += int(batch["attention_mask"].sum())  # counted on the host: no GPU sync
        batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if on_gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"samples_per_s": samples / seconds, "tokens_per_s": tokens / seconds,
            "seconds_per_step": seconds / steps, "loss": float(loss)}


def flops_per_token_weights(preset: str) -> tuple[float, float]:
    """(Σ parameters × positions per window, parameters per text token), from the plan's
    geometry: the encoder sees 1,500 positions and the projector 375 per window."""
    from voxtune.plan.geometry import load_geometry

    g = load_geometry(preset)
    audio = g.encoder_parameters * g.audio_positions + g.projector_parameters * (
        g.audio_positions // 4)
    text = g.language_model_parameters - g.embedding_parameters + g.head_parameters
    return float(audio), float(text)


def run_case(case: Case, folder: Path, smoke: bool) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    from voxtune.data.manifest import Clip, read_jsonl
    from voxtune.models.load import load
    from voxtune.plan import plan_run
    from voxtune.plan.memory import CUDA_CONTEXT_GIB
    from voxtune.train.collator import LogMel, TrainingCollator, TranscriptionDataset

    on_gpu = torch.cuda.is_available() and not smoke  # --smoke: on the CPU, also beside a GPU
    steps, warmup = (2, 1) if smoke else (STEPS, WARMUP)
    preset = SMOKE_PRESET if smoke else case.model
    if smoke:
        case = replace(case, batch_size=SMOKE_BATCH)
    clips = [Clip(**row) for row in read_jsonl(folder / "clips.jsonl")]
    # the tiny-random processor has the 30-s window of both real models (tiny-random-4s: 4 s)
    processor = load(SMOKE_PRESET if smoke else "tiny-random")[1]
    dataset = TranscriptionDataset(clips, folder, processor, None, "en")
    max_tokens = max(len(ids) - labels.count(-100) for ids, labels in
                     zip(dataset.input_ids, dataset.labels, strict=True))
    spec = case.spec(preset, on_gpu, max_tokens)
    plan = plan_run(spec)
    result: dict[str, Any] = {"case": case.name, "model": preset, "mode": case.mode,
                              "batch_size": case.batch_size,
                              "plan_gib": plan.estimate.gpu_total_gib,
                              "optimizer": spec.optimizer_for(on_gpu)}
    device = "cuda" if on_gpu else "cpu"
    log_mel = LogMel.of(processor, device)
    ours = DataLoader(dataset, case.batch_size, shuffle=True, drop_last=True, num_workers=0,
                      collate_fn=TrainingCollator(processor.tokenizer.pad_token_id, log_mel))
    upstream = DataLoader(UpstreamRows(clips, folder), case.batch_size, shuffle=True,
                          drop_last=True, num_workers=1, collate_fn=UpstreamCollator(processor))
    try:
        model = build_model(case, preset, on_gpu)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_optimizer(result["optimizer"], trainable, on_gpu)
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        result["ours"] = train_steps(model, optimizer, ours, steps, warmup, on_gpu)
        if on_gpu:
            result["peak_gib"] = torch.cuda.max_memory_reserved() / 2**30 + CUDA_CONTEXT_GIB
            result["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["upstream"] = train_steps(model, optimizer, upstream, steps, warmup, on_gpu)
    except torch.OutOfMemoryError as error:
        result["error"] = f"out of memory: {str(error).splitlines()[0]}"
        return result
    audio, text = flops_per_token_weights(preset)
    k = 6 if case.mode == "full" else 4
    windows = sum(log_mel.windows(int(c.duration * 16_000)) for c in clips) / len(clips)
    for side in ("ours", "upstream"):
        figures = result[side]
        figures["flops_per_s"] = k * (audio * windows * figures["samples_per_s"]
                                      + text * figures["tokens_per_s"])
    result["data_path_ms_per_clip"] = data_path_costs(dataset, log_mel, UpstreamRows(clips, folder),
                                                      UpstreamCollator(processor),
                                                      case.batch_size, on_gpu)
    return result


def data_path_costs(dataset: Any, log_mel: Any, rows: Any, upstream: Any, batch: int,
                    on_gpu: bool) -> dict[str, float]:
    """Wall ms per clip, outside training: our item + log-mel where the model runs, upstream's
    collator on the CPU (median of 5 batches)."""
    import statistics

    import torch

    def timed(work) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            work()
            if on_gpu:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        return 1000 * statistics.median(times) / batch

    audio = [dataset[i]["audio"] for i in range(batch)]
    return {"ours: read audio": timed(lambda: [dataset[i] for i in range(batch)]),
            f"ours: log-mel on {log_mel.device}": timed(lambda: log_mel(audio)),
            "upstream: row + collator on the CPU": timed(
                lambda: upstream([rows[i] for i in range(batch)]))}


# --- the driver ----------------------------------------------------------------------------------

def report(rows: list[dict[str, Any]], card: str, peak: float | None) -> None:
    print(f"\n| case ({card}) | samples/s | tokens/s | MFU | upstream samples/s | ours / upstream "
          "| peak GiB | plan GiB | peak / plan |\n|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "ours" not in row:
            print(f"| {row['case']} | {row.get('skipped') or row.get('error')} |||||||")
            continue
        ours, upstream = row["ours"], row.get("upstream", {})
        mfu = f"{100 * ours['flops_per_s'] / peak:.1f} %" if peak else "n/a"
        ratio = (f"{ours['samples_per_s'] / upstream['samples_per_s']:.2f}×" if upstream
                 else "—")
        measured = row.get("peak_gib")
        print(f"| {row['case']} | {ours['samples_per_s']:.2f} | {ours['tokens_per_s']:.0f} | "
              f"{mfu} | {upstream.get('samples_per_s', float('nan')):.2f} | {ratio} | "
              f"{measured or float('nan'):.1f} | {row['plan_gib']:.1f} | "
              f"{measured / row['plan_gib'] if measured else float('nan'):.2f} |")
    for row in rows:
        for label, value in row.get("data_path_ms_per_clip", {}).items():
            print(f"  {row['case']}: {label}: {value:.2f} ms per clip")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=[case.name for case in CASES], action="append")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU, tiny-random geometry, 2 steps per case: checks the script runs")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a case, run in this process
    args = parser.parse_args()
    if args.one:
        job = json.loads(args.one)
        print(json.dumps(run_case(Case(**job["case"]), Path(job["folder"]), job["smoke"])))
        return 0

    import torch

    on_gpu = torch.cuda.is_available() and not args.smoke  # --smoke: on the CPU, also beside a GPU
    card = torch.cuda.get_device_name() if on_gpu else f"CPU ({os.cpu_count()} cores)"
    peak = next((v for k, v in PEAK_FLOPS.items() if k in card), None) if on_gpu else None
    print(f"bench/gpu.py on {card}; dense bf16 peak {peak / 1e12 if peak else 'unknown'} "
          f"TFLOP/s; torch {torch.__version__}{'; SMOKE' if args.smoke else ''}", flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="voxtune-bench-gpu-") as scratch:
        folder = Path(scratch)
        clips = (make_corpus(folder, SMOKE_CLIPS, SMOKE_SECONDS) if args.smoke
                 else make_corpus(folder, CLIPS, SECONDS))
        (folder / "clips.jsonl").write_text("".join(
            json.dumps(asdict(clip)) + "\n" for clip in clips))
        for case in CASES:
            if args.only and case.name not in args.only:
                continue
            missing = bitsandbytes_missing(on_gpu) if case.needs_bitsandbytes else None
            if missing:
                rows.append({"case": case.name, "skipped": f"skipped: {missing}"})
                print(f"{case.name}: skipped: {missing}", flush=True)
                continue
            rows.append(run_in_child(case, folder, args.smoke))
            print(f"{case.name}: {json.dumps(rows[-1])}", flush=True)
    report(rows, card, peak)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"card": card, "peak_flops": peak, "smoke": args.smoke,
                                       "torch": torch.__version__, "rows": rows}, indent=2) + "\n")
    print(f"rows saved to {args.output}")
    return 0


def run_in_child(case: Case, folder: Path, smoke: bool) -> dict[str, Any]:
    """One case in a fresh process: its memory peak is its own, and its failure stays its own."""
    from voxtune.processes import die_with_parent

    job = json.dumps({"case": asdict(case), "folder": str(folder), "smoke": smoke})
    # the limits keep a GPU session inside its 8 minutes; a smoke run (a test) gets none
    timeout = None if smoke else CASE_TIMEOUT_S[case.name]
    try:
        done = subprocess.run([sys.executable, __file__, "--one", job], capture_output=True,
                              text=True, timeout=timeout, preexec_fn=die_with_parent)
    except subprocess.TimeoutExpired:
        return {"case": case.name, "error": f"timed out after {CASE_TIMEOUT_S[case.name]} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"case": case.name, "error": f"exit {done.returncode}: {done.stderr[-1500:]}"}
    return json.loads(lines[-1])


if __name__ == "__main__":
    sys.exit(main())
