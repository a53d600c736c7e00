"""Proof that it learns: a tiny Voxtral trained from scratch on spoken digits, against a control
that cannot hear.

    make learn                                          # = .venv/bin/python bench/learn.py
    .venv/bin/python bench/learn.py --minutes 2 --eval-every 0.5      # a quick look
    .venv/bin/python bench/learn.py --arms audio        # skip the control

A randomly initialised model lowers its loss by learning what digit strings look like, without
listening: issue 3 measured CER ≈ 0.73 on held-out strings that way, the same output for every
clip. So beating the untrained model proves nothing; the model must beat an **audio-blind
control** — the same training on the same clips with the audio shuffled between clips.

1. corpus: espeak-ng speaks random digit strings (DIGITS, 1 upwards in training; several voices
   and speeds). Held out: new strings in the training voices, and new strings in a voice that
   training never hears (HELD_OUT_VOICE).
2. prepare: `voxtune.data.prepare.prepare` turns them into 16 kHz clips + manifest; the benchmark
   then sets each clip's split itself (held-out strings and voice → eval), instead of the
   step's hash split.
3. control: a second prepared folder over the same audio files whose train clips each point at
   another train clip's audio (a random derangement). Why shuffling rather than silence or noise:
   prepare rejects silence, and noise would train the control on inputs unlike the speech it is
   tested on, handicapping it for a reason other than not knowing what was said. Shuffled, it
   sees exactly the same audio and the same transcripts; only the pairing is gone, including
   the hint that longer audio means more digits. Eval clips keep their own audio in both arms.
4. train: `voxtune.train.recipe.main` — the product's train step — fully fine-tunes the
   preset's random weights (audio encoder included: it is "from scratch"). A callback
   transcribes the held-out clips every EVAL_EVERY minutes of training time; the clock stops
   while it does, so minutes are training minutes. Training stops at STEPS or at MINUTES.
   Batches are drawn at random, not grouped by length as the recipe does by default: from
   scratch, length-sorted batches kept the model at guessing level several times longer.
5. report: CER over time, audio vs control, and a verdict line.

Recorded results: docs/benchmarks.md, "Proof that it learns".
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from transformers import TrainerCallback

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: the model is built locally

# --- defaults (sized for 10 training minutes on 2 shared CPU cores) ------------------------------
MODEL = "tiny-random-4s"  # 4-s audio window: every clip fits, steps ≈10× cheaper than 30 s
STEPS = 6000  # optimizer steps, unless MINUTES runs out first (≈0.09 s each here)
MINUTES = 10.0  # training-time budget per arm (evaluation pauses excluded)
EVAL_EVERY = 1.0  # minutes of training between held-out transcriptions
LEARNING_RATE = 1e-3  # 5e-4 and 2e-3 broke through to listening later; 5e-3 never did
BATCH_SIZE = 16
WARMUP = 0.05  # share of STEPS spent warming up, then cosine decay
TRAIN_CLIPS = 6000
EVAL_CLIPS = 40  # per held-out group (new strings in seen voices; new strings, unseen voice)
DIGITS = (3, 6)  # held-out string lengths; 6 digits at 130 wpm ≈ 2.9 s, inside the 4-s window
TRAIN_MIN_DIGITS = 1  # short strings in training make the first sound-to-word steps easy
# espeak-ng voice+variant; the unseen voice's neighbours (female, US) are in training, as a
# real training set would cover the kinds of speakers it will meet
VOICES = ("en-us", "en-us+f2", "en-us+f3", "en-us+f4", "en-us+m2", "en-us+m5", "en+m3", "en+m7",
          "en-gb", "en+f4")
HELD_OUT_VOICE = "en-us+f5"  # (en-gb+f1 sounds exactly like en-gb: prepare caught the duplicates)
SPEEDS = (130, 140, 150, 160, 170, 180, 190)  # words per minute
MAX_NEW_TOKENS = 32  # 6 digit words ≈ 15 tokens; a looping model stops here
SEED = 0
GOAL_CER, GOAL_MINUTES = 0.10, 10.0  # issue 3's target
CLEARLY_BELOW = 0.25  # CER the model must end under the control's to count as listening
ARMS = ("audio", "control")
GROUPS = ("seen-voice", "unseen-voice")  # held-out groups, also the synth folder names


@dataclass(frozen=True)
class Settings:
    """Everything a learning run depends on (the test shrinks it)."""

    model: str = MODEL
    steps: int = STEPS
    minutes: float = MINUTES
    eval_every: float = EVAL_EVERY
    learning_rate: float = LEARNING_RATE
    batch_size: int = BATCH_SIZE
    warmup: float = WARMUP
    train_clips: int = TRAIN_CLIPS
    eval_clips: int = EVAL_CLIPS
    digits: tuple[int, int] = DIGITS
    seed: int = SEED


@dataclass(frozen=True)
class Point:
    """The held-out scores at one moment of training."""

    minutes: float  # training time (evaluation excluded)
    step: int
    loss: float | None  # mean train loss since the previous point
    cer: float
    cer_by_group: dict[str, float]
    sample: str  # the first held-out clip's transcript and reference: what the model does


@dataclass
class Curve:
    arm: str
    points: list[Point] = field(default_factory=list)
    wall_minutes: float = 0.0  # whole run: model, features, evaluations, saving

    @property
    def final(self) -> Point:
        return self.points[-1]


# --- 1–3. corpus, prepared folders, control ------------------------------------------------------

def digit_utterances(count: int, voices: tuple[str, ...], rng: random.Random,
                     avoid: set[str], digits: tuple[int, int]) -> list[Any]:
    """`count` different utterances (string, voice, speed) of digit strings not in `avoid`."""
    from voxtune.data.synth import Utterance, digit_string

    chosen: dict[Any, None] = {}  # ordered set: same arguments, same corpus
    while len(chosen) < count:
        text = digit_string(rng, rng.randint(*digits))
        if text not in avoid:
            chosen.setdefault(Utterance(text, rng.choice(voices), rng.choice(SPEEDS)))
    return list(chosen)


def make_corpus(folder: Path, settings: Settings) -> Path:
    """Synthesize and prepare the corpus; returns the prepared folder with our train/eval split.

    Held-out strings are drawn first and never trained on. Training strings may repeat in
    another voice or speed, so that short strings (ten one-digit ones exist) are common enough
    to teach the first sound-to-word matches.
    """
    from voxtune.data.manifest import MANIFEST, Clip, jsonl_bytes, read_manifest
    from voxtune.data.prepare import prepare
    from voxtune.data.synth import synthesize
    from voxtune.files import write_atomic
    from voxtune.spec import DataSpec, JsonlSource

    rng, held_out = random.Random(settings.seed), set[str]()
    plans = {}
    for name, voices in (("seen-voice", VOICES), ("unseen-voice", (HELD_OUT_VOICE,))):
        plans[name] = digit_utterances(settings.eval_clips, voices, rng, held_out,
                                       settings.digits)
        held_out |= {utterance.text for utterance in plans[name]}
    plans["train"] = digit_utterances(settings.train_clips, VOICES, rng, held_out,
                                      (TRAIN_MIN_DIGITS, settings.digits[1]))
    # synthesize() reuses clips by file name, so each plan gets its own folder
    plan_key = hashlib.sha256(repr(sorted(plans.items())).encode()).hexdigest()[:12]
    sources = [JsonlSource(path=synthesize(folder / "synth" / plan_key / name, utterances))
               for name, utterances in plans.items()]
    prepared = folder / "prepared"
    with contextlib.redirect_stderr(io.StringIO()):  # progress bars
        summary = prepare(DataSpec(sources=sources), prepared, language="en")
    if summary.rejected:
        raise RuntimeError(f"prepare rejected clips: {summary.rejected} (see {prepared})")
    clips = [Clip(**{**asdict(clip), "split": "train" if group(clip) == "train" else "eval"})
             for clip in read_manifest(prepared)]
    write_atomic(prepared / MANIFEST, jsonl_bytes(clips))
    return prepared


def group(clip: Any) -> str:
    """train, seen-voice or unseen-voice: the synth folder the clip came from."""
    return Path(clip.source.rpartition(":")[0]).parent.name


def make_control(prepared: Path, folder: Path, seed: int) -> Path:
    """The same prepared clips, with every train clip's audio taken from another train clip.

    A swapped clip takes the donor's id along with its audio: the train step caches features
    by clip id, so both arms share one feature cache and the ids still name the audio.
    """
    from voxtune.data.manifest import AUDIO_DIR, MANIFEST, Clip, jsonl_bytes, read_manifest
    from voxtune.files import write_atomic
    from voxtune.train.recipe import FEATURES

    clips = read_manifest(prepared)
    train = [index for index, clip in enumerate(clips) if clip.split == "train"]
    random.Random(seed).shuffle(train)
    donors = train[1:] + train[:1]  # shifting a shuffled order: nobody keeps their own audio
    swapped = list(clips)
    for index, donor in zip(train, donors, strict=True):
        swapped[index] = Clip(**{**asdict(clips[index]), **{
            key: getattr(clips[donor], key) for key in ("id", "audio_path", "duration")}})
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for shared in (AUDIO_DIR, FEATURES):
        (prepared / shared).mkdir(exist_ok=True)
        (folder / shared).symlink_to((prepared / shared).resolve())
    write_atomic(folder / MANIFEST, jsonl_bytes(swapped))
    return folder


# --- 4. training with a held-out CER curve -------------------------------------------------------

class HeldOutCurve(TrainerCallback):
    """Transcribes the held-out clips every `eval_every` minutes of training and at the end.

    The clock stops while it transcribes; training stops when `minutes` are used up.
    """

    def __init__(self, processor: Any, prepared: Path, clips: list[Any], settings: Settings,
                 curve: Curve, progress: TextIO):
        self.processor, self.prepared, self.clips = processor, prepared, clips
        self.settings, self.curve, self.progress = settings, curve, progress
        self.losses: list[float] = []
        self.started = self.paused = 0.0
        self.next_at = settings.eval_every * 60

    def elapsed(self) -> float:
        return time.perf_counter() - self.started - self.paused

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.started = time.perf_counter()
        self.measure(model, state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        elapsed = self.elapsed()
        last = state.global_step >= state.max_steps or elapsed >= self.settings.minutes * 60
        if elapsed >= self.next_at or last:
            self.measure(model, state.global_step)
            while self.next_at <= elapsed:
                self.next_at += self.settings.eval_every * 60
        if last:
            control.should_training_stop = True
        return control

    def measure(self, model: Any, step: int) -> None:
        from voxtune.spec import EvalSpec
        from voxtune.train.evaluate import score, transcribe_clips

        minutes = self.elapsed() / 60
        paused_from = time.perf_counter()
        transcripts = transcribe_clips(model, self.processor, self.clips, self.prepared, None,
                                       MAX_NEW_TOKENS)
        references = [clip.text for clip in self.clips]
        by_group = {}
        for name in GROUPS:
            members = [i for i, clip in enumerate(self.clips) if group(clip) == name]
            by_group[name] = score([references[i] for i in members],
                                   [transcripts[i] for i in members], EvalSpec()).cer
        loss = sum(self.losses) / len(self.losses) if self.losses else None
        self.losses = []
        point = Point(round(minutes, 2), step, loss,
                      score(references, transcripts, EvalSpec()).cer, by_group,
                      f"{transcripts[0].text!r} for {references[0]!r}")
        self.curve.points.append(point)
        print(f"  {self.curve.arm:8} {point.minutes:5.1f} min  step {step:5}  train loss "
              f"{'-' if loss is None else f'{loss:.3f}':>5}  held-out CER {point.cer:.3f}",
              file=self.progress, flush=True)
        self.paused += time.perf_counter() - paused_from


def run_spec(settings: Settings, arm: str) -> Any:
    from voxtune.spec import EvalSpec, RunSpec, TrackingSpec, TrainingSpec

    return RunSpec(
        name=f"learn-{arm}", base_model=settings.model, mode="full", language="en",
        training=TrainingSpec(
            max_steps=settings.steps, learning_rate=settings.learning_rate,
            batch_size=settings.batch_size, grad_accum=1, warmup_ratio=settings.warmup,
            save_steps=settings.steps, keep_checkpoints=1,
            precision="fp32",  # from scratch; bf16 autocast was no faster for widths this small
            # full FT's default trades compute for memory; a tiny model has memory to spare
            gradient_checkpointing=False,
            freeze_audio_encoder=False, seed=settings.seed),
        eval=EvalSpec(max_new_tokens=MAX_NEW_TOKENS),
        tracking=TrackingSpec(enabled=False))


def train_arm(arm: str, prepared: Path, output: Path, settings: Settings) -> Curve:
    """One training run through the product's train step; its log goes to output/train.log."""
    from voxtune.data.manifest import read_manifest
    from voxtune.models.load import load
    from voxtune.train import recipe

    shutil.rmtree(output, ignore_errors=True)  # a leftover checkpoint would be resumed
    output.mkdir(parents=True)
    curve, progress, started = Curve(arm), sys.stdout, time.perf_counter()
    with open(output / "train.log", "w", encoding="utf-8") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        _, processor = load(settings.model)  # the callback's; the recipe loads its own model
        callback = HeldOutCurve(processor, prepared, read_manifest(prepared, "eval"), settings,
                                curve, progress)
        recipe.main(run_spec(settings, arm), prepared, output, extra_callbacks=[callback],
                    group_by_length=False)
    curve.wall_minutes = (time.perf_counter() - started) / 60
    return curve


