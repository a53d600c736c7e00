"""Prepare throughput: voxtune's prepare step against the upstream recipe's audio path.

    make bench                                              # = .venv/bin/python bench/prepare.py
    .venv/bin/python bench/prepare.py --clips 240 --rate 48000

Same files, same run: espeak-ng speech (`voxtune data synth`), converted to `--rate` so that
resampling matters, then
  (a) ours: `voxtune.data.prepare.prepare()` with 1 worker and with every CPU, each into a fresh
      folder (decode, resample, check, hash, write FLAC, manifest), then once more into the last
      folder to show that a re-run reuses finished work, and one read of the prepared clips (what
      a training epoch pays after prepare);
  (b) upstream (Finetune-Voxtral-ASR `train.py`): `Dataset.from_list(rows).cast_column("audio",
      Audio(sampling_rate=16000))`, then every row's decoded array, as its collator reads them in
      each epoch. datasets decodes with torchcodec (FFmpeg), which does not import in the project
      venv (CPU torch, no FFmpeg); for the real figure point `--upstream-python` at the
      throw-away venv described in bench/resample.py:

    L=/tmp/ffroot/usr/lib/x86_64-linux-gnu
    .venv/bin/python bench/prepare.py \
        --upstream-python "env LD_LIBRARY_PATH=$L:$L/blas:$L/lapack /tmp/ta-venv/bin/python"

Without one, (b) falls back to the same datasets rows with `Audio(decode=False)`, decoded with
soundfile + soxr HQ, and the output says so: that is the upstream recipe's data path with our
decoder, not torchcodec. × real time per core = audio seconds / CPU seconds of all processes.
The figures of a recorded run are in docs/benchmarks.md ("Prepare throughput").
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from resample import table  # the sibling bench script (this folder is on sys.path when run)

UPSTREAM_RATE = 16_000
# voxtune, datasets and the audio libraries are imported inside the functions that use them:
# with --upstream-python this file also runs in a venv that has datasets but not voxtune.


@dataclass(frozen=True)
class Timing:
    label: str
    clips: int
    audio_seconds: float
    wall: float
    cpu: float  # user + system seconds of this process and its finished children

    def row(self, baseline: Timing) -> list[str]:
        wall_ratio = (self.clips / self.wall) / (baseline.clips / baseline.wall)
        core_ratio = (self.clips / self.cpu) / (baseline.clips / baseline.cpu)
        return [self.label, f"{self.wall:.2f}", f"{self.clips / self.wall:,.0f}",
                f"{self.audio_seconds / self.wall:,.0f}", f"{self.audio_seconds / self.cpu:,.0f}",
                f"{wall_ratio:.2f}×", f"{core_ratio:.2f}×"]


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(label: str, work) -> Timing:
    """Run `work() -> (clips, audio_seconds)` and time it (wall and CPU)."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    clips, audio_seconds = work()
    return Timing(label, clips, audio_seconds, time.perf_counter() - wall, cpu_seconds() - cpu)


# --- the corpus --------------------------------------------------------------------------------

def make_corpus(folder: Path, clips: int, rate: int) -> Path:
    """espeak-ng clips converted to `rate` 16-bit WAV; returns the upstream-format JSONL.

    espeak-ng repeats itself (same sentence, voice and speed), and prepare drops exact
    duplicates, so each clip gets its own level (0.5–0.9 peak): both sides see every clip.
    """
    import numpy as np
    import soundfile
    import soxr

    from voxtune.data.synth import plan, synthesize

    native = synthesize(folder / "espeak", plan(clips, "mixed", seed=1))
    rows = [json.loads(line) for line in native.read_text().splitlines()]
    (folder / f"audio-{rate}").mkdir(exist_ok=True)
    for index, row in enumerate(rows):
        samples, source_rate = soundfile.read(native.parent / row["audio_path"], dtype="float32")
        if source_rate != rate:
            samples = soxr.resample(samples, source_rate, rate, quality="VHQ")
        level = 0.5 + 0.4 * index / max(clips - 1, 1)
        row["audio_path"] = f"audio-{rate}/{Path(row['audio_path']).name}"
        soundfile.write(folder / row["audio_path"], samples * (level / np.max(np.abs(samples))),
                        rate, subtype="PCM_16")
    jsonl = folder / f"data-{rate}.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return jsonl


# --- (a) ours ----------------------------------------------------------------------------------

