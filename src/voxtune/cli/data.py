"""`voxtune data synth | samples | prompts | calibrate`: speech data for trying voxtune out, and
targeted recording — prompts cut from the user's own text, and a calibration that finds what a
model gets wrong in their voice (voxtune.data.prompts, voxtune.data.calibrate)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from voxtune.errors import ExitCode, UserError


def add_parsers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("data", help="Make speech data for trying voxtune out.")
    data = parser.add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="Synthesize a corpus with espeak-ng.")
    synth.add_argument("--output", type=Path, required=True)
    synth.add_argument("--count", type=int, default=40, help="Number of clips.")
    synth.add_argument("--kind", choices=["mixed", "sentences", "digits"], default="mixed")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(handler=_synth)
    samples = data.add_parser("samples", help="Copy the bundled sample clips (no espeak-ng).")
    samples.add_argument("--output", type=Path, required=True)
    samples.set_defaults(handler=_samples)
    prompts = data.add_parser(
        "prompts", help="Cut your own text (glossary, names, documents) into prompts to read "
        "aloud, then the built-in sentences; one per line.",
        epilog="example: voxtune data prompts --text notes.txt --count 10 --calibration")
    _prompt_arguments(prompts)
    prompts.add_argument("--count", type=int, default=None, help="At most this many.")
    prompts.add_argument("--calibration", action="store_true",
                         help="Only the prompts that cover the text's vocabulary best: what to "
                         "record first, for `voxtune data calibrate` (10 unless --count).")
    prompts.set_defaults(handler=_prompts)
    calibrate = data.add_parser(
        "calibrate", help="Transcribe recorded clips with a model, print the words it gets "
        "wrong and the prompts to record next (best first, with why).",
        epilog="example: voxtune data calibrate --clips my-clips/ --text notes.txt "
        "--model mistralai/Voxtral-Mini-3B-2507")
    calibrate.add_argument("--clips", type=Path, required=True,
                           help="A folder of clips with transcripts (<name>.txt beside each "
                           "audio file, or metadata.csv/jsonl), as a `folder` source reads it.")
    _prompt_arguments(calibrate)
    calibrate.add_argument("--model", default=None, help="The model to calibrate: a Hub id, "
                           "a preset, a run or model folder, or a registry NAME[@VERSION] "
                           "(default: the default base model).")
    calibrate.add_argument("--count", type=int, default=10, help="Next prompts to print.")
    calibrate.set_defaults(handler=_calibrate)


def _prompt_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text", type=Path, default=None,
                        help="UTF-8 text file: your glossary, names, documents.")
    parser.add_argument("--language", default="en",
                        help="ISO-639-1 code of the built-in sentences (and the clips).")


def _pool(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The prompts cut from --text, and the built-in sentences of --language."""
    from voxtune.data.prompts import cut
    from voxtune.ui.phrases import PHRASES

    if args.language not in PHRASES:
        raise UserError(f"--language {args.language}: built-in sentences exist for "
                        f"{', '.join(PHRASES)}")
    if args.count is not None and args.count < 1:
        raise UserError("--count must be at least 1")
    text = ""
    if args.text is not None:
        try:
            text = args.text.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"--text {args.text}: no such file") from None
        except (UnicodeDecodeError, IsADirectoryError):
            raise UserError(f"--text {args.text}: not a UTF-8 text file") from None
    return cut(text), list(PHRASES[args.language])


def _prompts(args: argparse.Namespace) -> int:
    from voxtune.data.calibrate import CALIBRATION_PROMPTS, calibration_set
    from voxtune.data.prompts import unique

    domain, builtin = _pool(args)
    if args.calibration:
        chosen = calibration_set(domain, builtin, args.count or CALIBRATION_PROMPTS,
                                 language=args.language)
    else:
        chosen = unique([*domain, *builtin])[:args.count]
    print("\n".join(chosen))
    return ExitCode.OK


def _calibrate(args: argparse.Namespace) -> int:
    from voxtune.data.audio import AudioRejected, ClipLimits, load_16k
    from voxtune.data.calibrate import error_report, rank, report_lines
    from voxtune.data.manifest import Rejection
    from voxtune.data.prompts import unique
    from voxtune.data.sources import read_source
    from voxtune.spec import FolderSource

    domain, builtin = _pool(args)
    references, audio = [], []
    for item in read_source(FolderSource(path=args.clips)):
        if isinstance(item, Rejection):
            print(f"skipped {item.source}: {item.detail}", file=sys.stderr)
            continue
        try:  # the prepare step's rules: what training would refuse is not calibrated on
            audio.append(load_16k(item.audio, ClipLimits()))
        except AudioRejected as problem:
            print(f"skipped {item.source}: {problem}", file=sys.stderr)
            continue
        references.append(str(item.text))
    if not references:
        raise UserError(f"--clips {args.clips}: no usable clips with a transcript")
    heard = _transcribe(args.model, audio, args.language)
    report = error_report(list(zip(references, heard, strict=True)), language=args.language)
    print("\n".join(report_lines(report)))
    print("\nnext prompts (best first):")
    for number, choice in enumerate(rank(unique([*domain, *builtin]), report,
                                         skip=references, language=args.language)
                                    [:args.count], start=1):
        print(f"{number:3}. {choice.prompt}\n     why: {choice.why}")
    return ExitCode.OK


def _transcribe(model: str | None, audio: list[Any], language: str) -> list[str]:
    """What `model` (a base by default) writes for each clip, the way evaluation transcribes."""
    from voxtune.cli.serve import resolve_model
    from voxtune.models.inference import TokenLimit, transcribe_batch
    from voxtune.models.load import load_tuned
    from voxtune.models.presets import tiny_preset_window
    from voxtune.spec import DEFAULT_BASE_MODEL, EvalSpec, Settings

    reference = model or DEFAULT_BASE_MODEL
    preset = tiny_preset_window(reference) is not None  # serve's resolver knows no presets
    loaded, _ = load_tuned(reference if preset else resolve_model(reference, Settings().home))
    heard: list[str] = []
    size = EvalSpec().batch_size  # as evaluation batches them
    for start in range(0, len(audio), size):
        batch = audio[start:start + size]
        heard += [transcript.text for transcript in transcribe_batch(
            loaded.model, loaded.processor, batch, [language] * len(batch),
            max_new_tokens=TokenLimit())]
    return heard


def _synth(args: argparse.Namespace) -> int:
    from voxtune.data.synth import plan, synthesize

    manifest = synthesize(args.output, plan(args.count, args.kind, seed=args.seed))
    print(f"wrote {args.count} clips; use it with: voxtune prepare --source {manifest} ...")
    return ExitCode.OK


def _samples(args: argparse.Namespace) -> int:
    from voxtune.data.synth import copy_samples

    print(f"copied sample clips to {copy_samples(args.output)}")
    return ExitCode.OK
