"""Arguments several command groups share: where the spec comes from, and which backend."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from voxtune.client import BACKENDS, Client
from voxtune.errors import UserError
from voxtune.run.layout import RunFolder
from voxtune.spec import RunSpec, load_user_spec


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """--run-dir (what the executors pass) or --spec (a file given by hand)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--run-dir", type=Path, help="Run folder with spec.yaml (what the "
                       "executors pass); outputs go into it.")
    where.add_argument("--spec", type=Path, help="RunSpec or FineTuneRun YAML file.")


def spec_from_arguments(args: argparse.Namespace, flags: dict[str, Any]) -> RunSpec:
    """The spec a step command runs. With --run-dir: exactly the one the run recorded, so
    flags that would change it are refused. Otherwise user input: --spec (or nothing) layered
    with VOXTUNE_SPEC__* and the flags given (`flags`: the spec fields they set, None = not
    given)."""
    given = drop_none(flags)
    if args.run_dir:
        run = RunFolder(args.run_dir)
        if given:
            raise UserError(f"--run-dir runs the spec the run recorded ({run.spec_file}); flags "
                            f"would change {', '.join(_dotted(given))}: drop them, or give "
                            "--spec FILE instead of --run-dir")
        return run.read_spec()
    if args.spec is None:
        given.setdefault("name", "adhoc")
    return load_user_spec(args.spec, given)


def drop_none(tree: dict[str, Any]) -> dict[str, Any]:
    """Keep only the flags the user gave, so they override the file and nothing else."""
    pruned = {key: drop_none(value) if isinstance(value, dict) else value
              for key, value in tree.items()}
    return {key: value for key, value in pruned.items() if value not in (None, {})}


def _dotted(tree: dict[str, Any], prefix: str = "") -> list[str]:
    return [name for key, value in tree.items() for name in (
        _dotted(value, f"{prefix}{key}.") if isinstance(value, dict) else [prefix + key])]


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=list(BACKENDS),
                        default=os.environ.get("VOXTUNE_BACKEND", "local"),
                        help="Where runs live (default: $VOXTUNE_BACKEND or local).")
    parser.add_argument("--namespace", help="Kubernetes namespace.")
    parser.add_argument("--kubeconfig", help="Kubernetes config file.")


def client_from_arguments(args: argparse.Namespace, namespace: str | None = None) -> Client:
    return Client(args.backend, namespace=args.namespace or namespace,
                  kubeconfig=args.kubeconfig)
