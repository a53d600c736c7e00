"""`voxtune publish` and `voxtune models list|show`."""

from __future__ import annotations

import argparse
from pathlib import Path

from voxtune.cli.arguments import add_spec_arguments, spec_from_arguments
from voxtune.errors import ExitCode, UserError
from voxtune.run.layout import SPEC, registry_dir
from voxtune.run.progress import phase
from voxtune.spec import Settings


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """publish, models."""
    _publish_parser(commands)
    _models_parser(commands)


def _publish_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "publish", help="Publish a trained run: local registry or Hugging Face Hub, with model "
        "card, dataset and demo Space.",
        description="The Hub token comes from HF_TOKEN or the file VOXTUNE_HF_TOKEN_FILE names "
        "(a mounted secret); it is never an argument. Hub repos are private unless --public.",
        epilog="examples: voxtune publish --model runs/me --merge --space | voxtune publish "
        "--model runs/me --to hf://alice/my-voice --dataset runs/me/prepared --space")
    add_spec_arguments(parser)
    parser.add_argument("--model", type=Path, help="Run folder (or its final/) to publish "
                        "(default: --run-dir).")
    parser.add_argument("--to", help="Local registry folder (default $VOXTUNE_HOME/registry) "
                        "or hf://owner/name[@branch] for the Hub.")
    parser.add_argument("--name", help="Name in the local registry (default: the run name; "
                        "publish.name).")
    parser.add_argument("--merge", action="store_true", default=None, help="Also fold a LoRA "
                        "adapter into a standalone model; use when users should not need peft.")
    visibility = parser.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true",
                            help="Hub repos are private (the default).")
    visibility.add_argument("--public", dest="private", action="store_false",
                            help="Make the Hub repos public: only with the speakers' consent.")
    parser.add_argument("--dataset", nargs="?", const="", metavar="PREPARED_DIR",
                        help="Also publish this prepared folder as a dataset (default with "
                        "--run-dir: RUN/prepared).")
    parser.add_argument("--space", nargs="?", const="", metavar="SPACE_ID",
                        help="Also make a demo Space: a folder beside a local version, or a "
                        "Hub Space (default id: <owner>/<name>-demo; publish.space_id).")
    parser.add_argument("--space-hardware", metavar="FLAVOR", help="Hardware to request for "
                        "a Hub Space, e.g. t4-small (default: the free CPU; "
                        "publish.space_hardware).")
    parser.set_defaults(handler=_publish, private=None)


def _publish(args: argparse.Namespace) -> int:
    from voxtune.publish.bundle import read_run
    from voxtune.publish.step import main

    model = args.model or args.run_dir
    if model is None:
        raise UserError("give --model RUN_DIR (or --run-dir)")
    if args.run_dir is None and args.spec is None:
        args.spec = read_run(model).final / SPEC  # what the model was trained with
    spec = spec_from_arguments(args, {"publish": {
        "to": args.to, "merge": args.merge, "private": args.private, "name": args.name,
        "dataset": True if args.dataset is not None else None,
        "space": True if args.space is not None else None, "space_id": args.space or None,
        "space_hardware": args.space_hardware}})
    with phase("publish"):
        main(model, spec.publish, prepared=Path(args.dataset) if args.dataset else None)
    return ExitCode.OK


def _models_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("models", help="List or show models in the local registry.")
    models = parser.add_subparsers(dest="models_command", required=True)
    listing = models.add_parser("list", help="Every published version, newest last.")
    show = models.add_parser("show", help="One version: path, metrics, files.",
                             epilog="example: voxtune models show my-voice@2")
    show.add_argument("model", help="NAME (latest version) or NAME@VERSION.")
    for sub, handler in ((listing, _models_list), (show, _models_show)):
        sub.add_argument("--registry", type=Path, help="Registry folder (default "
                         "$VOXTUNE_HOME/registry).")
        sub.set_defaults(handler=handler)


def _registry(args: argparse.Namespace):
    from voxtune.publish.registry import Registry

    return Registry(args.registry or registry_dir(Settings().home))


def _models_list(args: argparse.Namespace) -> int:
    from voxtune.publish.registry import list_lines

    print("\n".join(list_lines(_registry(args))))
    return ExitCode.OK


def _models_show(args: argparse.Namespace) -> int:
    from voxtune.publish.registry import show_lines

    print("\n".join(show_lines(_registry(args).find(args.model))))
    return ExitCode.OK
