"""The `voxtune` command: one module per command group, each with `add_parsers(commands)`.

    steps.py     prepare, train, evaluate, merge      the step entrypoints the executors run
    plan.py      plan                                 will a run fit?
    data.py      data synth | samples                 speech for trying voxtune out
    runs.py      run, dashboard, demo, spec, submit, list, status, logs, cancel, delete
    cluster.py   render, controller                   Kubernetes Jobs/CRD, the controller pod
    publish.py   publish, models                      registry or Hub; the local registry
    serve.py     serve                                a model behind an HTTP API
    ui.py        ui                                   the web UI
    wer.py       wer                                  score two transcript files
    arguments.py the spec and backend arguments several groups share

A new command goes into its group's module (or a new module listed in build_parser). Handlers
import their heavy modules when they run, so `voxtune --help` stays fast and light.

Exit codes (errors.ExitCode): 0 ok, 2 bad input/config, 74 disk full, 75 interrupted (run again
to resume), 1 a bug (with traceback).
"""

from __future__ import annotations

import argparse
import errno
import sys

from pydantic import ValidationError

from voxtune.cli import cluster, data, plan, publish, runs, serve, steps, ui, wer
from voxtune.errors import ExitCode, NoSpaceError, RetryableError, UserError
from voxtune.spec import Settings, format_validation_error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voxtune", description="Fine-tune Voxtral speech "
                                     "recognition on your own speech.")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (steps, plan, data, runs, cluster, publish, serve, ui, wer):
        group.add_parsers(commands)
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

