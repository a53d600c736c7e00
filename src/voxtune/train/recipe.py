"""Train step: a prepared manifest → a fine-tuned Voxtral, with WER/CER base vs tuned.

Runbook:
    voxtune train --data prepared/ --output runs/r --model tiny-random --mode lora --max-steps 20
    voxtune train --run-dir $VOXTUNE_HOME/runs/my-run          # everything from spec.yaml
    torchrun --nproc-per-node 4 -m voxtune train --run-dir …     # data-parallel, N GPUs

Run the same command again after a crash or kill: it says "resuming from …" and finishes the
same number of steps. SIGTERM (pod preemption) saves a checkpoint at the end of the current step
and exits 75 (retryable; see `signals`). A full disk exits 74; running out of GPU memory, or an
optimizer that cannot run here, exits 2 with what to change.

Outputs in the run folder: checkpoints/ (rolling, for resuming only), final/ (adapter, or bf16
weights, + processor + spec.yaml; never optimizer state), metrics.json, trackio/ (metrics).

This file is the loop, top to bottom; the choices it makes are beside it: `resources` (loading,
optimizer, DDP, out of memory), `adapt` (LoRA, QLoRA, full), `checkpoints` (resume, final/,
full disk), `signals` (SIGTERM), `tracking` (progress lines, trackio), `collator` (the data).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from voxtune.data.manifest import Clip, read_manifest
from voxtune.errors import RetryableError, UserError
from voxtune.files import write_atomic
from voxtune.run.layout import RunFolder
from voxtune.run.progress import phase
from voxtune.spec import CHECKPOINTING, LEARNING_RATES, RunSpec

FEATURES = "features"


def training_arguments(spec: RunSpec, output: Path, dtype_name: str, on_gpu: bool,
                       layers: Sequence[str] = (), optimizer: str | None = None) -> Any:
    """The Trainer's arguments for `spec`. `layers`: the model's layer classes, which FSDP
    wraps when the run is sharded; `optimizer`: the Trainer's name for the spec's optimizer
    (`resources.trainer_optimizer`), by default the spec's own without checking it can run."""
    from transformers import TrainingArguments

    from voxtune.train.distributed import fsdp_arguments, processes
    from voxtune.train.resources import TRAINER_OPTIMIZERS

    training = spec.training
    sharding = fsdp_arguments(spec, layers, processes())  # {} unless resources.strategy: fsdp
    # spec validation fills these by mode; a spec changed with model_copy skipped validation
    learning_rate = training.learning_rate or LEARNING_RATES[spec.mode]
    checkpointing = training.gradient_checkpointing
    checkpointing = CHECKPOINTING[spec.mode] if checkpointing is None else checkpointing
    return TrainingArguments(
        output_dir=str(output),
        max_steps=training.max_steps or -1,
        num_train_epochs=training.epochs,
        learning_rate=learning_rate,
        per_device_train_batch_size=training.batch_size,
        gradient_accumulation_steps=training.grad_accum,
        warmup_steps=training.warmup_ratio,  # a float < 1 is read as a ratio
        lr_scheduler_type="cosine",
        save_strategy="steps",
        save_steps=training.save_steps,
        save_total_limit=training.keep_checkpoints,
        logging_steps=1,
        bf16=dtype_name == "bf16",
        fp16=dtype_name == "fp16",
        # under FSDP its own checkpointing (in `sharding`): this one would gather layers twice
        activation_checkpointing=checkpointing and not sharding,
        activation_checkpointing_kwargs={"use_reentrant": False},  # works with frozen inputs
        optim=optimizer or TRAINER_OPTIMIZERS[spec.optimizer_for(on_gpu)],
        use_cpu=not on_gpu,  # also what lets bf16 autocast run on CPUs that support it
        seed=training.seed,
        # similar lengths per batch: less padding (the spec field says when not to)
        train_sampling_strategy="group_by_length" if training.group_by_length else "random",
        remove_unused_columns=False,  # our collator needs every field
        dataloader_num_workers=0,  # features are cached on disk; workers only add start-up
        report_to=[],  # trackio is driven by our callback so eval metrics join the same run
        disable_tqdm=not sys.stderr.isatty(),  # in log files a bar is noise; loss lines stay
        **sharding,
    )


