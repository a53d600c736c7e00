"""`voxtune demo` / `make demo`: watch a random tiny Voxtral learn to hear spoken digits, through
the whole local pipeline (prepare → train → publish), in about four minutes on two CPU cores.

    voxtune demo              # base vs tuned CER/WER on 40 held-out clips
    voxtune demo --control    # also the audio-blind control (twice the training)

1. speech: random digit strings, spoken by espeak-ng when it is installed, else composed from
   the bundled word clips (no system packages needed). Held out: new strings in the training
   voices, and new strings in a voice training never hears (HELD_OUT_VOICE).
2. the corpus is prepared here with that split, so the run's prepare step takes it as a
   `prepared:` source and keeps it (the step's own split is by hash, blind to strings).
3. the run: `tiny-random-4s` (random weights, a 4-s audio window) fully fine-tuned from scratch
   by the product's train step, its random audio encoder frozen as Voxtral fine-tuning keeps it
   by default; base and tuned are scored on the same held-out clips; the model is published to
   the local registry.
4. control (optional): the same training with the audio shuffled between train clips
   (`make_control`). A model can lower its loss by learning what digit strings look like
   without listening (CER ≈ 0.7 on these clips); beating the random base proves nothing more.

bench/learn.py (`make learn`) runs the same corpus, recipe and control with a longer budget
and a CER curve; docs/benchmarks.md, "Proof that it learns", has its results.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import random
import re
import shutil
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from voxtune.errors import ExitCode
from voxtune.run.layout import RunFolder
from voxtune.run.status import format_percent

DEMO_RUN, CONTROL_RUN = "demo", "demo-control"
# espeak-ng voice+variant; the unseen voice's neighbours (female, US) are in training, as a real
# training set would cover the kinds of speakers it will meet. data/digits/ holds these voices.
VOICES = ("en-us", "en-us+f2", "en-us+f3", "en-us+f4", "en-us+m2", "en-us+m5", "en+m3", "en+m7",
          "en-gb", "en+f4")
HELD_OUT_VOICE = "en-us+f5"  # (en-gb+f1 sounds exactly like en-gb: prepare caught the duplicates)
SPEEDS = (140, 160, 180)  # words per minute (the bundled words' speeds)
GROUPS = ("seen-voice", "unseen-voice")  # held-out groups, also the speech folder names
BLIND_CER = 0.66  # the lowest CER the audio-blind control reached here (docs/benchmarks.md)


@dataclass(frozen=True)
class Recipe:
    """What a learning run depends on: the demo's; bench/learn.py gives it a longer budget."""

    model: str = "tiny-random-4s"  # every clip fits the 4-s window; steps ≈10× cheaper than 30 s
    steps: int = 1200  # optimizer steps: ≈2.3 min on 2 idle cores (≈0.12 s each)
    learning_rate: float = 1e-3  # 5e-4 and 2e-3 broke through to listening later; 5e-3 never did
    batch_size: int = 16
    warmup: float = 0.05  # share of the steps spent warming up, then cosine decay
    train_clips: int = 2000
    eval_clips: int = 20  # per held-out group
    digits: tuple[int, int] = (3, 6)  # held-out string lengths; 6 digits at 130 wpm ≈ 2.9 s
    train_min_digits: int = 1  # short strings in training make the first sound-to-word steps easy
    voices: tuple[str, ...] = VOICES
    held_out_voice: str = HELD_OUT_VOICE
    speeds: tuple[int, ...] = SPEEDS
    max_new_tokens: int = 32  # 6 digit words ≈ 15 tokens; a looping model stops here
    seed: int = 0
    # A frozen random encoder still hands the projector features that tell the digits apart,
    # and its backward pass was 30 % of a step: frozen, 1,200 steps reached held-out CER 8.2 %
    # where training it too reached 41 % (docs/benchmarks.md, "Proof that it learns").
    freeze_audio_encoder: bool = True
    # a digit word only `rare_clips` training clips hold (bench/targeted.py: a weak word)
    rare_word: str | None = None
    rare_clips: int = 0


# --- 1–2. corpus and control ---------------------------------------------------------------------

