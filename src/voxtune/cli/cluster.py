"""The cluster commands: `voxtune render` (the Jobs a run turns into, or the CRD; no cluster
needed) and `voxtune controller` (what the controller pod runs).

    voxtune render jobs/finetunerun.yaml [--config controller.yaml]    # the Jobs, no cluster
    voxtune render --crd                                              # the FineTuneRun CRD
    voxtune controller [--namespace NS] [--kubeconfig FILE] [--config FILE] [--port 8080]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from voxtune.errors import ExitCode, UserError
from voxtune.run.steps import STEPS
from voxtune.spec import load_user_spec


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """render, controller."""
    render = commands.add_parser("render", help="Print the Kubernetes Jobs (and the TrainJob "
                                 "or JobSet of a multi-node train step) a run file turns "
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


def _render(args: argparse.Namespace) -> int:
    if args.crd:
        from voxtune.controller.crd import custom_resource_definition

        print(yaml.safe_dump(custom_resource_definition(), sort_keys=False, allow_unicode=True,
                             width=100), end="")
        return ExitCode.OK
    if args.file is None:
        raise UserError("give a RunSpec/FineTuneRun FILE to render, or --crd")
    from voxtune.controller.engines import render
    from voxtune.controller.jobs import JobSettings

    spec = load_user_spec(args.file, resolve_paths=False)  # paths are on the cluster's volume
    print(render(spec, JobSettings.load(args.config), args.step), end="")
    return ExitCode.OK


def _controller(args: argparse.Namespace) -> int:
    from voxtune.controller.jobs import JobSettings
    from voxtune.controller.kubeapi import connect
    from voxtune.controller.operator import run_forever

    settings = JobSettings.load(args.config)
    api, namespace = connect(args.kubeconfig, args.namespace)
    return run_forever(api, namespace, settings, args.host, args.port, args.resync_seconds)
