"""Train step: a prepared manifest → a fine-tuned Voxtral, with WER/CER base vs tuned.

Runbook:
    voxtune train --data prepared/ --output runs/r --model tiny-random --mode lora --max-steps 20
    voxtune train --run-dir $VOXTUNE_HOME/runs/my-run          # everything from spec.yaml
    torchrun --nproc-per-node 4 -m voxtune train --run-dir …     # data-parallel, N GPUs

Run the same command again after a crash or kill: it says "resuming from …" and finishes the
same number of steps. SIGTERM (pod preemption) saves a checkpoint at the end of the current step
and exits 75 (retryable); a step that has not ended SIGTERM_GRACE_S later, or a second SIGTERM,
exits 75 at once without a new checkpoint. A full disk exits 74.

Outputs in the run folder: checkpoints/ (rolling, for resuming only), final/ (adapter or weights
+ processor + spec.yaml; never optimizer state), metrics.json, trackio/ (metrics database).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from voxtune.data.manifest import Clip, read_manifest
from voxtune.errors import ExitCode, NoSpaceError, RetryableError, UserError
from voxtune.files import write_atomic
from voxtune.run.layout import SPEC, RunFolder
from voxtune.spec import RunSpec

FEATURES = "features"
OUT_OF_MEMORY = ("out of memory at batch_size {batch}: lower training.batch_size (and raise "
                 "training.grad_accum to keep the effective batch), set "
                 "training.gradient_checkpointing: true, or use mode: lora; full fine-tuning "
                 "needs an 80 GB GPU")
# Kubernetes sends SIGKILL 30 s after SIGTERM (the default terminationGracePeriodSeconds): a step
# still running 20 s after SIGTERM is abandoned, so we exit 75 ourselves (retried, resumes from
# the last checkpoint) instead of being killed mid-write.
SIGTERM_GRACE_S = 20
# A failed save that left less than this free failed for lack of space (its partial file stays).
FULL_DISK_BYTES = 1 << 20
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # the disk, or the user's quota on it, is full


# --- small pieces the loop is made of -----------------------------------------------------------


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint; one cut off by a kill (no trainer_state.json) is removed."""
    if not folder.is_dir():
        return None
    candidates = sorted((p for p in folder.glob("checkpoint-*") if p.name[11:].isdigit()),
                        key=lambda p: int(p.name[11:]), reverse=True)
    for candidate in candidates:
        if (candidate / "trainer_state.json").exists():
            return candidate
        shutil.rmtree(candidate, ignore_errors=True)
    return None