def drop_long_transcripts(clips: list[Clip], processor: Any, limit: int,
                          report: bool) -> tuple[list[Clip], int]:
    """The clips whose transcript fits `data.max_transcript_tokens`, and how many did not.

    A transcript far longer than its clip cannot be what was said, and one step on it can take
    minutes and gigabytes; each skipped clip is named in the log.
    """
    from voxtune.train.collator import split_long_transcripts

    kept, too_long = split_long_transcripts(clips, processor, limit)
    for clip_id, tokens in too_long.items() if report else ():
        print(f"skipped clip {clip_id}: its transcript is {tokens:,} tokens, over "
              f"data.max_transcript_tokens ({limit})", flush=True)
    return kept, len(too_long)


def join_process_group(on_gpu: bool) -> tuple[int, int]:
    """(rank, world size) under torchrun, joining the process group now (the Trainer reuses
    it), so every rank can evaluate its share of the clips before training; (0, 1) alone."""
    import torch
    import torch.distributed as dist

    from voxtune.train.distributed import processes

    if processes() == 1:
        return 0, 1
    if not dist.is_initialized():
        if on_gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if on_gpu else "gloo")
    return dist.get_rank(), dist.get_world_size()


def general_set(spec: RunSpec, run: RunFolder, main_process: bool) -> list[Clip]:
    """eval.general's clips ([] without one): the prepare step left them in the run folder; a
    train step started by hand prepares them on the main process while the others wait."""
    import torch.distributed as dist

    from voxtune.data.general import general_clips, prepare_general

    source = spec.eval.general
    if source is None:
        return []
    if main_process:
        prepare_general(source, run.general, spec.language)
    if dist.is_initialized():
        dist.barrier()
    return general_clips(source, run.general)


def evaluate_sets(model: Any, processor: Any, spec: RunSpec, sets: dict[str, tuple[Path, list]],
                  limit: Any, shards: tuple[int, int],
                  on_batch: Callable[[int], Any] = lambda count: None) -> dict[str, Any]:
    """{set name: Evaluated} of one model on each (prepared folder, clips) set; `on_batch(n)`
    as this rank transcribes n more clips."""
    from voxtune.train.evaluate import evaluate_clips

    return {name: evaluate_clips(model, processor, clips, folder, spec.eval, spec.language,
                                 limit, shards, on_batch)
            for name, (folder, clips) in sets.items() if clips}


# --- the recipe ---------------------------------------------------------------------------------


