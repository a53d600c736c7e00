"""The run commands of `voxtune`, for both backends (wired into voxtune.cli by add_parsers).

    voxtune submit jobs/finetunerun.yaml [--backend local|kubernetes] [--namespace NS] [--wait]
    voxtune list | status RUN | logs RUN [--step train] [--follow] | cancel RUN | delete RUN
    voxtune render jobs/finetunerun.yaml [--config controller.yaml]    # the Jobs, no cluster
    voxtune render --crd                                              # the FineTuneRun CRD
    voxtune controller [--namespace NS] [--kubeconfig FILE] [--config FILE] [--port 8080]

The backend is --backend, else $VOXTUNE_BACKEND, else local. Kubernetes commands use
--kubeconfig (else $KUBECONFIG, ~/.kube/config, or the pod's service account) and --namespace
(else the file's metadata.namespace for submit, else the kubeconfig context's namespace).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from voxtune.errors import ExitCode

STEPS = ["prepare", "train", "publish"]


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """submit, list, status, logs, cancel, delete, render, controller."""
    submit = commands.add_parser("submit", help="Start a run (returns at once).",
                                 epilog="example: voxtune submit jobs/finetunerun.yaml "
                                 "--backend kubernetes")
    submit.add_argument("file", type=Path, help="RunSpec or FineTuneRun YAML file.")
    submit.add_argument("--wait", action="store_true", help="Then wait until it ends.")
    _backend_arguments(submit)
    submit.set_defaults(handler=_submit)

    listing = commands.add_parser("list", help="List runs and their phase.")
    _backend_arguments(listing)
    listing.set_defaults(handler=_list)

    status = commands.add_parser("status", help="Show a run's status.")
    status.add_argument("run")
    _backend_arguments(status)
    status.set_defaults(handler=_status)

    logs = commands.add_parser("logs", help="Print a run's step logs.")
    logs.add_argument("run")
    logs.add_argument("--step", choices=STEPS)
    logs.add_argument("-f", "--follow", action="store_true", help="Keep printing until the "
                      "run (or --step) ends.")
    _backend_arguments(logs)
    logs.set_defaults(handler=_logs)

    cancel = commands.add_parser("cancel", help="Stop a run (training saves a checkpoint).")
    cancel.add_argument("run")
    _backend_arguments(cancel)
    cancel.set_defaults(handler=_cancel)

    delete = commands.add_parser("delete", help="Remove a run (local: its folder too).")
    delete.add_argument("run")
    _backend_arguments(delete)
    delete.set_defaults(handler=_delete)

    render = commands.add_parser("render", help="Print the Kubernetes Jobs a run file turns "
                                 "into (no cluster needed).",
                                 epilog="example: voxtune render jobs/finetunerun.yaml")
    render.add_argument("file", type=Path, nargs="?", help="RunSpec or FineTuneRun YAML file.")
    render.add_argument("--config", type=Path, help="Controller settings YAML (the chart's "
                        "ConfigMap).")
    render.add_argument("--step", choices=STEPS, help="Only this step's Job (what "
                        "jobs/<step>-job.yaml holds: `make jobs` regenerates those).")
    render.add_argument("--crd", action="store_true", help="Print the FineTuneRun CRD instead.")
    render.set_defaults(handler=_render)

    controller = commands.add_parser("controller", help="Run the Kubernetes controller.")
    controller.add_argument("--namespace", help="Namespace to watch (default: the pod's).")
    controller.add_argument("--kubeconfig", help="Outside a cluster: the kubeconfig file.")
    controller.add_argument("--config", type=Path, help="Job settings YAML (the chart's "
                            "ConfigMap); VOXTUNE_CONTROLLER_* variables override it.")
    controller.add_argument("--host", default="0.0.0.0", help="Health/metrics interface.")
    controller.add_argument("--port", type=int, default=8080, help="Health/metrics port.")
    controller.add_argument("--resync-seconds", type=float, default=60.0, help="Reconcile "
                            "every run this often even without events.")
    controller.set_defaults(handler=_controller)


def _backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=["local", "kubernetes"],
                        default=os.environ.get("VOXTUNE_BACKEND", "local"),
                        help="Where runs live (default: $VOXTUNE_BACKEND or local).")
    parser.add_argument("--namespace", help="Kubernetes namespace.")
    parser.add_argument("--kubeconfig", help="Kubernetes config file.")


def _client(args: argparse.Namespace, namespace: str | None = None):
    from voxtune.client import Client

    return Client(args.backend, namespace=args.namespace or namespace,
                  kubeconfig=args.kubeconfig)


def _submit(args: argparse.Namespace) -> int:
    client = _client(args, _file_namespace(args.file))
    status = client.submit(args.file)
    where = f" in namespace {client.executor.namespace}" if args.backend == "kubernetes" else ""
    print(f"run {status.name} submitted{where}: {status.phase}")
    print(f"  follow it:  voxtune logs {status.name} --follow --backend {args.backend}")
    if not args.wait:
        return ExitCode.OK
    final = client.wait(status.name)
    print(f"{final.name}: {final.phase} — {final.message}")
    return ExitCode.OK if final.phase == "Succeeded" else ExitCode.FAILURE


def _list(args: argparse.Namespace) -> int:
    runs = _client(args).list()
    if not runs:
        print("no runs yet: voxtune submit FILE", file=sys.stderr)
        return ExitCode.OK
    row = "{:40} {:11} {:8} {:20} {:>6}  {}"
    print(row.format("NAME", "PHASE", "STEP", "PROGRESS", "WER", "UPDATED"))
    for status in runs:
        wer = status.metrics.get("wer")
        print(row.format(status.name, status.phase, status.step or "-", status.progress or "-",
                         "-" if wer is None else f"{wer:.3f}", status.updated))
    return ExitCode.OK


def _status(args: argparse.Namespace) -> int:
    print(_client(args).status(args.run).model_dump_json(indent=2, by_alias=True))
    return ExitCode.OK


def _logs(args: argparse.Namespace) -> int:
    client = _client(args)
    if not args.follow:
        sys.stdout.write(client.logs(args.run, args.step))
        return ExitCode.OK
    for chunk in client.follow(args.run, args.step):
        sys.stdout.write(chunk)
        sys.stdout.flush()
    return ExitCode.OK


def _cancel(args: argparse.Namespace) -> int:
    status = _client(args).cancel(args.run)
    print(f"run {args.run}: cancel requested ({status.phase})")
    return ExitCode.OK


def _delete(args: argparse.Namespace) -> int:
    _client(args).delete(args.run)
    print(f"run {args.run} deleted")
    return ExitCode.OK


def _render(args: argparse.Namespace) -> int:
    if args.crd:
        from voxtune.controller.crd import custom_resource_definition

        print(yaml.safe_dump(custom_resource_definition(), sort_keys=False, allow_unicode=True,
                             width=100), end="")
        return ExitCode.OK
    if args.file is None:
        from voxtune.errors import UserError

        raise UserError("give a RunSpec/FineTuneRun FILE to render, or --crd")
    from voxtune.controller.jobs import JobSettings, render
    from voxtune.controller.kube_executor import cluster_spec_file

    print(render(cluster_spec_file(args.file), JobSettings.load(args.config), args.step), end="")
    return ExitCode.OK


def _controller(args: argparse.Namespace) -> int:
    from voxtune.controller.jobs import JobSettings
    from voxtune.controller.kubeapi import connect
    from voxtune.controller.operator import run_forever

    settings = JobSettings.load(args.config)
    api, namespace = connect(args.kubeconfig, args.namespace)
    return run_forever(api, namespace, settings, args.host, args.port, args.resync_seconds)


def _file_namespace(path: Path) -> str | None:
    """metadata.namespace of a FineTuneRun file, as `kubectl apply` would use it."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None  # loading the spec reports the problem
    metadata = document.get("metadata") if isinstance(document, dict) else None
    return metadata.get("namespace") if isinstance(metadata, dict) else None