def ours(jsonl: Path, output: Path, workers: int) -> tuple[int, float]:
    from voxtune.data.prepare import prepare
    from voxtune.spec import DataSpec, JsonlSource

    # progress bars to a non-terminal disable themselves: keep the tables readable
    with contextlib.redirect_stderr(io.StringIO()):
        summary = prepare(DataSpec(sources=[JsonlSource(path=jsonl)]), output, language="en",
                          workers=workers)
    return summary.kept, summary.minutes * 60


# --- (b) upstream ------------------------------------------------------------------------------

def upstream(jsonl: Path, decoder: str) -> tuple[int, float]:
    """The upstream recipe's data path: a datasets Audio column read row by row, at 16 kHz.

    decoder "torchcodec": `Audio(sampling_rate=16000)` as upstream (datasets → torchcodec).
    decoder "soundfile+soxr": `Audio(decode=False)` rows decoded with soundfile + soxr HQ.
    """
    from datasets import Audio, Dataset

    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    records = [{"audio": str(jsonl.parent / row["audio_path"]), "text": row["text"]}
               for row in rows]
    dataset = Dataset.from_list(records)
    samples = 0
    if decoder == "torchcodec":
        dataset = dataset.cast_column("audio", Audio(sampling_rate=UPSTREAM_RATE))
        for row in dataset:
            samples += len(row["audio"]["array"])
    else:
        import soundfile
        import soxr

        dataset = dataset.cast_column("audio", Audio(decode=False))
        for row in dataset:
            audio, rate = soundfile.read(row["audio"]["path"], dtype="float32")
            samples += len(soxr.resample(audio, rate, UPSTREAM_RATE, quality="HQ"))
    return len(dataset), samples / UPSTREAM_RATE


def read_prepared(output: Path) -> tuple[int, float]:
    """What a training epoch pays with ours: read the prepared 16 kHz FLACs, no resampling."""
    import soundfile

    samples, clips = 0, 0
    for line in (output / "manifest.jsonl").read_text().splitlines():
        samples += len(soundfile.read(output / json.loads(line)["audio_path"], dtype="float32")[0])
        clips += 1
    return clips, samples / UPSTREAM_RATE


def torchcodec_works() -> str | None:
    """None when datasets can decode audio here, else why not (the error's first line)."""
    try:
        from torchcodec.decoders import AudioDecoder  # noqa: F401  (the import is the check)
    except Exception as error:  # broken FFmpeg/CUDA links raise RuntimeError/OSError too
        return f"{type(error).__name__}: " + (str(error).strip().splitlines() or [""])[0][:120]
    return None