def digit_corpus(folder: Path, recipe: Recipe, on_clip: Any = lambda: None,
                 on_prepare: Any = lambda: None) -> Path:
    """Speak and prepare the corpus once (reused while the recipe stays the same); returns the
    prepared folder, held-out clips in the eval split. `on_clip` is called as each clip is
    spoken, `on_prepare` when preparing them starts (progress bars).

    Held-out strings are drawn first and never trained on. Training strings may repeat in
    another voice or speed, so that short strings (ten one-digit ones exist) are common enough
    to teach the first sound-to-word matches.
    """
    from voxtune.data.manifest import MANIFEST, Clip, jsonl_bytes, read_manifest
    from voxtune.data.prepare import prepare
    from voxtune.data.synth import compose, digit_utterances, synthesize
    from voxtune.files import write_atomic
    from voxtune.spec import DataSpec, JsonlSource

    rng, held_out = random.Random(recipe.seed), set[str]()
    plans = {}
    for name, voices in zip(GROUPS, (recipe.voices, (recipe.held_out_voice,)), strict=True):
        plans[name] = digit_utterances(recipe.eval_clips, voices, recipe.speeds, rng, held_out,
                                       recipe.digits)
        held_out |= {utterance.text for utterance in plans[name]}
    plans["train"] = train_utterances(recipe, rng, held_out)
    speak = synthesize if shutil.which("espeak-ng") else compose
    key = hashlib.sha256(repr((speak.__name__, sorted(plans.items()))).encode()).hexdigest()[:12]
    prepared, done = folder / key / "prepared", folder / key / "split-done"
    if done.exists():
        return prepared
    # synthesize() reuses clips by file name, so each plan gets its own folder
    sources = [JsonlSource(path=speak(folder / key / "speech" / name, utterances, on_clip))
               for name, utterances in plans.items()]
    on_prepare()
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bars
        summary = prepare(DataSpec(sources=sources), prepared, language="en")
    if summary.rejected:
        raise RuntimeError(f"prepare rejected clips: {summary.rejected} (see {prepared})")
    clips = [Clip(**{**asdict(clip), "split": "train" if group(clip) == "train" else "eval"})
             for clip in read_manifest(prepared)]
    write_atomic(prepared / MANIFEST, jsonl_bytes(clips))
    done.touch()
    return prepared


def train_utterances(recipe: Recipe, rng: random.Random, avoid: set[str]) -> list[Any]:
    """The training strings: any digits, or with `recipe.rare_word` in only `rare_clips`."""
    from voxtune.data.synth import DIGITS, digit_utterances

    lengths = (recipe.train_min_digits, recipe.digits[1])
    if recipe.rare_word is None:
        return digit_utterances(recipe.train_clips, recipe.voices, recipe.speeds, rng, avoid,
                                lengths)
    common = tuple(word for word in DIGITS if word != recipe.rare_word)
    return (digit_utterances(recipe.train_clips - recipe.rare_clips, recipe.voices,
                             recipe.speeds, rng, avoid, lengths, common)
            + digit_utterances(recipe.rare_clips, recipe.voices, recipe.speeds, rng, avoid,
                               lengths, containing=recipe.rare_word))


def group(clip: Any) -> str:
    """train, seen-voice or unseen-voice: the speech folder the clip came from."""
    return Path(clip.source.rpartition(":")[0]).parent.name


