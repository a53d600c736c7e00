"""The run commands of `voxtune`: `run` (local, in the foreground), `submit`, `list`, `status`,
`logs`, `cancel`, `delete` on either backend, and `dashboard`, `demo`, `spec`.

    voxtune run my-run.yaml                                       # local, waits, prints the steps
    voxtune submit jobs/finetunerun.yaml [--backend local|kubernetes] [--namespace NS] [--wait]
    voxtune list | status RUN [--json] | logs RUN [--step train] [--follow]
    voxtune cancel RUN | delete RUN

The backend is --backend, else $VOXTUNE_BACKEND, else local. Kubernetes commands use
--kubeconfig (else $KUBECONFIG, ~/.kube/config, or the pod's service account) and --namespace
(else the file's metadata.namespace for submit, else the kubeconfig context's namespace).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from voxtune.cli.arguments import add_backend_arguments, client_from_arguments
from voxtune.client import Client
from voxtune.errors import ExitCode, UserError
from voxtune.run.layout import RunFolder
from voxtune.run.progress import PhaseProgress, describe, worth_showing
from voxtune.run.status import RunStatus, format_percent
from voxtune.run.steps import STEPS, TERMINAL
from voxtune.spec import RunSpec, load_user_spec, read_resolved_spec

# The UI serves on 7860 (trackio's own default too) and `voxtune serve` on 7861.
DASHBOARD_PORT = 7862
WATCH_POLL_S = 1.0  # how often `submit --wait` looks at the run


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """run, dashboard, demo, spec, submit, list, status, logs, cancel, delete."""
    run = commands.add_parser("run", help="Run a spec's steps locally, in order.",
                              epilog="example: voxtune run my-run.yaml")
    run.add_argument("spec", type=Path, help="RunSpec or FineTuneRun YAML file.")
    run.set_defaults(handler=_run)
    dashboard = commands.add_parser("dashboard", help="Open the trackio dashboard of a run.",
                                    epilog="example: voxtune dashboard ~/.voxtune/runs/demo")
    dashboard.add_argument("run_dir", type=Path, help="Run folder (holds trackio/).")
    dashboard.add_argument("--host", default="127.0.0.1", help="Interface to serve on.")
    dashboard.add_argument("--port", type=int, default=DASHBOARD_PORT,
                           help="Port to serve on (default: beside the UI's 7860 and "
                           "`voxtune serve`'s 7861, so all three can run at once).")
    dashboard.set_defaults(handler=_dashboard)
    demo = commands.add_parser("demo", help="Watch a tiny Voxtral learn spoken digits, through "
                               "the whole pipeline (~4 min on 2 CPU cores).")
    demo.add_argument("--control", action="store_true", help="Also train the audio-blind "
                      "control (audio shuffled between clips), for its CER: twice the time.")
    demo.set_defaults(handler=_demo)
    spec = commands.add_parser("spec", help="Validate a spec file and print it resolved.")
    spec.add_argument("file", type=Path, nargs="?")
    spec.add_argument("--schema", action="store_true", help="Print the RunSpec JSON schema.")
    spec.set_defaults(handler=_show_spec)

    submit = commands.add_parser("submit", help="Start a run (returns at once).",
                                 epilog="example: voxtune submit jobs/finetunerun.yaml "
                                 "--backend kubernetes")
    submit.add_argument("file", type=Path, help="RunSpec or FineTuneRun YAML file.")
    submit.add_argument("--wait", action="store_true", help="Then wait until it ends.")
    add_backend_arguments(submit)
    submit.set_defaults(handler=_submit)

    listing = commands.add_parser("list", help="List runs and their phase.")
    add_backend_arguments(listing)
    listing.set_defaults(handler=_list)

    status = _run_verb(commands, "status", "Show a run's status: phase, progress and time "
                       "left, scores, what went wrong.", _status)
    status.add_argument("--json", action="store_true", help="The whole status as JSON (for "
                        "scripts), instead of the summary.")
    logs = _run_verb(commands, "logs", "Print a run's step logs.", _logs)
    logs.add_argument("--step", choices=STEPS)
    logs.add_argument("-f", "--follow", action="store_true", help="Keep printing until the "
                      "run (or --step) ends.")
    logs.add_argument("--node", type=int, default=0, help="Which node's train log, for a run "
                      "on several nodes (resources.nodes); 0, rank 0's, reports progress.")
    _run_verb(commands, "cancel", "Stop a run (training saves a checkpoint).", _cancel)
    _run_verb(commands, "delete", "Remove a run (local: its folder too).", _delete)


def _run_verb(commands: argparse._SubParsersAction, name: str, help_text: str,
              handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """A command that acts on one named run, on either backend."""
    parser = commands.add_parser(name, help=help_text)
    parser.add_argument("run")
    add_backend_arguments(parser)
    parser.set_defaults(handler=handler)
    return parser


def _submit(args: argparse.Namespace) -> int:
    client = client_from_arguments(args, _file_namespace(args.file))
    status = client.submit(args.file)
    where = f" in namespace {client.executor.namespace}" if args.backend == "kubernetes" else ""
    print(f"run {status.name} submitted{where}: {status.phase}")
    print(f"  follow it:  voxtune logs {status.name} --follow --backend {args.backend}")
    if not args.wait:
        return ExitCode.OK
    final = _watch(client, status.name)
    print(f"{final.name}: {final.phase} — {final.message}")
    return ExitCode.OK if final.phase == "Succeeded" else ExitCode.FAILURE


def _watch(client: Client, name: str) -> RunStatus:
    """Wait for the run to end, printing each step and each tenth of every long phase."""
    shown: tuple[str | None, PhaseProgress | None] = (None, None)
    while (status := client.status(name)).phase not in TERMINAL:
        if status.step != shown[0]:
            print(f"{name}: {status.phase} ({status.step or 'waiting'}) — {status.message}",
                  flush=True)
            shown = (status.step, None)
        if worth_showing(status.current, shown[1]):
            print(f"  {bar(status.current)} {describe(status.current)}", flush=True)
            shown = (status.step, status.current)
        time.sleep(WATCH_POLL_S)
    return status


def _list(args: argparse.Namespace) -> int:
    runs = client_from_arguments(args).list()
    if not runs:
        print("no runs yet: voxtune submit FILE", file=sys.stderr)
        return ExitCode.OK
    row = "{:40} {:11} {:8} {:20} {:16}  {}"
    print(row.format("NAME", "PHASE", "STEP", "PROGRESS", "WER BASE→TUNED", "UPDATED"))
    for status in runs:
        print(row.format(status.name, status.phase, status.step or "-", status.progress or "-",
                         status.wer or "-", status.updated))
    return ExitCode.OK


def _status(args: argparse.Namespace) -> int:
    status = client_from_arguments(args).status(args.run)
    print(status.model_dump_json(indent=2, by_alias=True) if args.json else summary(status))
    return ExitCode.OK


def bar(progress: PhaseProgress, width: int = 20) -> str:
    filled = round(width * progress.fraction)
    return f"[{'#' * filled}{'.' * (width - filled)}]"


def summary(status: RunStatus) -> str:
    """`voxtune status`'s text: phase and why, the running phase's bar and time left, each
    step, the scores and where the model went."""
    why = f" ({status.reason})" if status.reason and status.reason != status.phase else ""
    lines = [f"{status.name}: {status.phase}{why}"]
    if status.message:
        lines += [f"  {line}" for line in status.message.splitlines()]
    if status.current:
        lines.append(f"  {bar(status.current)} {describe(status.current)}")
    if status.steps:
        lines.append("  steps: " + ", ".join(f"{step} {state.state}"
                                             for step, state in status.steps.items()))
    metrics = status.metrics
    scores = [f"{name.upper()} {format_percent(metrics.get(f'base_{name}'))} → "
              f"{format_percent(metrics[name])}" for name in ("wer", "cer") if name in metrics]
    if scores:
        lines.append(f"  base → tuned: {', '.join(scores)}")
    if "general_wer" in metrics:  # eval.general: did fine-tuning hurt speech it was not trained on?
        lines.append(f"  general set, base → tuned: WER "
                     f"{format_percent(metrics.get('base_general_wer'))} → "
                     f"{format_percent(metrics['general_wer'])}")
    if "merged_wer" in metrics:  # publish's export gate re-scored the merged model
        lines.append(f"  merged model: WER {format_percent(metrics['merged_wer'])}")
    if status.published:
        lines.append(f"  published: {status.published.name} → {status.published.model}")
    lines.append(f"  updated {status.updated}")
    return "\n".join(lines)


def _logs(args: argparse.Namespace) -> int:
    client = client_from_arguments(args)
    if not args.follow:
        sys.stdout.write(client.logs(args.run, args.step, args.node))
        return ExitCode.OK
    for chunk in client.follow(args.run, args.step, args.node):
        sys.stdout.write(chunk)
        sys.stdout.flush()
    return ExitCode.OK


def _cancel(args: argparse.Namespace) -> int:
    status = client_from_arguments(args).cancel(args.run)
    print(f"run {args.run}: cancel requested ({status.phase})")
    return ExitCode.OK


def _delete(args: argparse.Namespace) -> int:
    client_from_arguments(args).delete(args.run)
    print(f"run {args.run} deleted")
    return ExitCode.OK


def _run(args: argparse.Namespace) -> int:
    from voxtune.executors.local import LocalExecutor
    from voxtune.plan.placement import refuse_unless_fits

    executor = LocalExecutor()
    spec = executor.load(args.spec)
    refuse_unless_fits(spec, local=True)  # what Client.submit checks for a local run
    status = executor.run(spec)
    if status.phase not in TERMINAL:  # another process is running it: follow that attempt
        print(f"{status.name} is already running ({status.phase}); waiting for it to end — "
              f"`voxtune logs {status.name} --follow` shows its output")
        status = executor.wait(status.name)
    print(f"{status.name}: {status.phase} — {status.message}")
    return ExitCode.OK if status.phase == "Succeeded" else ExitCode.USER_ERROR


def _dashboard(args: argparse.Namespace) -> int:
    import functools
    import os
    import subprocess

    from voxtune.processes import die_with_parent

    run = RunFolder(args.run_dir)
    spec_file = run.final_spec_file if run.final_spec_file.exists() else run.spec_file
    project = read_resolved_spec(spec_file).tracking.project if spec_file.exists() else "voxtune"
    if not run.trackio.is_dir():
        raise UserError(f"{args.run_dir}: no trackio/ folder; has the train step run there?")
    # trackio reads TRACKIO_DIR once at import, so the dashboard runs in its own process; its
    # own CLI (`trackio show`) has no port option, so the child calls trackio.show.
    env = {**os.environ, "TRACKIO_DIR": str(run.trackio)}
    show = ("import sys, trackio; trackio.show(project=sys.argv[1], host=sys.argv[2], "
            "server_port=int(sys.argv[3]), open_browser=False, block_thread=True)")
    print(f"trackio dashboard of {run.path.name}: http://{args.host}:{args.port} (Ctrl+C stops)",
          flush=True)
    command = [sys.executable, "-c", show, project, args.host, str(args.port)]
    try:
        return subprocess.run(command, env=env, preexec_fn=functools.partial(
            die_with_parent, parent=os.getpid())).returncode
    except KeyboardInterrupt:  # the child got the same Ctrl+C
        return ExitCode.OK


def _demo(args: argparse.Namespace) -> int:
    from voxtune.demo import run_demo

    return run_demo(control=args.control)


def _show_spec(args: argparse.Namespace) -> int:
    if args.schema:
        print(json.dumps(RunSpec.model_json_schema(), indent=2))
    elif args.file:
        print(load_user_spec(args.file).to_yaml(), end="")
    else:
        raise UserError("give a spec FILE to validate, or --schema")
    return ExitCode.OK


def _file_namespace(path: Path) -> str | None:
    """metadata.namespace of a FineTuneRun file, as `kubectl apply` would use it."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None  # loading the spec reports the problem
    metadata = document.get("metadata") if isinstance(document, dict) else None
    return metadata.get("namespace") if isinstance(metadata, dict) else None