def upstream_elsewhere(python: str, jsonl: Path, repeats: int) -> tuple[Timing, str]:
    """Time (b) in another interpreter (one where torchcodec imports); returns its versions too."""
    command = [*shlex.split(python), str(Path(__file__).resolve()), "--upstream-only", str(jsonl),
               "--repeats", str(repeats)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        sys.exit(f"--upstream-python failed ({result.returncode}):\n{result.stderr[-2000:]}")
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    return Timing(**answer["timing"]), answer["versions"]


def best_upstream(jsonl: Path, decoder: str, repeats: int) -> Timing:
    label = ("(b) upstream: datasets Audio(sampling_rate=16000), torchcodec" if decoder ==
             "torchcodec" else "(b') datasets Audio(decode=False) + soundfile/soxr HQ")
    upstream(jsonl, decoder)  # warm-up: first torchcodec/FFmpeg use, page cache
    runs = [timed(label, lambda: upstream(jsonl, decoder)) for _ in range(repeats)]
    return min(runs, key=lambda timing: timing.wall)


def versions() -> str:
    import importlib.metadata as metadata

    found = []
    for name in ("datasets", "torchcodec", "torch", "soundfile", "soxr", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    return ", ".join(found)


def measure_upstream(jsonl: Path, python: str | None, repeats: int) -> tuple[Timing, str]:
    """(b) where it can really run, else the closest stand-in; plus a note saying which."""
    if python:
        baseline, upstream_versions = upstream_elsewhere(python, jsonl, repeats)
        return baseline, (f"(b) measured in {python} [{upstream_versions}]: datasets decodes "
                          "and resamples with torchcodec/FFmpeg, as the upstream recipe does")
    reason = torchcodec_works()
    if reason is None:
        return (best_upstream(jsonl, "torchcodec", repeats),
                "(b) measured here with datasets + torchcodec, as the upstream recipe does")
    return best_upstream(jsonl, "soundfile+soxr", repeats), (
        f"(b') torchcodec does not import here ({reason}), so datasets cannot decode audio: "
        "measured the upstream rows with Audio(decode=False) decoded by soundfile + soxr HQ "
        "instead. For the real upstream decoder pass --upstream-python (see the module docstring).")


def measure_ours(jsonl: Path, work: Path, workers: int, repeats: int) -> list[Timing]:
    """Best of `repeats` fresh runs with 1 and `workers` workers, a re-run, an epoch's read."""
    import voxtune.data.prepare  # noqa: F401  (keeps the import time out of the timings)

    results = []
    for count in dict.fromkeys((1, workers)):
        label = f"(a) voxtune prepare, {count} worker{'s' * (count > 1)}"
        runs = []
        for repeat in range(repeats):
            output = work / f"prepared-{count}-{repeat}"
            shutil.rmtree(output, ignore_errors=True)
            runs.append(timed(label, lambda o=output, c=count: ours(jsonl, o, c)))
        results.append(min(runs, key=lambda timing: timing.wall))
    results.append(timed("(a) re-run on the same output (reuse)",
                         lambda: ours(jsonl, output, workers)))
    epoch = [timed("(a) per epoch after prepare: read the 16 kHz FLACs",
                   lambda: read_prepared(output)) for _ in range(repeats)]
    return [*results, min(epoch, key=lambda timing: timing.wall)]


# --- report ------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=500,
                        help="Clips to synthesize (≈2.3 s each); more gives steadier figures.")
    parser.add_argument("--rate", type=int, default=44_100,
                        help="Sample rate of the benchmark files (espeak-ng's own is 22050); "
                        "44100/48000 are what microphones, browsers and most corpora deliver.")
    parser.add_argument("--repeats", type=int, default=3,
                        help="Timed repeats per measurement; the fastest is reported.")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                        help="Worker processes for the parallel run of ours (default: all CPUs).")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="Keep corpus and outputs here (reused next time), not in a temp dir.")
    parser.add_argument("--upstream-python", default=None,
                        help="Interpreter (a command line) where datasets can decode with "
                        "torchcodec, for the real upstream figure; see the module docstring.")
    parser.add_argument("--upstream-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.upstream_only:  # child mode for --upstream-python: time (b), print JSON
        reason = torchcodec_works()
        if reason:
            sys.exit(f"torchcodec does not import in {sys.executable}: {reason}")
        timing = best_upstream(args.upstream_only, "torchcodec", args.repeats)
        print(json.dumps({"timing": timing.__dict__, "versions": versions()}))
        return

    with contextlib.ExitStack() as stack:
        work = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)

        # 1. the corpus: espeak-ng speech at --rate
        started = time.perf_counter()
        jsonl = make_corpus(work, args.clips, args.rate)
        print(f"corpus: {args.clips} espeak-ng clips at {args.rate} Hz 16-bit WAV in {work} "
              f"({time.perf_counter() - started:.0f} s to make)")

        # 2. (b) the upstream recipe's path, here or in --upstream-python
        baseline, note = measure_upstream(jsonl, args.upstream_python, args.repeats)

        # 3. (a) ours: one worker, all workers (fresh folders), a re-run, an epoch's read
        results = measure_ours(jsonl, work, args.workers, args.repeats)

    # 4. the table: same files, same run
    print(f"python {sys.version.split()[0]}, {len(os.sched_getaffinity(0))} CPUs; {versions()}")
    print(note)
    print(f"\n## Prepare throughput: {baseline.clips} clips, {baseline.audio_seconds / 60:.1f} min "
          f"of speech at {args.rate} Hz → 16 kHz (best of {args.repeats})\n")
    header = ["run", "wall s", "clips/s", "× real time", "× real time per core",
              "clips/s vs (b)", "per core vs (b)"]
    print(table(header, [timing.row(baseline) for timing in [baseline, *results]]))
    kept_seconds = results[0].audio_seconds
    if abs(kept_seconds - baseline.audio_seconds) > 0.01 * baseline.audio_seconds:
        print(f"warning: (a) kept {kept_seconds:.0f} s of audio, (b) decoded "
              f"{baseline.audio_seconds:.0f} s: the runs did not see the same audio")
    print("\n(a) checks, hashes and writes each clip once as 16 kHz FLAC + manifest; (b) only "
          "decodes, and the upstream collator repeats that decode in every epoch; the last row is "
          "what reading our prepared clips costs per epoch instead.")


if __name__ == "__main__":
    main()
