"""`voxtune ui`: the Gradio app. `build_app(ctx)` only assembles the tabs (voxtune.ui.tabs: one
layout function each, wired to the plain functions in voxtune.ui.handlers / .training / .views);
this module also serves it, with the login the settings ask for.

    voxtune ui                                     # http://127.0.0.1:7860, local runs, user "local"
    VOXTUNE_UI_AUTH=password VOXTUNE_UI_USERS_FILE=users.txt voxtune ui --host 0.0.0.0
    voxtune ui --backend kubernetes --namespace ml # in the cluster: FineTuneRuns
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from voxtune.client import Client
from voxtune.spec import Settings
from voxtune.ui.auth import (
    check_bind,
    password_check,
    proxy_user,
    read_users,
    signed_in_name,
    user_of,
)
from voxtune.ui.demo import DemoServers
from voxtune.ui.handlers import Context, where_runs_are
from voxtune.ui.settings import UiSettings
from voxtune.ui.tabs import dataset, publish, record, runs, train, try_it, upload

# Gradio features voxtune does not use, off whatever GRADIO_* variables say. Run history hands
# callers on loopback (kubectl port-forward is loopback) the server's own HF_TOKEN, and its
# routes skip the login; monitoring shows everyone's traffic to any signed-in user; MCP, share
# links and server-side rendering add servers and routes nobody here needs.
GRADIO_FEATURES_OFF: dict[str, Any] = {"run_history": False, "enable_monitoring": False,
                                       "mcp_server": False, "share": False, "ssr_mode": False}


# the run page's progress bar, the per-clip table's error marks, the editable upload cells
CSS = """
.vt-progress progress { width: 70%; height: 1.1em; accent-color: #f97316; }
.vt-progress-label, .vt-progress-time { margin: 0.2em 0; }
.vt-samples { border-collapse: collapse; width: 100%; table-layout: fixed; }
.vt-samples td, .vt-samples th { border: 1px solid #e5e7eb; padding: 0.3em 0.5em;
  overflow-wrap: anywhere; vertical-align: top; }
.vt-samples th:first-child { width: 10em; }
mark.vt-wrong { background: #fecaca; }
mark.vt-missing { background: #fde68a; }
#upload-table td { background: #fffbeb; cursor: text; }
"""


def build_app(ctx: Context) -> gr.Blocks:
    def user(request: gr.Request) -> str:
        return user_of(request, ctx.settings)

    def greet(request: gr.Request) -> str:
        return (f"# voxtune\nFine-tune Voxtral on your own voice — signed in as "
                f"**{signed_in_name(request, ctx.settings)}**, runs on "
                f"**{ctx.client.backend}** ({where_runs_are(ctx)}).")

    # no usage reports to Gradio's servers: which features a clinic's UI uses is not theirs
    with gr.Blocks(title="voxtune", analytics_enabled=False) as app:
        header = gr.Markdown("# voxtune\nFine-tune Voxtral speech recognition on your own voice.")
        app.load(greet, None, header)
        clone = gr.State(None)  # a run whose settings Runs hands to Train
        with gr.Tabs() as tabs:
            with gr.Tab("Record", id="record") as record_tab:
                record.layout(ctx, user, record_tab)
            with gr.Tab("Upload", id="upload"):
                upload.layout(ctx, user)
            with gr.Tab("Dataset", id="dataset") as dataset_tab:
                dataset.layout(ctx, user, dataset_tab)
            with gr.Tab("Train", id="train"):
                train.layout(ctx, user, clone)
            with gr.Tab("Runs", id="runs") as runs_tab:
                runs.layout(ctx, user, runs_tab, clone, tabs)
            with gr.Tab("Publish", id="publish") as publish_tab:
                publish.layout(ctx, user, publish_tab)
            with gr.Tab("Try it", id="try") as try_tab:
                try_it.layout(ctx, user, try_tab)
    return app


# --- the process -------------------------------------------------------------------------------


def login_options(settings: UiSettings) -> dict[str, Any]:
    """Gradio's launch arguments for `settings.auth`; reads and checks the users file."""
    if settings.auth == "password":
        return {"auth": password_check(read_users(settings))}
    if settings.auth == "proxy":
        return {"auth_dependency": proxy_user(settings)}
    return {}


def launch(ctx: Context, host: str, port: int, login: dict[str, Any],
           block: bool = True) -> gr.Blocks:
    """Serve the app on host:port with `login` and every unused Gradio feature off; with
    `block=False` return the running app (its `.close()` stops it)."""
    app = build_app(ctx)
    app.queue(default_concurrency_limit=16)  # many users; handlers only wait on I/O
    app.launch(server_name=host, server_port=port, quiet=True, prevent_thread_lock=not block,
               css=CSS, **login, **GRADIO_FEATURES_OFF)
    return app


def serve(host: str, port: int, backend: str, namespace: str | None = None) -> None:
    """Check the settings, connect the backend and serve until interrupted."""
    settings = UiSettings()
    check_bind(host, settings)
    login = login_options(settings)  # a bad users file stops here, before any connection
    home = Settings().home
    client = Client(backend, namespace=namespace)  # type: ignore[arg-type]
    ctx = Context(client, settings, home, DemoServers(home / "ui"))
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"voxtune UI on http://{shown}:{port} (runs: {backend}, auth: {settings.auth}; "
          "Ctrl-C stops it)", flush=True)
    try:
        launch(ctx, host, port, login)
    finally:
        ctx.demo.stop()
