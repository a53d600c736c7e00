"""Training throughput: voxtune's data path against the upstream recipe's, same model, same data.

    make bench                                        # also runs .venv/bin/python bench/train.py
    .venv/bin/python bench/train.py --steps 60 --batch-size 2 --clips 48 --repeats 3
    .venv/bin/python bench/train.py --upstream-workers 0   # (a) without its DataLoader worker
    python bench/train.py --model full-random --steps 30   # CUDA only; UNTESTED (see below)

One process, one espeak-ng corpus prepared by `voxtune.data.prepare`, one model (fresh copy per
run), LoRA from `voxtune.train.adapt.apply_lora` on both sides, the Hugging Face Trainer for the
same number of steps at the same batch size:

  (a) upstream — our reimplementation of the data path of Deep-unlearning/Finetune-Voxtral-ASR
      `train.py` / `train_lora.py` (read in the copy inside Josephrp/Voxtral-WIND): a `datasets`
      table of (audio, text) rows and a collator that calls
      `processor.apply_transcription_request(language="en", audio=[arrays], format=["WAV"]*B)`
      once per batch — each array written to an in-memory WAV, read back by mistral-common,
      padded to 30 s, log-mel computed, in every epoch; prompts left-padded by the Mistral
      tokenizer — then appends the transcript tokens (no EOS, as upstream) and right-pads the
      batch. `dataloader_num_workers=1`, random order (no length grouping), TrainingArguments
      defaults otherwise (fused AdamW). Upstream decodes with datasets `Audio(sampling_rate=
      16000)`, whose decoder (torchcodec) does not import beside CPU torch, so the column is
      `Audio(decode=False)` and each row access decodes the prepared 16 kHz FLAC with soundfile.
  (b) ours — `TranscriptionDataset` (prompt ids + log-mel cached per clip, once),
      `TrainingCollator` and `recipe.training_arguments` (length-grouped batches, no workers).
      Filling the feature cache is timed on its own: a one-time cost, not in (b)'s samples/s.

Rows: (a) and (b) at fp32 and at the recipe's own precision (`pick_dtype("auto")`: bf16 on
CPUs with bf16 instructions), same LoRA; and upstream as written: bf16 weights + `bf16=True`
(on a CPU TrainingArguments refuses that without `use_cpu=True`, so that is added) and
train_lora.py's adapters (q/k/v/o by plain names: also the audio encoder's q/k/v).
`--upstream-workers 0` collates (a) inline instead of in upstream's one DataLoader worker.
samples/s counts the steps after the first WARMUP_STEPS (worker start, first allocations); best
of `--repeats` runs taken in turn, since other work on a shared machine only ever slows a run
down. Checkpoint saving is off on both sides. Memory: on CPU the main process's peak RSS (reset
before each run via /proc/self/clear_refs) and, for upstream, the private memory of its
DataLoader worker; on CUDA `torch.cuda.max_memory_allocated`.

`--model full-random` (CUDA only): Voxtral-Mini-3B shapes (`VoxtralConfig()` defaults,
audio_token_id=24) with random weights built on the GPU — nothing is downloaded — and the
tiny-random processor (same 30-s window and special tokens; its token ids lie inside the big
vocabulary). LoRA and full fine-tuning, upstream as written vs ours, with MFU from matmul FLOPs
(`train_flops_per_sample`). UNTESTED: no GPU was available when it was written.
Recorded figures and their reading: docs/benchmarks.md, "Training throughput vs upstream".
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from measure import (
    WARMUP_STEPS,
    front_end_costs,
    peak_memory_gib,
    reset_peak_memory,
    step_clock,
)
from upstream import (
    LANGUAGE,
    PEAK_FLOPS,
    UpstreamCollator,
    make_corpus,
    quiet,
    upstream_arguments,
    upstream_lora,
    upstream_rows,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: every model here is built locally

# --- defaults (sized so that `make bench` takes ≈2–3 minutes on 2 shared CPU cores) -------------
STEPS = 60  # optimizer steps per run
BATCH_SIZE = 2  # clips per step: upstream's per_device_train_batch_size
GRAD_ACCUM = 1  # upstream uses 4; accumulation does not change the per-sample data-path cost
CLIPS = 48  # espeak-ng clips (≈2.3 s each); runs cycle through them epoch after epoch
REPEATS = 3  # runs per setup, taken in turn; the best counts


@dataclass(frozen=True)
class Setup:
    recipe: str  # "upstream" | "ours"
    mode: str  # "lora" | "full"
    precision: str  # the Trainer's flag: "fp32" | "bf16" | "fp16"
    adapters: str = "voxtune"  # LoRA: "voxtune" (apply_lora) | "upstream" (train_lora.py's)
    workers: int = 1  # upstream's DataLoader workers

    @property
    def as_written(self) -> bool:
        return self.recipe == "upstream" and (self.mode == "full" or self.adapters == "upstream")

    @property
    def label(self) -> str:
        if self.as_written:
            what = "its LoRA (also on encoder q/k/v)" if self.mode == "lora" else "all weights"
            return (f"(a) upstream as written: {self.mode}, {self.precision} weights, {what}"
                    f"{self.worker_note}")
        side = "(a) upstream data path" if self.recipe == "upstream" else "(b) ours"
        return f"{side}: {self.mode}, {self.precision}{self.worker_note}"

    @property
    def worker_note(self) -> str:
        if self.recipe == "upstream" and self.workers != 1:
            return f", {self.workers} workers"
        return ""


@dataclass
class Result:
    setup: Setup
    samples_per_s: list[float] = field(default_factory=list)
    step_s: list[float] = field(default_factory=list)
    peak_gib: list[float] = field(default_factory=list)
    above_start_gib: list[float] = field(default_factory=list)
    worker_mib: list[float] = field(default_factory=list)
    flops_per_sample: float = 0.0


# --- the corpus ---------------------------------------------------------------------------------


# --- (a) upstream, reimplemented ----------------------------------------------------------------


# --- (b) ours -----------------------------------------------------------------------------------

def our_arguments(output: Path, steps: int, batch_size: int, grad_accum: int, mode: str,
                  precision: str, on_gpu: bool) -> Any:
    from transformers.trainer_utils import SaveStrategy

    from voxtune.spec import RunSpec, TrainingSpec
    from voxtune.train.recipe import training_arguments

    spec = RunSpec(name="bench-train", mode=mode, training=TrainingSpec(
        max_steps=steps, batch_size=batch_size, grad_accum=grad_accum, save_steps=steps))
    args = training_arguments(spec, output, precision, on_gpu)
    args.save_strategy = SaveStrategy.NO  # the benchmark times steps, not checkpoint writes
    return args


# --- models -------------------------------------------------------------------------------------

def fresh_model(name: str, setup: Setup, on_gpu: bool) -> Any:
    """A new copy of the model in the dtype each recipe trains it in, LoRA or full prepared."""
    import torch

    from voxtune.models.load import load
    from voxtune.spec import LoraSpec, TrainingSpec
    from voxtune.train.adapt import apply_lora, prepare_full

    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(setup.precision, torch.float32)
    # Upstream loads bf16 weights whatever the mode; ours keeps fp32 master weights for full FT.
    dtype = torch.float32 if setup.recipe == "ours" and setup.mode == "full" else compute
    model = full_random_model(dtype) if name == "full-random" else load(name, dtype)[0]
    if on_gpu:
        model.to("cuda")
    if setup.mode == "lora" and setup.adapters == "upstream":
        return upstream_lora(model)
    if setup.mode == "lora":
        return apply_lora(model, LoraSpec())
    if setup.recipe == "ours":
        return prepare_full(model, TrainingSpec())  # audio encoder frozen
    return model  # upstream train.py trains every weight, the encoder included


def full_random_model(dtype: Any) -> Any:
    """Voxtral-Mini-3B geometry with random weights, built on the GPU. UNTESTED (no GPU here)."""
    import torch
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration

    from voxtune.models.presets import AUDIO_TOKEN_ID

    torch.manual_seed(0)
    with torch.device("cuda"):
        return VoxtralForConditionalGeneration._from_config(
            VoxtralConfig(audio_token_id=AUDIO_TOKEN_ID), dtype=dtype)


def train_flops_per_sample(model: Any, text_tokens: float) -> float:
    """Matmul FLOPs of one training sample: forward 2·params·tokens plus attention scores per
    part (encoder → projector → language model incl. lm_head; embeddings are lookups), times
    (1 + 1 if anything at or below the part trains (activation gradients) + its trainable share
    (weight gradients)). A frozen encoder under a trained LM costs one forward only."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    audio, text = base.config.audio_config, base.config.text_config
    positions = audio.max_source_positions  # encoder positions per 30-s window
    audio_tokens = positions * audio.hidden_size // audio.intermediate_size
    embeddings = {id(p) for p in base.get_input_embeddings().parameters()}
    parts = [
        ([base.model.audio_tower], positions,
         4 * audio.num_hidden_layers * positions**2 * audio.hidden_size),
        ([base.model.multi_modal_projector], audio_tokens, 0),
        ([base.model.language_model, base.lm_head], text_tokens,
         4 * text.num_hidden_layers * text_tokens**2 * text.num_attention_heads * text.head_dim),
    ]
    total, gradients_flow = 0.0, False
    for modules, tokens, attention in parts:
        weights = [p for m in modules for p in m.parameters() if id(p) not in embeddings]
        count = sum(p.numel() for p in weights)
        trainable = sum(p.numel() for p in weights if p.requires_grad)
        gradients_flow = gradients_flow or trainable > 0
        total += (2 * count * tokens + attention) * (1 + gradients_flow + trainable / count)
    return total


