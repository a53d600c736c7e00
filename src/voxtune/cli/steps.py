"""The step commands: `voxtune prepare | train | evaluate | merge`.

Each is a thin adapter: flags → RunSpec → the step's entrypoint. With --run-dir (what every
executor runs) the step reads the run's recorded spec.yaml and nothing else.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from voxtune.cli.arguments import add_spec_arguments, spec_from_arguments
from voxtune.errors import ExitCode, UserError
from voxtune.run.layout import RunFolder
from voxtune.run.status import format_percent
from voxtune.spec import Settings


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """prepare, train, evaluate, merge."""
    _prepare_parser(commands)
    _train_parser(commands)
    _evaluate_parser(commands)
    _merge_parser(commands)


def _prepare_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "prepare", help="Validate speech sources into 16 kHz clips + manifest.jsonl.",
        description="Sources: FILE.jsonl | FOLDER | jsonl:PATH | folder:PATH | recordings:PATH "
        "| hub:ID_OR_PATH?split=train&text_column=text | granary:sv_voxpopuli?audio_root=DIR",
        epilog="example: voxtune prepare --source data.jsonl --output prepared --language en")
    add_spec_arguments(parser)
    parser.add_argument("--source", action="append", help="A speech source (repeatable); "
                        "replaces the spec's sources.")
    parser.add_argument("--output", type=Path, help="Prepared folder (default with --run-dir: "
                        "RUN/prepared).")
    parser.add_argument("--language", help="ISO-639-1 code for clips that do not carry one.")
    parser.add_argument("--eval-fraction", type=float, help="Share held out for evaluation.")
    parser.add_argument("--min-duration", type=float, help="Reject clips shorter (seconds).")
    parser.add_argument("--max-duration", type=float, help="Reject clips longer (seconds, ≤30).")
    parser.add_argument("--workers", type=int, help="Decoding processes (default: all CPUs).")
    parser.set_defaults(handler=_prepare)


def _prepare(args: argparse.Namespace) -> int:
    from voxtune.data.prepare import prepare

    spec = spec_from_arguments(args, {
        "language": args.language,
        "data": {"sources": args.source, "eval_fraction": args.eval_fraction,
                 "min_duration": args.min_duration, "max_duration": args.max_duration},
    })
    output = args.output or (RunFolder(args.run_dir).prepared if args.run_dir else None)
    if output is None:
        raise UserError("--output is required (or --run-dir)")
    workers = args.workers or Settings().workers
    summary = prepare(spec.data, output, spec.language, workers)
    print("\n".join(summary.lines()))
    if summary.kept == 0:
        raise UserError("no usable clips were found; see the reasons above")
    if args.run_dir and spec.eval.general is not None:  # ready before a multi-GPU train
        from voxtune.data.general import general_clips, prepare_general

        general = RunFolder(args.run_dir).general
        if (done := prepare_general(spec.eval.general, general, spec.language, workers)):
            print("\n".join(done.lines()))
        general_clips(spec.eval.general, general)
    return ExitCode.OK


def _train_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train", help="Fine-tune Voxtral (LoRA or full) on a prepared folder.",
        epilog="example: voxtune train --data prepared --output runs/me --model tiny-random "
        "--mode lora --max-steps 20")
    add_spec_arguments(parser)
    parser.add_argument("--data", type=Path, help="Prepared folder (default: RUN/prepared).")
    parser.add_argument("--output", type=Path, help="Run folder for checkpoints/, final/, "
                        "metrics.json (default: --run-dir).")
    parser.add_argument("--model", dest="base_model", help="Hub id, local path or tiny-random.")
    parser.add_argument("--mode", choices=["lora", "full"])
    parser.add_argument("--language", help="ISO-639-1 code for clips without one.")
    steps = parser.add_mutually_exclusive_group()
    steps.add_argument("--max-steps", type=int, help="Optimizer steps (overrides --epochs).")
    steps.add_argument("--epochs", type=float, help="Passes over the train split.")
    parser.add_argument("--save-steps", type=int, help="Checkpoint every N steps.")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--batch-size", type=int, help="Clips per device per micro-batch.")
    parser.add_argument("--grad-accum", type=int, help="Micro-batches per optimizer step.")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"])
    parser.add_argument("--lora-rank", type=int)
    parser.add_argument("--lora-alpha", type=int)
    parser.add_argument("--lora-targets", help="Comma list: attention (always), mlp, projector.")
    parser.set_defaults(handler=_train)


def _lora_targets(value: str | None) -> dict[str, bool]:
    if value is None:
        return {}
    names = {name.strip() for name in value.split(",") if name.strip()}
    unknown = names - {"attention", "mlp", "projector"}
    if unknown:
        raise UserError(f"--lora-targets: unknown {sorted(unknown)}; use attention, mlp, "
                        "projector")
    return {"mlp": "mlp" in names, "projector": "projector" in names}


def _train(args: argparse.Namespace) -> int:
    from voxtune.train.distributed import die_with_launcher
    from voxtune.train.recipe import main as train

    die_with_launcher()
    spec = spec_from_arguments(args, {
        "base_model": args.base_model, "mode": args.mode, "language": args.language,
        "training": {"max_steps": args.max_steps, "epochs": args.epochs,
                     "save_steps": args.save_steps, "learning_rate": args.learning_rate,
                     "batch_size": args.batch_size, "grad_accum": args.grad_accum,
                     "precision": args.precision,
                     "lora": {"rank": args.lora_rank, "alpha": args.lora_alpha,
                              **_lora_targets(args.lora_targets)}},
    })
    output = args.output or args.run_dir
    data = args.data or (RunFolder(args.run_dir).prepared if args.run_dir else None)
    if output is None or data is None:
        raise UserError("give --data and --output (or --run-dir)")
    metrics = train(spec, data, output)
    if "wer" in metrics:
        print(f"WER {format_percent(metrics.get('base_wer'))} → {format_percent(metrics['wer'])}"
              f"   CER {format_percent(metrics.get('base_cer'))} → "
              f"{format_percent(metrics['cer'])}   (base → tuned, {metrics.get('normalizer')})")
    return ExitCode.OK


def _evaluate_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("evaluate", help="WER/CER of a model on a prepared eval split.")
    parser.add_argument("--model", required=True, help="Run folder (uses final/), a saved "
                        "model/adapter folder, a Hub id or tiny-random.")
    parser.add_argument("--data", type=Path, required=True, help="Prepared folder.")
    parser.add_argument("--split", default="eval", choices=["eval", "train"])
    parser.add_argument("--language", help="ISO-639-1 code for clips without one.")
    parser.add_argument("--output", type=Path, help="Write the metrics JSON here too.")
    parser.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from voxtune.train.evaluate import evaluate_folder

    metrics = evaluate_folder(args.model, args.data, args.split, args.language)
    text = json.dumps(metrics, indent=2, ensure_ascii=False)
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    return ExitCode.OK


def _merge_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("merge", help="Fold a LoRA run's adapter into a standalone "
                                 "model.", epilog="example: voxtune merge runs/me")
    parser.add_argument("run", help="Run folder (or its final/) of a LoRA run.")
    parser.add_argument("--output", type=Path, help="Default: RUN/merged.")
    parser.set_defaults(handler=_merge)


def _merge(args: argparse.Namespace) -> int:
    from voxtune.models.merge import export_merged

    output = args.output or RunFolder(Path(args.run)).merged
    print(f"merged model written to {export_merged(args.run, output)}")
    return ExitCode.OK