def make_control(prepared: Path, folder: Path, seed: int) -> Path:
    """The same prepared clips, with every train clip's audio taken from another train clip.

    Why shuffling rather than silence or noise: prepare rejects silence, and noise would train
    the control on inputs unlike the speech it is tested on, handicapping it for a reason other
    than not knowing what was said. Shuffled, it sees exactly the same audio and transcripts;
    only the pairing is gone, including the hint that longer audio means more digits. Eval clips
    keep their own audio. A swapped clip takes the donor's id along with its audio: the train
    step caches features by clip id, so the ids still name the audio.
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


# --- 3. the run -----------------------------------------------------------------------------------

def run_spec(recipe: Recipe, name: str, prepared: Path, publish: bool = True,
             tracking: bool = True) -> Any:
    """The RunSpec that trains `recipe` from scratch on `prepared` (a `prepared:` source)."""
    from voxtune.run.steps import STEPS
    from voxtune.spec import (
        DataSpec,
        EvalSpec,
        PreparedSource,
        PublishSpec,
        RunSpec,
        TrackingSpec,
        TrainingSpec,
    )

    return RunSpec(
        name=name, base_model=recipe.model, mode="full", language="en",
        steps=[step for step in STEPS if publish or step != "publish"],
        data=DataSpec(sources=[PreparedSource(path=prepared)]),
        training=TrainingSpec(
            max_steps=recipe.steps, learning_rate=recipe.learning_rate,
            batch_size=recipe.batch_size, grad_accum=1, warmup_ratio=recipe.warmup,
            save_steps=max(1, recipe.steps // 4), keep_checkpoints=1,
            precision="fp32",  # from scratch; bf16 autocast was no faster for widths this small
            # full FT's default trades compute for memory; a tiny model has memory to spare
            gradient_checkpointing=False,
            group_by_length=False,  # from scratch, length-sorted batches stay at guessing level
            freeze_audio_encoder=recipe.freeze_audio_encoder, seed=recipe.seed),
        # the references are digit words: Whisper's normaliser would score them as numerals
        eval=EvalSpec(max_new_tokens=recipe.max_new_tokens, normalizer="simple"),
        tracking=TrackingSpec(enabled=tracking),
        # to the local registry, with a model card and a demo Space app
        publish=PublishSpec(space=True))


def run_with_progress(executor: Any, spec: Any) -> Any:
    """`executor.run(spec)` under one progress bar (step, training steps, elapsed<remaining);
    the steps' own output goes to their logs, and only its messages are shown above the bar."""
    from tqdm import tqdm

    run = executor.folder(spec.name)
    if run.spec_file.exists() and run.read_spec() != spec:
        shutil.rmtree(run.path)  # the demo's runs are ours to replace when the recipe changed
    bar = tqdm(total=spec.training.max_steps, desc=f"{spec.name}: starting", unit="step",
               file=sys.stdout, mininterval=1.0, dynamic_ncols=True)
    finished = threading.Event()

    def follow() -> None:  # the train step's `progress N/M` lines reach status.json
        while not finished.wait(1.0):
            status = run.read_status()
            found = re.search(r"train (\d+)/(\d+)$", status.progress or "")
            bar.set_description(f"{spec.name}: {status.step or 'starting'}", refresh=False)
            if found:
                bar.n = int(found[1])
            bar.refresh()  # also while no step moves: the elapsed time does

    def echo(line: str) -> None:
        # the libraries' own progress bars, and the Trainer's loss dict at every step (the
        # bar shows the steps; the curve is on the dashboard): the rest is worth reading
        if not re.search(r"\d+%\||^(\[\w+\] )?\{'", line):
            bar.write(line)

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    try:
        return executor.run(spec, echo)
    finally:
        finished.set()
        watcher.join()
        if run.read_status().phase == "Succeeded":
            bar.update(bar.total - bar.n)
        bar.close()


# --- 4. the report --------------------------------------------------------------------------------

def times_lower(base: float, tuned: float) -> str:
    return "perfect" if tuned == 0 else f"{base / tuned:.0f}× lower"