# --- measuring ----------------------------------------------------------------------------------


# --- one run ------------------------------------------------------------------------------------

def run_once(setup: Setup, context: dict, result: Result) -> None:
    from transformers import Trainer

    on_gpu, steps = context["on_gpu"], context["steps"]
    start = reset_peak_memory(on_gpu)
    clock = step_clock(on_gpu)
    with quiet(), tempfile.TemporaryDirectory() as output:
        model = fresh_model(context["model"], setup, on_gpu)
        if setup.recipe == "upstream":
            args = upstream_arguments(Path(output), steps, context["batch_size"],
                                      context["grad_accum"], setup.precision, setup.workers,
                                      on_gpu)
            dataset, collator = context["rows"], UpstreamCollator(context["processor"])
        else:
            args = our_arguments(Path(output), steps, context["batch_size"],
                                 context["grad_accum"], setup.mode, setup.precision, on_gpu)
            dataset, collator = context["ours"], context["our_collator"]
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                          callbacks=[clock])
        trainer.train()
        result.flops_per_sample = train_flops_per_sample(model, context["text_tokens"])
    timed = clock.times[WARMUP_STEPS - 1:]
    step = (timed[-1] - timed[0]) / (len(timed) - 1)
    result.step_s.append(step)
    result.samples_per_s.append(context["batch_size"] * context["grad_accum"] / step)
    peak = peak_memory_gib(on_gpu)
    result.peak_gib.append(peak)
    result.above_start_gib.append(peak - start)
    if clock.worker_mib is not None:
        result.worker_mib.append(clock.worker_mib)
    del trainer, model
    print(f"  {setup.label}: {result.samples_per_s[-1]:.2f} samples/s, "
          f"{step:.3f} s/step, peak {peak:.2f} GiB", flush=True)