def trainer_callbacks(tracking: Any) -> list[Any]:
    """SIGTERM → checkpoint + stop, and metrics → trackio (kept in the run folder)."""
    from transformers import TrainerCallback

    class StopOnSigterm(TrainerCallback):
        """Kubernetes sends SIGTERM before evicting a pod: save at the step's end, exit retryable.

        The flag is read only at step ends, so a step that does not end within SIGTERM_GRACE_S
        (or a second SIGTERM) stops the process at once instead, without a new checkpoint.
        """

        def __init__(self) -> None:
            self.received = False
            self.steps_done = 0
            self.grace = threading.Timer(SIGTERM_GRACE_S, self._stop_now,
                                         (f"SIGTERM {SIGTERM_GRACE_S} s ago",))
            self.grace.daemon = True
            signal.signal(signal.SIGTERM, self._handle)

        def _handle(self, signum: int, frame: Any) -> None:
            if self.received:  # exit from a thread: stdout may be mid-write in this one
                threading.Thread(target=self._stop_now, args=("second SIGTERM",),
                                 daemon=True).start()
                return
            self.received = True
            notice(f"SIGTERM: saving a checkpoint when step {self.steps_done + 1} ends; if it "
                   f"has not ended in {SIGTERM_GRACE_S} s (or at a second SIGTERM), stopping "
                   "without one")
            self.grace.start()

        def _stop_now(self, reason: str) -> None:
            exit_retryable(f"{reason}: step {self.steps_done + 1} was interrupted without a new "
                           "checkpoint")

        def on_step_begin(self, args, state, control, **kwargs):
            self.steps_done = state.global_step
            return control

        def on_step_end(self, args, state, control, **kwargs):
            if self.received:
                self.grace.cancel()  # the boundary is here: saving may take as long as it needs
                control.should_save = True
                control.should_training_stop = True
            return control

    class Trackio(TrainerCallback):
        """Logs loss, learning rate and grad norm per logging step to the run's trackio run."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                numbers = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
                tracking.log(numbers, step=state.global_step)

    class Progress(TrainerCallback):
        """`progress N/M` lines (about 100 per run): the controller reads them for progress/ETA."""

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                clips = (args.per_device_train_batch_size * args.gradient_accumulation_steps
                         * args.world_size)
                print(f"training: max_steps {state.max_steps}, {clips} clips per step", flush=True)

        def on_step_end(self, args, state, control, **kwargs):
            every = max(1, state.max_steps // 100)
            if state.is_world_process_zero and (state.global_step % every == 0
                                                or state.global_step == state.max_steps):
                print(f"progress {state.global_step}/{state.max_steps}", flush=True)

    callbacks: list[Any] = [StopOnSigterm(), Progress()]
    if tracking is not None:
        callbacks.append(Trackio())
    return callbacks


def notice(line: str) -> None:
    """One line to stderr, safe inside a signal handler (Python's buffered print is not)."""
    os.write(sys.stderr.fileno(), f"{line}\n".encode())


def exit_retryable(reason: str) -> NoReturn:
    """Exit 75 now, from any thread; the run resumes from its last saved checkpoint."""
    sys.stdout.flush()
    notice(f"error (temporary): {reason}; run the same command again (it resumes from the last "
           "saved checkpoint)")
    os._exit(ExitCode.RETRYABLE)


def start_tracking(spec: RunSpec, store: Path) -> Any:
    """A trackio run stored in `store`, the run folder's trackio/ (offline; survives pod
    deletion)."""
    if not spec.tracking.enabled:
        return None
    os.environ["TRACKIO_DIR"] = str(store)  # read once, at import
    import trackio

    # Workaround: trackio (0.43) sends the token to the Hub's whoami in every init, only to label
    # the run with a user name, even when it stores everything locally. With no Space nothing
    # needs the Hub, so nothing goes (the label stays empty). Drop once trackio asks only for
    # Spaces.
    local = spec.tracking.space_id is None
    with hub_offline() if local else contextlib.nullcontext():
        trackio.init(project=spec.tracking.project, name=spec.name,
                     space_id=spec.tracking.space_id, config=spec.model_dump(mode="json"),
                     resume="allow", embed=False, auto_log_gpu=False)
    return trackio


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """huggingface_hub refuses every request in here (offline mode, which it reads at import)."""
    from huggingface_hub import constants

    was = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = was


def training_arguments(spec: RunSpec, output: Path, dtype_name: str, on_gpu: bool,
                       group_by_length: bool = True, layers: Sequence[str] = ()) -> Any:
    """`layers`: the model's layer classes, which FSDP wraps when the run is sharded."""
    from transformers import TrainingArguments

    from voxtune.train.distributed import fsdp_arguments, processes

    training = spec.training
    sharding = fsdp_arguments(spec, layers, processes())  # {} unless resources.strategy: fsdp
    optimizer = "adamw_torch_fused" if on_gpu else "adamw_torch"
    if on_gpu and spec.mode == "full" and _has_bitsandbytes():
        optimizer = "adamw_bnb_8bit"  # 8-bit states: full FT of ~4.7 B fits an 80 GB GPU
    return TrainingArguments(
        output_dir=str(output),
        max_steps=training.max_steps or -1,
        num_train_epochs=training.epochs,
        learning_rate=training.learning_rate,
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
        activation_checkpointing=training.gradient_checkpointing and not sharding,
        optim=optimizer,
        use_cpu=not on_gpu,  # also what lets bf16 autocast run on CPUs that support it
        seed=training.seed,
        # similar lengths per batch: less padding (see `main` for when not to)
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        remove_unused_columns=False,  # our collator needs every field
        dataloader_num_workers=0,  # features are cached on disk; workers only add start-up
        report_to=[],  # trackio is driven by our callback so eval metrics join the same run
        disable_tqdm=not sys.stderr.isatty(),  # in log files a bar is noise; loss lines stay
        **sharding,
    )


def _has_bitsandbytes() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


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


@contextlib.contextmanager
def full_disk_is_no_space(folder: Path) -> Iterator[None]:
    """A save into `folder` that failed because its disk is full raises NoSpaceError (exit 74).

    torch.save and safetensors report a full disk without an errno (RuntimeError "…failed
    writing file…", SafetensorError); `disk_full` tells those from other failures.
    """
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as error:
        if disk_full(error, folder):
            raise NoSpaceError(folder) from error
        raise


def disk_full(error: BaseException, folder: Path) -> bool:
    """Whether `error`, raised while writing into `folder`, means its disk is full."""
    if isinstance(error, OSError):
        return error.errno in NO_SPACE_ERRNOS
    # safetensors deletes its partial file but keeps the OS error's text ("… (os error 28)");
    # torch.save loses the error but keeps the partial file, so the disk is still full.
    if any(f"(os error {code})" in str(error) for code in NO_SPACE_ERRNOS):
        return True
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    return shutil.disk_usage(existing).free < FULL_DISK_BYTES


def save_final(model: Any, processor: Any, spec: RunSpec, folder: Path,
               state_dict: dict[str, Any] | None = None) -> None:
    """What a user loads: adapter or weights, processor, spec. Written aside, then swapped in.
    `state_dict`: the weights gathered from a sharded (FSDP) model, else the model's own."""
    staging = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, state_dict=state_dict)  # LoRA: adapter; full: weights
    (staging / "README.md").unlink(missing_ok=True)  # peft's stub card; publish writes ours
    processor.save_pretrained(staging)
    (staging / SPEC).write_text(spec.to_yaml(), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)