def report(tuned: RunFolder, status: Any, control: Any | None, recipe: Recipe) -> list[str]:
    """The closing table, a few transcripts, and what the numbers mean."""
    import json

    metrics = status.metrics
    samples = json.loads(tuned.metrics.read_text()).get("samples", [])
    lines = [f"{len(samples)} held-out clips: new digit strings, half in a voice training never "
             "heard. CER/WER: characters/words wrong per 100 in the reference (0% = perfect; over "
             "100% = more errors than the reference has characters/words).", "",
             f"  {'':5} {'base (random)':>14} {'tuned':>8}"]
    for metric in ("cer", "wer"):
        base, after = metrics[f"base_{metric}"], metrics[metric]
        lines.append(f"  {metric.upper():5} {format_percent(base):>14} {format_percent(after):>8}"
                     f"   {times_lower(base, after)}")
    if control is not None and "cer" in control.metrics:
        lines.append(f"  audio-blind control (same training, audio shuffled): CER "
                     f"{format_percent(control.metrics['cer'])}")
    lines += ["", f"  {'reference':34} {'tuned':34} base"]
    lines += [f"  {row['reference']:34} {row['tuned'] or '':34} {(row['base'] or '')[:30]!r}"
              for row in samples[:3]]
    blind = control.metrics["cer"] if control is not None and "cer" in control.metrics \
        else BLIND_CER
    lines += ["", "What it means: the base is random weights, so it writes noise. After "
              f"{recipe.steps:,} training steps on {recipe.train_clips:,} clips it writes what "
              "was said in clips it never trained on. A model that only learns what digit "
              f"strings look like, without listening, stays near CER {format_percent(blind)} (the "
              "audio-blind control); a CER far below that means it listens."]
    return lines


NEXT = """Next:
  voxtune ui        record or upload your own speech, fine-tune, compare, publish (web UI)
  make learn        the longer proof: a CER curve against the audio-blind control (~20 min)
  a GPU             the real model: base_model mistralai/Voxtral-Mini-3B-2507 (the default) in
                    a spec of your data, then `voxtune plan FILE` and `voxtune run FILE`
                    (README, "Running a whole spec locally"; jobs/finetunerun.yaml)"""


def run_demo(control: bool = False, recipe: Recipe = Recipe()) -> int:
    from tqdm import tqdm

    from voxtune.executors.local import LocalExecutor
    from voxtune.publish.registry import Registry
    from voxtune.run.layout import registry_dir
    from voxtune.spec import Settings

    started = time.monotonic()
    settings = Settings()
    executor = LocalExecutor(settings)
    speaker = ("espeak-ng" if shutil.which("espeak-ng") else
               "the bundled word clips (espeak-ng is not installed)")
    print(f"voxtune demo: a random tiny Voxtral learns to hear spoken digits.\n"
          f"1. speech: {recipe.train_clips:,} training clips and "
          f"{len(GROUPS) * recipe.eval_clips} held-out ones, by {speaker}", flush=True)
    with tqdm(total=recipe.train_clips + len(GROUPS) * recipe.eval_clips, desc="speech",
              unit="clip", file=sys.stdout, mininterval=1.0) as bar:
        prepared = digit_corpus(settings.home / "demo-data", recipe, lambda: bar.update(),
                                lambda: bar.set_description("speech, now preparing it"))
    print(f"2. fine-tuning {recipe.model} from scratch, {recipe.steps:,} steps "
          f"(prepare → train → publish)", flush=True)
    status = run_with_progress(executor, run_spec(recipe, DEMO_RUN, prepared))
    blind = None
    if control and status.phase == "Succeeded":
        print("3. the audio-blind control: the same training, audio shuffled between clips",
              flush=True)
        shuffled = make_control(prepared, prepared.parent / "control", recipe.seed)
        blind = run_with_progress(executor, run_spec(recipe, CONTROL_RUN, shuffled, False,
                                                     False))
    run = executor.folder(DEMO_RUN)
    print(f"\nrun {status.name}: {status.phase} — {status.message}")
    if status.phase == "Succeeded":
        print("\n".join(report(run, status, blind, recipe)))
        print(f"\n{NEXT}\n")
    print(f"  run folder:  {run.path}")
    print(f"  model:       {run.final}")
    registry = Registry(registry_dir(settings.home))
    if registry.versions(DEMO_RUN):
        print(f"  published:   {registry.find(DEMO_RUN).path} (card: README.md; Space app: "
              "space/)")
    print(f"  metrics:     {run.metrics}")
    print(f"  logs:        {run.logs}")
    print(f"  dashboard:   voxtune dashboard {run.path}")
    print(f"  took {(time.monotonic() - started) / 60:.1f} min")
    ok = status.phase == "Succeeded" and (blind is None or blind.phase == "Succeeded")
    return ExitCode.OK if ok else ExitCode.FAILURE
