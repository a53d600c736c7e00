"""`voxtune ui`: the web UI (record speech, build the dataset, launch and watch runs)."""

from __future__ import annotations

import argparse

from voxtune.client import BACKENDS
from voxtune.errors import ExitCode


def add_parsers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "ui", help="Web UI: record speech, build the dataset, launch and watch runs, publish, "
        "try the model.", description="Auth and the demo server come from VOXTUNE_UI_* "
        "variables (VOXTUNE_UI_AUTH=none|password|proxy, VOXTUNE_UI_USERS_FILE, "
        "VOXTUNE_UI_PROXY_HEADER, VOXTUNE_UI_ALLOW_REMOTE_WITHOUT_AUTH, VOXTUNE_UI_DEMO_URL).",
        epilog="example: voxtune ui --port 7860")
    parser.add_argument("--host", default="127.0.0.1", help="Interface; another than loopback "
                        "needs VOXTUNE_UI_AUTH (or VOXTUNE_UI_ALLOW_REMOTE_WITHOUT_AUTH=true).")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--backend", choices=list(BACKENDS), help="Where runs go "
                        "(default $VOXTUNE_BACKEND, else local).")
    parser.add_argument("--namespace", help="Kubernetes namespace for FineTuneRuns.")
    parser.set_defaults(handler=_ui)


def _ui(args: argparse.Namespace) -> int:
    import os

    from voxtune.ui.app import serve

    serve(args.host, args.port, args.backend or os.environ.get("VOXTUNE_BACKEND", "local"),
          args.namespace)
    return ExitCode.OK