def main(spec: RunSpec, prepared: Path, output: Path,
         extra_callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train per `spec` on `prepared`, write into `output`, and return the metrics.

    `extra_callbacks`: more `TrainerCallback`s, e.g. bench/learn.py's held-out CER over time.
    `training.group_by_length: false` draws batches at random instead of by length. A model
    trained from scratch needs that: in bench/learn.py's pilots length-sorted batches still gave
    guessing-level CER (0.72) after 1,400 steps, where random batches reached 0.17.
    """
    import torch
    from transformers import Trainer

    from voxtune.models.load import load, load_tuned, pick_dtype
    from voxtune.models.presets import is_smoke_model
    from voxtune.plan.features import run_feature_path
    from voxtune.train import resources
    from voxtune.train.adapt import adapt, ready_to_transcribe, trainable_summary
    from voxtune.train.checkpoints import full_disk_is_no_space, latest_checkpoint, save_final
    from voxtune.train.collator import LogMel, TrainingCollator, TranscriptionDataset
    from voxtune.train.distributed import (
        gather_final_state,
        layer_classes,
        loads_on_rank_zero,
        processes,
        release,
        sharding_note,
    )
    from voxtune.train.evaluate import evaluation_metrics, samples, token_limit
    from voxtune.train.scoring import score_line
    from voxtune.train.signals import StopOnSigterm
    from voxtune.train.tracking import Progress, Trackio, start_tracking

    started = time.time()
    run = RunFolder(output)
    # 1. data: the prepared train and eval splits
    train_clips, eval_clips = read_manifest(prepared, "train"), read_manifest(prepared, "eval")
    if not train_clips:
        raise UserError(f"{prepared}: no train clips; run `voxtune prepare` first")
    rank = resources.local_rank()
    main_process = int(os.environ.get("RANK", "0")) == 0
    features = prepared / FEATURES  # log-mels cached per clip on first use, for every epoch

    # 2. precision and optimizer from the hardware; an optimizer that cannot run stops us here
    on_gpu = torch.cuda.is_available()
    compute = pick_dtype(spec.training.precision, "cuda" if on_gpu else "cpu")
    dtype_name = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(compute, "fp32")
    optimizer = spec.optimizer_for(on_gpu)
    trainer_optimizer = resources.trainer_optimizer(optimizer, on_gpu,
                                                    resources.has_bitsandbytes())
    resources.check_optimizer_runs(optimizer, on_gpu)

    # 3. the base, straight onto this rank's GPU (4-bit for qlora); under FSDP rank 0 alone
    # reads it, into host memory, and the others build it empty
    with phase("load"):
        model, processor = resources.base_model(spec, compute, on_gpu)
    sharded_load = loads_on_rank_zero(spec, processes())
    if is_smoke_model(model):
        print("NOTE: tiny-random is a randomly initialised smoke-test model, not Voxtral")
    print(f"precision {dtype_name} on {'cuda' if on_gpu else 'cpu'}")

    # 4. transcripts too long for their clips are skipped, one log line each; the rest go on
    limit = spec.data.max_transcript_tokens
    train_clips, skipped = drop_long_transcripts(train_clips, processor, limit, main_process)
    eval_clips, skipped_eval = drop_long_transcripts(eval_clips, processor, limit, main_process)
    if not train_clips:
        raise UserError(f"{prepared}: every train clip's transcript is over "
                        f"data.max_transcript_tokens ({limit}); fix the transcripts, or raise "
                        "the limit if they are right")

    # 5. the base model's WER/CER once (cached, so a resumed run does not pay again); every
    #    rank transcribes its share, so none waits on the others
    shards = join_process_group(on_gpu)
    general = general_set(spec, run, main_process)
    sets = {"eval": (prepared, eval_clips), "general": (run.general, general)}
    limit = token_limit(spec.eval, processor, eval_clips + general)
    base_file = run.base_eval
    if eval_clips and not base_file.exists():
        with resources.out_of_memory_is_user_error(spec, "evaluating the base model"), \
                phase("base-eval", len(eval_clips) + len(general), shards[1]) as advance:
            # under a sharded load rank 0's base waits in host memory to be sent out and the
            # others' is empty: each rank transcribes with a copy of its own, then drops it
            onto = {"device_map": {"": rank}} if on_gpu else {}
            evaluated = (load(spec.base_model, compute, **onto)[0]
                         if sharded_load and (on_gpu or not main_process) else model)
            base_results = evaluate_sets(evaluated, processor, spec, sets, limit, shards,
                                         advance)
            del evaluated
        if main_process:
            write_atomic(base_file, json.dumps({name: {"scores": asdict(result.scores),
                                                       "text": result.texts}
                                                for name, result in base_results.items()}
                                               ).encode())
            for name, result in base_results.items():
                print(f"base model, {name} set: {score_line(result.scores)}", flush=True)

    # 6. LoRA, QLoRA or full fine-tuning; every trainable parameter in fp32
    model = adapt(model, spec.mode, spec.training)
    print(trainable_summary(model))

    # 7. train, resuming from the newest complete checkpoint
    tracking = start_tracking(spec, run.trackio) if main_process else None
    checkpoints = run.checkpoints
    resume = latest_checkpoint(checkpoints)
    if resume:
        print(f"resuming from {resume}")
    # log-mels cached on disk, or computed per batch on the model's device (plan/features.py)
    path = run_feature_path(spec, model.config.to_dict(), len(train_clips), len(eval_clips),
                            spec.resources.gpus if on_gpu else 0, processes())
    cache = features if path == "cache" else None
    device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if on_gpu else "cpu"
    print(f"features: {f'cached in {cache}' if cache else f'computed per batch on {device}'}")
    dataset = TranscriptionDataset(train_clips, prepared, processor, cache, spec.language)
    args = training_arguments(spec, checkpoints, dtype_name, on_gpu, layer_classes(model),
                              trainer_optimizer)
    sigterm = StopOnSigterm()
    callbacks = [sigterm, Progress(optimizer), *([Trackio(tracking)] if tracking else []),
                 *extra_callbacks]
    collator = TrainingCollator(processor.tokenizer.pad_token_id,
                                None if cache else LogMel.of(processor, device))
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                      callbacks=callbacks)
    resources.share_gradient_buckets(trainer)
    if main_process and (note := sharding_note(trainer)):
        print(note)
    with full_disk_is_no_space(checkpoints), resources.out_of_memory_is_user_error(
            spec, "training"):
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if sigterm.stopping:
        raise RetryableError(f"stopped by SIGTERM at step {trainer.state.global_step}; "
                             "checkpoint saved")
    held_out = (TranscriptionDataset(eval_clips, prepared, processor, cache, spec.language)
                if eval_clips else None)
    # evaluate() gathers across processes, so every rank takes part before the others leave
    loss = float(trainer.evaluate(eval_dataset=held_out)["eval_loss"]) if held_out else None
    # sharded weights are gathered by every rank together, onto rank 0
    gathered = gather_final_state(model) if trainer.is_fsdp_enabled else None

    # 8. what a user loads (saved first: the evaluation puts a trained projector back in the
    # base's dtype), and the tuned model's WER/CER on the same clips
    if main_process:
        with full_disk_is_no_space(output):
            save_final(model, processor, spec, run.final, gathered)
    # data-parallel ranks each hold the tuned model: each transcribes its share
    tuned: dict[str, Any] = {}
    if eval_clips and not trainer.is_fsdp_enabled:
        with resources.out_of_memory_is_user_error(spec, "evaluating the tuned model"), \
                phase("tuned-eval", len(eval_clips) + len(general), shards[1]) as advance:
            tuned = evaluate_sets(ready_to_transcribe(model), processor, spec, sets, limit,
                                  shards, advance)
    if not main_process:
        return {}
    if trainer.is_fsdp_enabled:  # rank 0 alone cannot run the sharded model: it reads final/
        del model
        release(trainer)
        model = load_tuned(str(run.final))[0].model
        if eval_clips:
            with resources.out_of_memory_is_user_error(spec, "evaluating the tuned model"), \
                    phase("tuned-eval", len(eval_clips) + len(general)) as advance:
                tuned = evaluate_sets(model, processor, spec, sets, limit, (0, 1), advance)
    metrics: dict[str, Any] = {"train_loss": result.training_loss,
                               "train_steps": trainer.state.global_step,
                               "skipped_long_transcripts": skipped + skipped_eval,
                               "train_samples_per_second":
                                   result.metrics.get("train_samples_per_second"),
                               "optimizer": optimizer,
                               # what the frozen base computed in: the dtype a merge keeps
                               "precision": dtype_name,
                               # where the eval clips are, for publish's export gate
                               "prepared": str(prepared.resolve())}
    base: dict[str, Any] = json.loads(base_file.read_text()) if base_file.exists() else {}
    base = {"eval": base} if "scores" in base else base  # cached before eval.general existed
    metrics.update(evaluation_metrics(spec, tuned, base, limit))
    for name, scored in tuned.items():
        print(f"tuned model, {name} set: {score_line(scored.scores)}", flush=True)
    if tuned:
        metrics["eval_loss"] = loss
    metrics["hardware"] = resources.hardware(on_gpu)
    metrics["peak_memory_gb"] = resources.peak_memory_gb(on_gpu)
    metrics["wall_time_s"] = round(time.time() - started, 1)
    metrics["smoke_model"] = is_smoke_model(model)
    metrics["samples"] = samples(eval_clips, base.get("eval", {}).get("text"),
                                 tuned["eval"].texts if tuned else None,
                                 set(tuned["eval"].scores.cut_off) if tuned else set())
    write_atomic(run.metrics, json.dumps(metrics, indent=2, ensure_ascii=False).encode())
    if tracking is not None:
        import pandas

        summary = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        summary["samples"] = tracking.Table(dataframe=pandas.DataFrame(metrics["samples"]))
        tracking.log(summary, step=trainer.state.global_step)
        tracking.finish()
    return metrics
