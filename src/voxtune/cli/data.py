"""`voxtune data synth | samples`: speech data for trying voxtune out."""

from __future__ import annotations

import argparse
from pathlib import Path

from voxtune.errors import ExitCode


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


def _synth(args: argparse.Namespace) -> int:
    from voxtune.data.synth import plan, synthesize

    manifest = synthesize(args.output, plan(args.count, args.kind, seed=args.seed))
    print(f"wrote {args.count} clips; use it with: voxtune prepare --source {manifest} ...")
    return ExitCode.OK


def _samples(args: argparse.Namespace) -> int:
    from voxtune.data.synth import copy_samples

    print(f"copied sample clips to {copy_samples(args.output)}")
    return ExitCode.OK
