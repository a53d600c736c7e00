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
                        "checkpoint-write time (default 500, or the --config file's).")
    parser.add_argument("--config", type=Path, help="The controller's job settings (the "
                        "chart's ConfigMap, jobs.yaml): plan against that cluster's GPU "
                        "profiles and volume speed.")
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
    from voxtune.plan.placement import DEFAULT_MAX_GRACE_S, place

    if args.table:
        from voxtune.plan.table import gpu_table

        print(gpu_table(), end="")
        return ExitCode.OK
    spec = RunFolder(args.run_dir).read_spec() if args.run_dir else load_user_spec(args.spec)
    profiles, write, max_grace = DEFAULT_PROFILES, DEFAULT_WRITE_MB_PER_S, DEFAULT_MAX_GRACE_S
    if args.config:
        from voxtune.controller.settings import JobSettings

        settings = JobSettings.load(args.config)
        profiles, write = tuple(settings.gpu_profiles), settings.checkpoint_write_mb_per_s
        max_grace = settings.max_termination_grace_seconds
    write = args.write_mb_per_s or write
    if args.gpu_profile:
        profile_named(args.gpu_profile, profiles)  # a clear error for an unknown name
        spec = spec.model_copy(update={"resources": spec.resources.model_copy(
            update={"gpu_profile": args.gpu_profile})})
    limit = memory_gib(spec.resources.memory) if spec.resources.memory else None
    plan = plan_run(spec, profiles=profiles, host_limit_gib=limit, write_mb_per_s=write)
    data, lines = plan.to_json(), plan.lines()
    if plan.fits:  # what the Job builder would give the train pod
        pod = place(spec, profiles, write, max_grace).pod_json()
        data["pod"] = pod
        covered = "covers" if pod["checkpoint_covered"] else "is too short for"
        lines.insert(-1, f"pod         memory {pod['memory']}, GPU product "
                     f"{pod['gpu_product'] or 'any'}, grace {pod['termination_grace_s']} s "
                     f"({covered} a checkpoint write), scratch {pod['scratch']}")
    print(json.dumps(data, indent=2) if args.json else "\n".join(lines))
    if not plan.fits:
        print(f"error: run {spec.name!r} does not fit: " + "; or ".join(plan.advice),
              file=sys.stderr)
        return ExitCode.USER_ERROR
    return ExitCode.OK