# --- main ---------------------------------------------------------------------------------------

def setups_for(model: str, on_gpu: bool, workers: int) -> list[Setup]:
    import torch

    from voxtune.models.load import pick_dtype

    auto = pick_dtype("auto", "cuda" if on_gpu else "cpu")
    auto_name = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(auto, "fp32")
    as_written = Setup("upstream", "lora", "bf16", "upstream", workers)
    if model == "full-random":  # GPU: bf16 is the same dtype on both sides
        return [as_written, *(setup for mode in ("lora", "full") for setup in (
            Setup("upstream", mode, "bf16", workers=workers), Setup("ours", mode, auto_name)))]
    setups = [Setup("upstream", "lora", "fp32", workers=workers), Setup("ours", "lora", "fp32"),
              as_written]
    if auto_name != "fp32":
        setups += [Setup("upstream", "lora", auto_name, workers=workers),
                   Setup("ours", "lora", auto_name)]
    return setups


def partner(setup: Setup, results: list[Result]) -> Result | None:
    """The upstream run with the same mode, precision flag and adapters (for full: as written)."""
    return next((r for r in results if r.setup.recipe == "upstream"
                 and r.setup.mode == setup.mode and r.setup.precision == setup.precision
                 and (r.setup.adapters == setup.adapters or setup.mode == "full")), None)


