"""Proof that targeted prompts help: calibrate a model on "the user's voice", record what it gets
wrong, and compare a second training round on the chosen prompts with one on random prompts.

    OMP_NUM_THREADS=1 .venv/bin/python bench/targeted.py    # ≈15 min on 2 shared CPU cores
    .venv/bin/python bench/targeted.py --prompts 12         # another round size; the corpus
                                                            # and the base are reused

No pretrained weights exist here, so the "base model" is the demo's tiny Voxtral trained from
scratch on spoken digits (`voxtune.demo`: its corpus and recipe, through the product's train
step) with one digit word, WEAK, in only RARE_CLIPS of its training clips, so it mis-hears it:

1. base: `digit_corpus` with `rare_word=WEAK`, trained by `voxtune.train.recipe.main`.
2. calibrate: the user (espeak-ng's HELD_OUT_VOICE, which training never hears) records the
   `calibration_set` of a candidate pool of digit strings; the base transcribes the clips and
   `error_report` must put WEAK first.
3. choose: `rank` orders the pool; the targeted arm takes its first PROMPTS, each of
   RANDOM_DRAWS random arms as many drawn at random from the same pool (seeded). All are
   spoken in the user's voice.
4. round 2: each arm continues training the base on its prompts alone, the same steps and
   settings, through the product's train step.
5. held out: new strings in the user's voice, each holding WEAK. Reported per arm: WEAK's
   error (its reference occurrences substituted or left out, from `error_report`), and the WER
   over all words of those clips and over the corpus's own held-out clips (a round that learns
   to write WEAK everywhere would show there).

The result JSON goes to bench/results/targeted.json (the suite re-runs the chooser on its
calibration transcripts and checks that targeted beat every random draw); docs/benchmarks.md,
"Targeted recording", has the table. On a shared machine run it with OMP_NUM_THREADS=1: two
torch threads fighting other jobs for two cores took 2.2 s a step here, one thread 0.4 s.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from voxtune.data.calibrate import (
    CALIBRATION_PROMPTS,
    calibration_set,
    error_report,
    rank,
    report_lines,
)
from voxtune.data.synth import digit_utterances
from voxtune.demo import HELD_OUT_VOICE, Recipe, digit_corpus, run_spec

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: the model is built locally

RESULT = Path(__file__).resolve().parent / "results" / "targeted.json"
WEAK = "seven"
RARE_CLIPS = 20  # of the base's 2,000 training clips hold WEAK (≈38 % would by chance)
# the demo's 1,200 steps on 2,000 clips, its encoder trained as when the saved result was measured
BASE = Recipe(rare_word=WEAK, rare_clips=RARE_CLIPS, freeze_audio_encoder=False)
POOL, PROMPTS, HELD_OUT = 200, 24, 30  # candidate strings, prompts per arm, held-out clips
RANDOM_DRAWS = 3  # random arms, each its own draw from the pool (one lucky draw proves little)
USER_SPEEDS = (140, 160, 180)
# round 2: a short fine-tune of the base on the arm's prompts alone (epochs over few clips, so
# a lower rate than from scratch)
ROUND = replace(BASE, steps=120, batch_size=8, learning_rate=3e-4, warmup=0.1)


@dataclass(frozen=True)
class Arm:
    name: str
    prompts: list[str]
    weak_error: float  # WEAK's occurrences in the held-out clips substituted or left out
    weak_said: int
    wer: float  # all words of the held-out clips
    corpus_wer: float  # the corpus's own held-out clips (other voices, any digits)
    weak_in_prompts: int  # times WEAK is said in the arm's prompts


def spoken(folder: Path, texts: list[str], rng: random.Random) -> Path:
    """`texts` said in the user's voice, prepared into folder/prepared, every clip in the train
    split."""
    from voxtune.data.manifest import MANIFEST, Clip, jsonl_bytes, read_manifest
    from voxtune.data.prepare import prepare
    from voxtune.data.synth import Utterance, synthesize
    from voxtune.files import write_atomic
    from voxtune.spec import DataSpec, JsonlSource

    shutil.rmtree(folder, ignore_errors=True)
    utterances = [Utterance(text, HELD_OUT_VOICE, rng.choice(USER_SPEEDS)) for text in texts]
    source = JsonlSource(path=synthesize(folder / "speech", utterances))
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bars
        summary = prepare(DataSpec(sources=[source]), folder / "prepared", language="en")
    if summary.rejected:
        raise RuntimeError(f"prepare rejected clips in {folder}")
    # every clip is the arm's to train on (or the set's to score): no split held back
    clips = [Clip(**{**asdict(clip), "split": "train"})
             for clip in read_manifest(folder / "prepared")]
    write_atomic(folder / "prepared" / MANIFEST, jsonl_bytes(clips))
    return folder / "prepared"


def transcripts(model_path: Path, prepared: Path, split: str | None = None) -> list[tuple[str,
                                                                                          str]]:
    """(reference, transcript) of every clip of `prepared` by the model in `model_path`."""
    from voxtune.data.manifest import read_manifest
    from voxtune.models.inference import TokenLimit
    from voxtune.models.load import load
    from voxtune.spec import EvalSpec
    from voxtune.train.evaluate import transcribe_clips

    model, processor = load(str(model_path))
    clips = read_manifest(prepared, split)
    found = transcribe_clips(model, processor, clips, prepared, "en",
                             TokenLimit(fixed=BASE.max_new_tokens), EvalSpec().batch_size)
    return [(clip.text, found[index].text) for index, clip in enumerate(clips)]


def train(recipe: Recipe, name: str, prepared: Path, output: Path) -> Path:
    """The product's train step on `prepared`; returns the final model folder. A base already
    trained with the same spec is reused."""
    from voxtune.data.manifest import MANIFEST
    from voxtune.train import recipe as train_step

    spec = run_spec(recipe, name, prepared, publish=False, tracking=False)
    # the same spec on other clips is another model: the manifest is part of the key
    key = spec.model_dump_json() + hashlib.sha256((prepared / MANIFEST).read_bytes()).hexdigest()
    marker = output / "trained-from.txt"
    if marker.is_file() and marker.read_text() == key:
        return output / "final"
    shutil.rmtree(output, ignore_errors=True)  # a leftover checkpoint would be resumed
    output.mkdir(parents=True)
    started = time.perf_counter()
    with open(output / "train.log", "w", encoding="utf-8") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        train_step.main(spec, prepared, output)
    marker.write_text(key)
    print(f"  trained {name}: {recipe.steps} steps in {(time.perf_counter() - started) / 60:.1f}"
          f" min (log: {output / 'train.log'})", flush=True)
    return output / "final"


def pool(rng: random.Random, avoid: set[str], count: int) -> list[str]:
    """`count` different digit strings (an utterance is a string in a voice at a speed)."""
    texts: dict[str, None] = {}
    while len(texts) < count:
        texts |= dict.fromkeys(u.text for u in digit_utterances(
            count - len(texts), (HELD_OUT_VOICE,), USER_SPEEDS, rng, avoid | set(texts),
            BASE.digits))
    return list(texts)


def measure(name: str, model: Path, prompts: list[str], held_out: Path,
            corpus: Path) -> Arm:
    pairs = transcripts(model, held_out)
    report = error_report(pairs)
    weak = report.words[WEAK]
    corpus_report = error_report(transcripts(model, corpus, "eval"))
    return Arm(name, prompts, weak.failed / weak.said, weak.said, report.wer, corpus_report.wer,
               sum(prompt.split().count(WEAK) for prompt in prompts))


def run(workdir: Path, prompts: int, base_recipe: Recipe = BASE,
        round_recipe: Recipe = ROUND) -> dict[str, Any]:
    started = time.perf_counter()
    rng = random.Random(BASE.seed + 1)
    print(f"1. base: the demo's tiny model, {base_recipe.steps} steps on "
          f"{base_recipe.train_clips} clips, '{WEAK}' in only {RARE_CLIPS} of them", flush=True)
    from voxtune.data.manifest import read_manifest

    corpus = digit_corpus(workdir / "corpus", base_recipe)
    base = train(base_recipe, "targeted-base", corpus, workdir / "base")

    seen = {clip.text for clip in read_manifest(corpus)}
    candidates = pool(rng, seen, POOL)
    # ten digit words are covered by two or three strings: the rest of the ten prompts come in
    # the pool's order, so each word is said several times
    calibration = calibration_set(candidates, candidates, CALIBRATION_PROMPTS)
    rest = [text for text in candidates if text not in calibration]
    held_texts = [u.text for u in digit_utterances(HELD_OUT, (HELD_OUT_VOICE,), USER_SPEEDS, rng,
                                                   seen | set(candidates), BASE.digits,
                                                   containing=WEAK)]
    held_out = spoken(workdir / "held-out", held_texts, rng)

    print(f"2. calibrate: {len(calibration)} prompts in the user's voice ({HELD_OUT_VOICE})",
          flush=True)
    calibrated = spoken(workdir / "calibration", calibration, rng)
    heard = transcripts(base, calibrated)
    report = error_report(heard)
    print("\n".join(f"   {line}" for line in report_lines(report, 10)), flush=True)
    found = report.errors[0].word if report.errors else None

    ranked = rank(rest, report)  # calibration clips are held out for measuring, not training
    targeted = [choice.prompt for choice in ranked[:prompts]]
    print(f"3. choose: first of {len(ranked)}: {ranked[0].prompt!r} — {ranked[0].why}",
          flush=True)
    draws = random.Random(BASE.seed + 2)
    arms = {"targeted": targeted, **{f"random-{draw}": draws.sample(rest, prompts)
                                     for draw in range(1, RANDOM_DRAWS + 1)}}
    results = {"base": measure("base", base, [], held_out, corpus)}
    for name, texts in arms.items():
        print(f"4. round 2, {name}: {prompts} prompts, {round_recipe.steps} steps", flush=True)
        data = spoken(workdir / name, texts, rng)
        model = train(replace(round_recipe, model=str(base)), f"targeted-{name}", data,
                      workdir / "runs" / name)
        results[name] = measure(name, model, texts, held_out, corpus)
    ranks_weak_first = all(WEAK in choice.prompt.split() for choice in ranked[:prompts])
    return {
        "measured": time.strftime("%Y-%m-%d"),
        "weak_word": WEAK, "rare_clips": RARE_CLIPS, "base_steps": base_recipe.steps,
        "base_train_clips": base_recipe.train_clips, "round_steps": round_recipe.steps,
        "round_learning_rate": round_recipe.learning_rate, "prompts_per_arm": prompts,
        "pool": POOL, "held_out_clips": HELD_OUT, "user_voice": HELD_OUT_VOICE,
        # what the suite re-runs the chooser on: the base's transcripts and the candidates
        "calibration": {"pairs": heard, "wer": report.wer, "candidates": rest,
                        "worst_words": [[e.word, e.failed, e.said, e.heard_as()]
                                        for e in report.errors[:5]]},
        "calibration_found": found, "first_choice": asdict(ranked[0]),
        "chosen_all_hold_weak_word": ranks_weak_first,
        "arms": {name: asdict(arm) for name, arm in results.items()},
        "targeted_beats_random": all(results["targeted"].weak_error < arm.weak_error
                                     for name, arm in results.items()
                                     if name.startswith("random")),
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "cpus": os.cpu_count(),
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"| model | '{result['weak_word']}' said in its prompts | '{result['weak_word']}' "
             "error, held out | WER, held out (user's voice) | WER, corpus held-out |",
             "|---|---|---|---|---|"]
    for name, arm in result["arms"].items():
        lines.append(f"| {name} | {arm['weak_in_prompts']} | {arm['weak_error']:.3f} "
                     f"({arm['weak_said']} said) | {arm['wer']:.3f} | {arm['corpus_wer']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="default: $VOXTUNE_HOME/bench-targeted (corpus and base reused)")
    parser.add_argument("--prompts", type=int, default=PROMPTS, help="prompts per arm")
    parser.add_argument("--base-steps", type=int, default=BASE.steps)
    parser.add_argument("--round-steps", type=int, default=ROUND.steps)
    parser.add_argument("--train-clips", type=int, default=BASE.train_clips,
                        help="the base's training clips (a quick look: a few hundred)")
    parser.add_argument("--output", type=Path, default=RESULT)
    options = parser.parse_args()
    if not shutil.which("espeak-ng"):
        sys.exit("bench/targeted.py needs espeak-ng (apt-get install espeak-ng)")
    from voxtune.spec import Settings as Home

    workdir = options.workdir or Home().home / "bench-targeted"
    print(f"bench/targeted.py: {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
          f"load average {os.getloadavg()[0]:.2f}; workdir {workdir}", flush=True)
    base = replace(BASE, steps=options.base_steps, train_clips=options.train_clips)
    result = run(workdir, options.prompts, base, replace(ROUND, steps=options.round_steps))
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(result))
    print(f"\ncalibration found '{result['calibration_found']}'; targeted beats random: "
          f"{result['targeted_beats_random']}; {result['minutes']} min; saved {options.output}")


if __name__ == "__main__":
    main()
