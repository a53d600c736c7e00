"""`voxtune plan`: will a run fit? Memory per GPU, host RAM and disk, from the config alone."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from voxtune.errors import ExitCode
from voxtune.run.layout import RunFolder
from voxtune.spec import load_user_spec


def add_parsers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "plan", help="Will a run fit? Memory per GPU, host RAM, disk, from the config alone.",
        description="Estimates from the base model's config (shipped presets for the "
        "published Voxtral ids; no weights are downloaded). Exit code 2 when it does not fit, "
        "with what would.", epilog="example: voxtune plan my-run.yaml --gpu-profile 48gb")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("spec", nargs="?", type=Path, help="RunSpec or FineTuneRun YAML file.")
    where.add_argument("--run-dir", type=Path, help="A run folder (plans its spec.yaml).")
    where.add_argument("--table", action="store_true", help="Print README's table: the GPU "
                       "each published model and mode needs, per GPU count.")
    parser.add_argument("--gpu-profile", help="Check against this GPU profile (default: the "
                        "spec's resources.gpu_profile, else the smallest that fits). Shipped: "
                        "24gb, 48gb, 80gb, 141gb.")
    parser.add_argument("--write-mb-per-s", type=float, help="Volume write speed for the "
                        "checkpoint-write time (default 500).")
    parser.add_argument("--json", action="store_true", help="One JSON object for scripts.")
    parser.set_defaults(handler=_plan)


def _plan(args: argparse.Namespace) -> int:
    from voxtune.plan import (
        DEFAULT_PROFILES,
        DEFAULT_WRITE_MB_PER_S,
        memory_gib,
        plan_run,
        profile_named,
    )

    if args.table:
        from voxtune.plan.table import gpu_table

        print(gpu_table(), end="")
        return ExitCode.OK
    spec = RunFolder(args.run_dir).read_spec() if args.run_dir else load_user_spec(args.spec)
    profile = profile_named(args.gpu_profile, DEFAULT_PROFILES) if args.gpu_profile else None
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