def ratio(result: Result, other: Result | None) -> str:
    if other is None or other is result:
        return "—"
    return f"{max(result.samples_per_s) / max(other.samples_per_s):.2f}×"


def report(results: list[Result], on_gpu: bool, costs: dict[str, float], caching_s: float,
           warm_build_s: float, clips: int, batch_size: int) -> None:
    import torch

    peak_flops = None
    if on_gpu:
        name = torch.cuda.get_device_name()
        peak_flops = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
    memory = ["peak GPU memory GiB", "MFU"] if on_gpu else [
        "peak RSS GiB", "RSS above start GiB", "worker private MiB"]
    header = ["run", "samples/s (best)", "each run", "s/step (best)", *memory,
              "vs (a) same dtype", "vs (a) as written"]
    print("\n| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|")
    for result in results:
        best = max(result.samples_per_s)
        as_written = next((r for r in results if r.setup.as_written
                           and r.setup.mode == result.setup.mode), None)
        if on_gpu:
            mfu = (f"{100 * best * result.flops_per_sample / peak_flops:.1f} %"
                   if peak_flops else "n/a (unknown GPU peak)")
            memory = [f"{max(result.peak_gib):.2f}", mfu]
        else:
            memory = [f"{max(result.peak_gib):.2f}", f"{max(result.above_start_gib):.2f}",
                      f"{max(result.worker_mib):.0f}" if result.worker_mib else "—"]
        row = [result.setup.label, f"{best:.2f}",
               ", ".join(f"{value:.2f}" for value in result.samples_per_s),
               f"{min(result.step_s):.3f}", *memory,
               ratio(result, partner(result.setup, results)), ratio(result, as_written)]
        print("| " + " | ".join(row) + " |")
    print("\n| data path, per sample | ms |\n|---|---|")
    for label, value in costs.items():
        print(f"| {label} | {value:.2f} |")
    print(f"| (b) one-time: fill the feature cache ({clips} clips, {caching_s:.2f} s) | "
          f"{1000 * caching_s / clips:.2f} |")
    print(f"| (b) per run: build the dataset from the warm cache ({warm_build_s:.2f} s) | "
          f"{1000 * warm_build_s / clips:.2f} |")
    upstream = next((r for r in results if r.setup.recipe == "upstream"
                     and r.setup.precision == "fp32" and not r.setup.as_written), None)
    if upstream is not None:
        # In a DataLoader worker torch runs 1 thread; inline, the trainer's own threads.
        threads = 1 if upstream.setup.workers else torch.get_num_threads()
        collate_s = costs[f"(a) collator, {threads} thread(s)"] * batch_size / 1000  # per step
        share = collate_s / min(upstream.step_s)
        where = "in its worker" if upstream.setup.workers else "inline"
        print(f"\n(a)'s collator work ({where}, {threads} thread(s)) = {100 * share:.0f} % of "
              "its best fp32 step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=STEPS,
                        help="optimizer steps per run; raise for steadier figures")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="clips per step")
    parser.add_argument("--grad-accum", type=int, default=GRAD_ACCUM,
                        help="micro-batches per step (upstream: 4)")
    parser.add_argument("--clips", type=int, default=CLIPS, help="espeak-ng clips to synthesize")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"runs per setup, best counts (default {REPEATS}; 1 for full-random)")
    parser.add_argument("--upstream-workers", type=int, default=1,
                        help="DataLoader workers for (a) (upstream: 1); 0 collates inline, which "
                             "shows what the worker costs or saves on this machine")
    parser.add_argument("--model", default="tiny-random",
                        help="tiny-random (default), any name voxtune.models.load.load takes, or "
                             "full-random (CUDA only: full-size random Voxtral-Mini, untested)")
    options = parser.parse_args()
    if options.steps <= WARMUP_STEPS + 1:
        parser.error(f"--steps must be above {WARMUP_STEPS + 1} (the first {WARMUP_STEPS} "
                     "are warm-up)")

    import torch

    from voxtune.data.manifest import read_manifest
    from voxtune.models.load import cpu_has_native_bf16, load
    from voxtune.train.collator import TrainingCollator, TranscriptionDataset

    on_gpu = torch.cuda.is_available()
    if options.model == "full-random" and not on_gpu:
        sys.exit("--model full-random needs a CUDA GPU (≈4.7 B parameters); "
                 "on a CPU use the default tiny-random")
    repeats = options.repeats or (1 if options.model == "full-random" else REPEATS)
    device = torch.cuda.get_device_name() if on_gpu else (
        f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
        f"native bf16: {cpu_has_native_bf16()}")
    print(f"bench/train.py: model {options.model}, {options.steps} steps × batch "
          f"{options.batch_size} × accum {options.grad_accum}, {options.clips} clips, best of "
          f"{repeats}; {device}; load average {os.getloadavg()[0]:.2f}", flush=True)
    print("upstream audio: datasets Audio(decode=False) + soundfile, because datasets' own "
          "decoder (torchcodec) does not import beside CPU torch")

    with tempfile.TemporaryDirectory(prefix="voxtune-bench-train-") as scratch:
        # 1. the corpus, and the processor both recipes share
        prepared = make_corpus(Path(scratch), options.clips)
        clips = read_manifest(prepared)
        with quiet():
            processor = load("tiny-random")[1] if options.model == "full-random" else load(
                options.model)[1]

        # 2. both datasets; ours fills its feature cache once (timed), then is rebuilt warm
        rows = upstream_rows(clips, prepared)
        cache = Path(scratch) / "features"
        started = time.perf_counter()
        with quiet():
            TranscriptionDataset(clips, prepared, processor, cache, LANGUAGE)
        caching_s = time.perf_counter() - started
        started = time.perf_counter()
        with quiet():
            ours = TranscriptionDataset(clips, prepared, processor, cache, LANGUAGE)
        warm_build_s = time.perf_counter() - started

        # 3. what each data path costs per sample, outside training
        costs = front_end_costs(processor, rows, ours, options.batch_size)

        # 4. the training runs, setups taken in turn
        context = {"model": options.model, "on_gpu": on_gpu, "steps": options.steps,
                   "batch_size": options.batch_size, "grad_accum": options.grad_accum,
                   "processor": processor, "rows": rows, "ours": ours,
                   "our_collator": TrainingCollator(processor.tokenizer.pad_token_id),
                   "text_tokens": statistics.mean(ours.lengths)}
        results = [Result(setup)
                   for setup in setups_for(options.model, on_gpu, options.upstream_workers)]
        for attempt in range(repeats):
            print(f"round {attempt + 1}/{repeats}", flush=True)
            for result in results:
                run_once(result.setup, context, result)

    # 5. the tables
    report(results, on_gpu, costs, caching_s, warm_build_s, len(clips), options.batch_size)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