def learning_curves(workdir: Path, settings: Settings,
                    arms: tuple[str, ...] = ARMS) -> dict[str, Curve]:
    """Corpus, control, and one training run per arm, one after the other."""
    prepared = make_corpus(workdir, settings)
    folders = {"audio": prepared,
               "control": make_control(prepared, workdir / "control", settings.seed)}
    curves = {}
    for arm in arms:
        print(f"training the {arm} arm (log: {workdir / 'runs' / arm / 'train.log'})", flush=True)
        curves[arm] = train_arm(arm, folders[arm], workdir / "runs" / arm, settings)
    return curves


# --- 5. report -----------------------------------------------------------------------------------

def table(curves: dict[str, Curve]) -> str:
    """Markdown: one row per evaluation, the arms side by side (each with its own clock)."""
    columns = ("minutes", "step", "train loss", "held-out CER")
    header = [f"{column} ({arm})" for arm in curves for column in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index in range(max(len(curve.points) for curve in curves.values())):
        row: list[str] = []
        for curve in curves.values():
            point = curve.points[index] if index < len(curve.points) else None
            row += ([f"{point.minutes:.1f}", str(point.step),
                     "" if point.loss is None else f"{point.loss:.3f}", f"{point.cer:.3f}"]
                    if point else [""] * len(columns))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def first_at_goal(curve: Curve) -> Point | None:
    return next((p for p in curve.points if p.cer <= GOAL_CER and p.minutes <= GOAL_MINUTES),
                None)


def uses_audio(curves: dict[str, Curve]) -> bool:
    """The run trained on the real pairing ends clearly below the audio-blind control."""
    return curves["audio"].final.cer < curves["control"].final.cer - CLEARLY_BELOW


def verdict(curves: dict[str, Curve]) -> str:
    audio = curves["audio"].final
    by_group = ", ".join(f"{name} {cer:.3f}" for name, cer in audio.cer_by_group.items())
    line = (f"held-out CER {audio.cer:.3f} ({by_group}) after {audio.minutes:.1f} training "
            f"minutes, {audio.step} steps")
    reached = first_at_goal(curves["audio"])
    line += (f"; goal CER ≤ {GOAL_CER:.2f} within {GOAL_MINUTES:g} min: "
             + (f"MET at {reached.minutes:.1f} min" if reached else "NOT met"))
    if "control" in curves:
        control = curves["control"].final
        line += (f"; audio-blind control {control.cer:.3f}: " + (
            "the model uses the audio" if uses_audio(curves) else
            f"NOT clearly below the control (by less than {CLEARLY_BELOW})"))
    return line


def main() -> None:
    import torch

    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where corpus, prepared folders and runs go (default: "
                             "$VOXTUNE_HOME/bench-learn); the corpus is reused between runs")
    parser.add_argument("--minutes", type=float, default=defaults.minutes,
                        help="training-time budget per arm")
    parser.add_argument("--steps", type=int, default=defaults.steps,
                        help="optimizer steps (the cosine schedule spans them)")
    parser.add_argument("--eval-every", type=float, default=defaults.eval_every,
                        help="minutes of training between held-out evaluations")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--train-clips", type=int, default=defaults.train_clips)
    parser.add_argument("--model", default=defaults.model,
                        help="tiny-random-<N>s preset or a checkpoint folder")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    options = parser.parse_args()
    settings = replace(defaults, minutes=options.minutes, steps=options.steps,
                       eval_every=options.eval_every, learning_rate=options.learning_rate,
                       batch_size=options.batch_size, train_clips=options.train_clips,
                       model=options.model)

    from voxtune.spec import Settings as Home

    workdir = options.workdir or Home().home / "bench-learn"
    print(f"bench/learn.py: {settings}; {os.cpu_count()} CPUs, {torch.get_num_threads()} torch "
          f"threads, load average {os.getloadavg()[0]:.2f}; workdir {workdir}", flush=True)
    curves = learning_curves(workdir, settings, tuple(options.arms))
    print()
    print(table(curves))
    print()
    for curve in curves.values():
        print(f"{curve.arm}: final sample {curve.final.sample}; whole run "
              f"{curve.wall_minutes:.1f} min wall (model, features, evaluations, saving)")
    print(verdict(curves) if "audio" in curves else "")


if __name__ == "__main__":
    main()
