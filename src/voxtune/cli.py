"""The `voxtune` command. Each subcommand is a thin adapter: flags → RunSpec → a step or executor.

Exit codes (errors.ExitCode): 0 ok, 2 bad input/config, 74 disk full, 75 interrupted (run again
to resume), 1 a bug (with traceback).
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from voxtune.controller.cli import add_parsers as _controller_parsers
from voxtune.errors import ExitCode, NoSpaceError, RetryableError, UserError
from voxtune.publish.cli import add_parsers as _publish_parsers
from voxtune.runs import RunFolder
from voxtune.spec import RunSpec, Settings, format_validation_error, load_spec

Handler = Callable[[argparse.Namespace], int]


# --- spec loading shared by the step commands ----------------------------------------------


def _add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--run-dir", type=Path, help="Run folder with spec.yaml (what the "
                       "executors pass); outputs go into it.")
    where.add_argument("--spec", type=Path, help="RunSpec or FineTuneRun YAML file.")


def _spec(args: argparse.Namespace, overrides: dict[str, Any]) -> RunSpec:
    path = args.run_dir / "spec.yaml" if args.run_dir else args.spec
    if path is None:
        overrides.setdefault("name", "adhoc")
    return load_spec(path, overrides)


def _drop_none(tree: dict[str, Any]) -> dict[str, Any]:
    """Keep only the flags the user gave, so they override the file and nothing else."""
    pruned = {key: _drop_none(value) if isinstance(value, dict) else value
              for key, value in tree.items()}
    return {key: value for key, value in pruned.items() if value not in (None, {})}


# --- prepare ------------------------------------------------------------------------------------


def _prepare_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "prepare", help="Validate speech sources into 16 kHz clips + manifest.jsonl.",
        description="Sources: FILE.jsonl | FOLDER | jsonl:PATH | folder:PATH | recordings:PATH "
        "| hub:ID_OR_PATH?split=train&text_column=text | granary:sv_voxpopuli?audio_root=DIR",
        epilog="example: voxtune prepare --source data.jsonl --output prepared --language en")
    _add_spec_arguments(parser)
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

    spec = _spec(args, _drop_none({
        "language": args.language,
        "data": {"sources": args.source, "eval_fraction": args.eval_fraction,
                 "min_duration": args.min_duration, "max_duration": args.max_duration},
    }))
    output = args.output or (args.run_dir / "prepared" if args.run_dir else None)
    if output is None:
        raise UserError("--output is required (or --run-dir)")
    workers = args.workers or Settings().workers
    summary = prepare(spec.data, output, spec.language, workers)
    print("\n".join(summary.lines()))
    if summary.kept == 0:
        raise UserError("no usable clips were found; see the reasons above")
    return ExitCode.OK


# --- train and evaluate -----------------------------------------------------------------------


def _train_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train", help="Fine-tune Voxtral (LoRA or full) on a prepared folder.",
        epilog="example: voxtune train --data prepared --output runs/me --model tiny-random "
        "--mode lora --max-steps 20")
    _add_spec_arguments(parser)
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
    from voxtune.train.recipe import main as train

    spec = _spec(args, _drop_none({
        "base_model": args.base_model, "mode": args.mode, "language": args.language,
        "training": {"max_steps": args.max_steps, "epochs": args.epochs,
                     "save_steps": args.save_steps, "learning_rate": args.learning_rate,
                     "batch_size": args.batch_size, "grad_accum": args.grad_accum,
                     "precision": args.precision,
                     "lora": {"rank": args.lora_rank, "alpha": args.lora_alpha,
                              **_lora_targets(args.lora_targets)}},
    }))
    output = args.output or args.run_dir
    data = args.data or (args.run_dir / "prepared" if args.run_dir else None)
    if output is None or data is None:
        raise UserError("give --data and --output (or --run-dir)")
    metrics = train(spec, data, output)
    if "wer" in metrics:
        print(f"WER {metrics.get('base_wer', float('nan')):.3f} → {metrics['wer']:.3f}   "
              f"CER {metrics.get('base_cer', float('nan')):.3f} → {metrics['cer']:.3f}")
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
    from voxtune.train.evaluate import export_merged

    output = args.output or Path(args.run) / "merged"
    print(f"merged model written to {export_merged(args.run, output)}")
    return ExitCode.OK


# --- resource plan ------------------------------------------------------------------------------


def _plan_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "plan", help="Will a run fit? Memory per GPU, host RAM, disk, from the config alone.",
        description="Estimates from the base model's config (shipped presets for the "
        "published Voxtral ids; no weights are downloaded). Exit code 2 when it does not fit, "
        "with what would.", epilog="example: voxtune plan my-run.yaml --gpu-profile 48gb")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("spec", nargs="?", type=Path, help="RunSpec or FineTuneRun YAML file.")
    where.add_argument("--run-dir", type=Path, help="A run folder (plans its spec.yaml).")
    parser.add_argument("--gpu-profile", help="Check against this GPU profile (default: the "
                        "smallest that fits). Shipped: 24gb, 48gb, 80gb, 141gb.")
    parser.add_argument("--write-mb-per-s", type=float, help="Volume write speed for the "
                        "checkpoint-write time (default 500).")
    parser.add_argument("--json", action="store_true", help="One JSON object for scripts.")
    parser.set_defaults(handler=_plan)


def _plan(args: argparse.Namespace) -> int:
    from voxtune.plan import DEFAULT_PROFILES, DEFAULT_WRITE_MB_PER_S, memory_gib, plan_run

    spec = RunFolder(args.run_dir).read_spec() if args.run_dir else load_spec(args.spec)
    profile = None
    if args.gpu_profile:
        names = {p.name: p for p in DEFAULT_PROFILES}
        if args.gpu_profile not in names:
            raise UserError(f"--gpu-profile {args.gpu_profile!r}: use one of {sorted(names)}")
        profile = names[args.gpu_profile]
    limit = memory_gib(spec.resources.memory) if spec.resources.memory else None
    plan = plan_run(spec, profile, host_limit_gib=limit,
                    write_mb_per_s=args.write_mb_per_s or DEFAULT_WRITE_MB_PER_S)
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
    else:
        print("\n".join(plan.lines()))
    if not plan.fits:
        print(f"error: run {spec.name!r} does not fit: " + "; or ".join(plan.advice),
              file=sys.stderr)
        return ExitCode.USER_ERROR
    return ExitCode.OK


# --- synthetic data -----------------------------------------------------------------------------


def _data_parser(commands: argparse._SubParsersAction) -> None:
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


def _synth(args: argparse.Namespace) -> int:
    from voxtune.data.synth import plan, synthesize

    manifest = synthesize(args.output, plan(args.count, args.kind, seed=args.seed))
    print(f"wrote {args.count} clips; use it with: voxtune prepare --source {manifest} ...")
    return ExitCode.OK


def _samples(args: argparse.Namespace) -> int:
    from voxtune.data.synth import copy_samples

    print(f"copied sample clips to {copy_samples(args.output)}")
    return ExitCode.OK


# --- runs -------------------------------------------------------------------------------------


def _run_parsers(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="Run a spec's steps locally, in order.",
                              epilog="example: voxtune run my-run.yaml")
    run.add_argument("spec", type=Path, help="RunSpec or FineTuneRun YAML file.")
    run.set_defaults(handler=_run)
    dashboard = commands.add_parser("dashboard", help="Open the trackio dashboard of a run.",
                                    epilog="example: voxtune dashboard ~/.voxtune/runs/demo")
    dashboard.add_argument("run_dir", type=Path, help="Run folder (holds trackio/).")
    dashboard.add_argument("--host", default="127.0.0.1", help="Interface to serve on.")
    dashboard.set_defaults(handler=_dashboard)
    demo = commands.add_parser("demo", help="Run the whole pipeline on synthesized speech.")
    demo.set_defaults(handler=_demo)
    spec = commands.add_parser("spec", help="Validate a spec file and print it resolved.")
    spec.add_argument("file", type=Path, nargs="?")
    spec.add_argument("--schema", action="store_true", help="Print the RunSpec JSON schema.")
    spec.set_defaults(handler=_show_spec)


def _run(args: argparse.Namespace) -> int:
    from voxtune.controller.local import LocalExecutor
    from voxtune.runs import TERMINAL

    executor = LocalExecutor()
    status = executor.submit(load_spec(args.spec))
    if status.phase not in TERMINAL:  # another process is running it: follow that attempt
        print(f"{status.name} is already running ({status.phase}); waiting for it to end — "
              f"`voxtune logs {status.name} --follow` shows its output")
        status = executor.wait(status.name)
    print(f"{status.name}: {status.phase} — {status.message}")
    return ExitCode.OK if status.phase == "Succeeded" else ExitCode.USER_ERROR


def _dashboard(args: argparse.Namespace) -> int:
    import os
    import subprocess

    spec_file = args.run_dir / "final" / "spec.yaml"
    if not spec_file.exists():
        spec_file = args.run_dir / "spec.yaml"
    project = load_spec(spec_file).tracking.project if spec_file.exists() else "voxtune"
    if not (args.run_dir / "trackio").is_dir():
        raise UserError(f"{args.run_dir}: no trackio/ folder; has the train step run there?")
    # trackio reads TRACKIO_DIR once at import, so the dashboard runs in its own process.
    env = {**os.environ, "TRACKIO_DIR": str(args.run_dir / "trackio")}
    command = [sys.executable, "-m", "trackio.cli", "show", "--project", project,
               "--host", args.host]
    return subprocess.run(command, env=env).returncode


def _demo(args: argparse.Namespace) -> int:
    from voxtune.demo import run_demo

    return run_demo()


def _show_spec(args: argparse.Namespace) -> int:
    if args.schema:
        print(json.dumps(RunSpec.model_json_schema(), indent=2))
    elif args.file:
        print(load_spec(args.file).to_yaml(), end="")
    else:
        raise UserError("give a spec FILE to validate, or --schema")
    return ExitCode.OK


# --- web UI -------------------------------------------------------------------------------------


def _ui_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "ui", help="Web UI: record speech, build the dataset, launch and watch runs, publish, "
        "try the model.", description="Auth and the demo server come from VOXTUNE_UI_* "
        "variables (VOXTUNE_UI_AUTH=none|password|proxy, VOXTUNE_UI_USERS_FILE, "
        "VOXTUNE_UI_PROXY_HEADER, VOXTUNE_UI_ALLOW_REMOTE_WITHOUT_AUTH, VOXTUNE_UI_DEMO_URL).",
        epilog="example: voxtune ui --port 7860")
    parser.add_argument("--host", default="127.0.0.1", help="Interface; another than loopback "
                        "needs VOXTUNE_UI_AUTH (or VOXTUNE_UI_ALLOW_REMOTE_WITHOUT_AUTH=true).")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--backend", choices=["local", "kubernetes"], help="Where runs go "
                        "(default $VOXTUNE_BACKEND, else local).")
    parser.add_argument("--namespace", help="Kubernetes namespace for FineTuneRuns.")
    parser.set_defaults(handler=_ui)


def _ui(args: argparse.Namespace) -> int:
    import os

    from voxtune.ui.app import serve

    serve(args.host, args.port, args.backend or os.environ.get("VOXTUNE_BACKEND", "local"),
          args.namespace)
    return ExitCode.OK


# --- entry point --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxtune", description="Fine-tune Voxtral speech "
                                     "recognition on your own speech.")
    commands = parser.add_subparsers(dest="command", required=True)
    _prepare_parser(commands)
    _train_parser(commands)
    _evaluate_parser(commands)
    _merge_parser(commands)
    _plan_parser(commands)
    _data_parser(commands)
    _run_parsers(commands)
    _controller_parsers(commands)
    _publish_parsers(commands)
    _ui_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return ExitCode.USER_ERROR
    except ValidationError as error:
        print(f"error: {format_validation_error(error, 'arguments')}", file=sys.stderr)
        return ExitCode.USER_ERROR
    except RetryableError as error:
        print(f"error (temporary): {error}; run the same command again (it resumes)",
              file=sys.stderr)
        return ExitCode.RETRYABLE
    except NoSpaceError as error:
        print(f"error: {error}", file=sys.stderr)
        return ExitCode.NO_SPACE
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        print(f"error: {NoSpaceError(error.filename or Settings().home)}", file=sys.stderr)
        return ExitCode.NO_SPACE
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return ExitCode.RETRYABLE


if __name__ == "__main__":
    sys.exit(main())
