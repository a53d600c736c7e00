"""What every step's Job runs: the step's command, with its log kept on the shared volume.

    python -m voxtune.run.harness --run-dir /data/runs/my-voice --step train -- \
        python -m voxtune train --run-dir /data/runs/my-voice

1. writes the run's spec (from VOXTUNE_RUN_SPEC, set by the controller) as RUN/spec.yaml, or
   checks that the one already there is the same: a different run with the same name is refused
   with exit code 2, like the local executor does;
2. runs the command, copying its output to the pod log and to RUN/logs/<step>.log (node N of a
   multi-node train step: <step>-node<N>.log, N from PET_NODE_RANK), so the log outlives the
   pod; SIGTERM (eviction, preemption, cancel) is passed on, so training saves a
   checkpoint;
3. writes the pod's termination message (/dev/termination-log): the exit code, the headline
   metrics (WER/CER), whether the run now holds a trained model, what the publish step
   published (RUN/published.json) and, on failure, the log tail — how the controller learns
   the result without mounting the volume;
4. exits with the command's exit code (2 = bad input: the Job fails at once; 75 = retryable).

It imports only the core package (no kubernetes, no torch), so every step image can run it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from voxtune.errors import ExitCode, UserError
from voxtune.run.layout import RunFolder
from voxtune.run.process import claim_run_folder, node_rank, run_logged, tail
from voxtune.run.status import Publication, headline_metrics
from voxtune.spec import RunSpec, validate_spec

SPEC_ENV = "VOXTUNE_RUN_SPEC"
TERMINATION_LOG_ENV = "VOXTUNE_TERMINATION_LOG"  # tests point it elsewhere
TERMINATION_LOG = "/dev/termination-log"
TERMINATION_LIMIT = 4000  # the kubelet keeps at most 4096 bytes


def termination_message(code: int, metrics: dict[str, float], log_tail: str,
                        trained: bool = False, published: Publication | None = None) -> str:
    """JSON for the controller, within the kubelet's limit: the log tail is cut from the
    front first, then the publish record loses its commit URLs, then goes (the run page then
    shows no links; the model is still where the log says)."""
    message: dict = {"exit_code": code, "metrics": metrics, "trained": trained}
    records = [published.model_dump(mode="json"),
               published.model_dump(mode="json", exclude={"commits"})] if published else []
    lines = log_tail.splitlines() if code != 0 else []
    while True:
        extra: dict = {"log_tail": "\n".join(lines)} if lines else {}
        extra.update({"published": records[0]} if records else {})
        text = json.dumps({**message, **extra})
        if len(text.encode()) <= TERMINATION_LIMIT or not (lines or records):
            return text
        if lines:
            lines = lines[1:]
        else:
            records = records[1:]


def _write_termination_message(text: str) -> None:
    path = Path(os.environ.get(TERMINATION_LOG_ENV, TERMINATION_LOG))
    with contextlib.suppress(OSError):  # not in a pod
        path.write_text(text, encoding="utf-8")


def _load_spec() -> RunSpec:
    document = os.environ.get(SPEC_ENV)
    if not document:
        raise UserError(f"{SPEC_ENV} is not set; the controller sets it on every step's Job")
    try:
        values = json.loads(document)
    except json.JSONDecodeError as error:
        raise UserError(f"{SPEC_ENV}: not valid JSON: {error}") from None
    return validate_spec(values, SPEC_ENV)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voxtune.run.harness")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--step", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the step's command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the step's command after --")
    run = RunFolder(args.run_dir)
    try:  # 1.
        claim_run_folder(run, _load_spec())
    except UserError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        _write_termination_message(termination_message(ExitCode.USER_ERROR, {}, str(error)))
        return ExitCode.USER_ERROR
    log = run.log(args.step, node_rank())  # each node of a multi-node step its own
    code = run_logged(command, log, lambda line: print(line, flush=True))  # 2.
    if code < 0:  # killed by a signal: report it the way a shell would
        code = 128 - code
    _write_termination_message(termination_message(  # 3.
        code, headline_metrics(run.metrics), tail(log), run.final.is_dir(),
        run.read_published()))
    return code  # 4.


if __name__ == "__main__":
    sys.exit(main())