def evaluate_model(model: Any, processor: Any, spec: RunSpec, prepared: Path,
                   clips: list[Any]) -> tuple[Any, list[Any]]:
    from voxtune.train.evaluate import score, transcribe_clips

    transcripts = transcribe_clips(model, processor, clips, prepared, spec.language,
                                   spec.eval.max_new_tokens)
    return score([clip.text for clip in clips], transcripts, spec.eval), transcripts


# --- the recipe ---------------------------------------------------------------------------------


def main(spec: RunSpec, prepared: Path, output: Path, extra_callbacks: Sequence[Any] = (),
         group_by_length: bool = True) -> dict[str, Any]:
    """Train per `spec` on `prepared`, write into `output`, and return the metrics.

    `extra_callbacks`: more `TrainerCallback`s, e.g. bench/learn.py's held-out CER over time.
    `group_by_length=False` draws batches at random instead of by length. A model trained from
    scratch needs that: in bench/learn.py's pilots length-sorted batches still gave guessing-level
    CER (0.72) after 1,400 steps, where random batches reached 0.17.
    """
    import torch
    from transformers import Trainer

    from voxtune.models.load import load, load_tuned, pick_dtype
    from voxtune.models.presets import is_smoke_model
    from voxtune.plan.features import run_feature_path
    from voxtune.train.adapt import adapt, trainable_summary
    from voxtune.train.collator import LogMel, TrainingCollator, TranscriptionDataset
    from voxtune.train.distributed import (
        gather_final_state,
        layer_classes,
        processes,
        sharding_note,
    )
    from voxtune.train.evaluate import as_metrics, samples

    started = time.time()
    run = RunFolder(output)
    # 1. data: the prepared train and eval splits
    train_clips, eval_clips = read_manifest(prepared, "train"), read_manifest(prepared, "eval")
    if not train_clips:
        raise UserError(f"{prepared}: no train clips; run `voxtune prepare` first")
    main_process = int(os.environ.get("RANK", "0")) == 0
    features = prepared / FEATURES  # log-mels cached per clip on first use, for every epoch

    # 2. model, processor and precision from the hardware
    on_gpu = torch.cuda.is_available()
    dtype = pick_dtype(spec.training.precision, "cuda" if on_gpu else "cpu")
    dtype_name = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    # LoRA keeps the frozen base in the compute dtype (adapters stay fp32); full fine-tuning
    # keeps fp32 master weights and computes in bf16/fp16 under autocast.
    model, processor = load(spec.base_model, dtype if spec.mode == "lora" else torch.float32)
    if is_smoke_model(model):
        print("NOTE: tiny-random is a randomly initialised smoke-test model, not Voxtral")
    print(f"precision {dtype_name} on {'cuda' if on_gpu else 'cpu'}")
    if on_gpu:
        model.to(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")

    # 3. transcripts too long for their clips are skipped, one log line each; the rest go on
    limit = spec.data.max_transcript_tokens
    train_clips, skipped = drop_long_transcripts(train_clips, processor, limit, main_process)
    eval_clips, skipped_eval = drop_long_transcripts(eval_clips, processor, limit, main_process)
    if not train_clips:
        raise UserError(f"{prepared}: every train clip's transcript is over "
                        f"data.max_transcript_tokens ({limit}); fix the transcripts, or raise "
                        "the limit if they are right")

    # 4. the base model's WER/CER once (cached, so a resumed run does not pay again)
    base_file = run.base_eval
    if main_process and eval_clips and not base_file.exists():
        base_scores, base_text = evaluate_model(model, processor, spec, prepared, eval_clips)
        write_atomic(base_file, json.dumps({"scores": base_scores.__dict__,
                                            "text": [t.text for t in base_text]}).encode())
        print(f"base model: WER {base_scores.wer:.3f} CER {base_scores.cer:.3f}")

    # 5. LoRA or full fine-tuning
    model = adapt(model, spec.mode, spec.training)
    print(trainable_summary(model))

    # 6. train, resuming from the newest complete checkpoint
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
    args = training_arguments(spec, checkpoints, dtype_name, on_gpu, group_by_length,
                              layer_classes(model))
    callbacks = [*trainer_callbacks(tracking), *extra_callbacks]
    collator = TrainingCollator(processor.tokenizer.pad_token_id,
                                None if cache else LogMel.of(processor, device))
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                      callbacks=callbacks)
    if main_process and (note := sharding_note(trainer)):
        print(note)
    with full_disk_is_no_space(checkpoints):
        try:
            result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        except torch.OutOfMemoryError:
            raise UserError(OUT_OF_MEMORY.format(batch=spec.training.batch_size)) from None
    if callbacks[0].received:
        raise RetryableError(f"stopped by SIGTERM at step {trainer.state.global_step}; "
                             "checkpoint saved")
    held_out = (TranscriptionDataset(eval_clips, prepared, processor, cache, spec.language)
                if eval_clips else None)
    # evaluate() gathers across processes, so every rank takes part before the others leave
    loss = float(trainer.evaluate(eval_dataset=held_out)["eval_loss"]) if held_out else None
    # sharded weights are gathered by every rank together, onto rank 0
    gathered = gather_final_state(model) if trainer.is_fsdp_enabled else None
    if not main_process:
        return {}

    # 7. what a user loads, then the tuned model's WER/CER on the same clips
    with full_disk_is_no_space(output):
        save_final(model, processor, spec, run.final, gathered)
    if trainer.is_fsdp_enabled:  # rank 0 alone cannot run the sharded model: it reads final/
        model = load_tuned(str(run.final))[0].model
    metrics: dict[str, Any] = {"train_loss": result.training_loss,
                               "train_steps": trainer.state.global_step,
                               "skipped_long_transcripts": skipped + skipped_eval,
                               "train_samples_per_second":
                                   result.metrics.get("train_samples_per_second")}
    base: dict[str, Any] = json.loads(base_file.read_text()) if base_file.exists() else {}
    tuned_text: list[Any] = []
    if eval_clips:
        tuned_scores, tuned_text = evaluate_model(model, processor, spec, prepared, eval_clips)
        metrics.update(as_metrics("", tuned_scores))
        metrics.update({f"base_{k}": v for k, v in base.get("scores", {}).items()})
        metrics["eval_loss"] = loss
    metrics["hardware"] = hardware(on_gpu)
    metrics["peak_memory_gb"] = peak_memory_gb(on_gpu)
    metrics["wall_time_s"] = round(time.time() - started, 1)
    metrics["smoke_model"] = is_smoke_model(model)
    metrics["samples"] = samples(eval_clips, base.get("text"),
                                 [t.text for t in tuned_text] or None)
    write_atomic(run.metrics, json.dumps(metrics, indent=2, ensure_ascii=False).encode())
    if tracking is not None:
        import pandas

        summary = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        summary["samples"] = tracking.Table(dataframe=pandas.DataFrame(metrics["samples"]))
        tracking.log(summary, step=trainer.state.global_step)
        tracking.finish()
    return metrics


def hardware(on_gpu: bool) -> str:
    """What trained it, for the model card: e.g. '1 × NVIDIA H100 80GB HBM3' or 'CPU (2 cores)'."""
    import torch

    if on_gpu:
        count = int(os.environ.get("WORLD_SIZE", "1"))
        return f"{count} × {torch.cuda.get_device_name()}"
    return f"CPU ({len(os.sched_getaffinity(0))} cores)"


def peak_memory_gb(on_gpu: bool) -> float:
    import resource

    import torch

    if on_gpu:
        return round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)  # KiB → GiB
