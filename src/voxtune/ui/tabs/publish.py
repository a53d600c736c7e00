"""Publish: a finished run (one that succeeded with a trained model, as its status says) to the
local registry or the Hub, as a publish-only run; the page follows that run until it ends and
then lists the model. The Hub without a token is refused here, before anything runs."""

from __future__ import annotations

import gradio as gr

from voxtune.ui import handlers, views
from voxtune.ui.handlers import Context, PublishForm
from voxtune.ui.tabs.common import UserOf, friendly

POLL_S = 2.0


def layout(ctx: Context, user: UserOf, tab: gr.Tab) -> None:
    gr.Markdown("Publish a finished run. Hub repositories are private by default; the Hub "
                "token is the server's (HF_TOKEN / its Secret) and is never entered here.")
    run = gr.Dropdown([], label="Finished run", elem_id="publish-run")
    destination = gr.Radio([("Local registry", "local"), ("Hugging Face Hub", "hub")],
                           value="local", label="Destination", elem_id="publish-to")
    repo = gr.Textbox(label="Hub repository (owner/name)", placeholder="alice/my-voice",
                      visible=False, elem_id="publish-repo")
    with gr.Row():
        private = gr.Checkbox(True, label="Private (recommended: voice is biometric data)",
                              visible=False, elem_id="publish-private")
        dataset = gr.Checkbox(False, label="Also publish the dataset")
        space = gr.Checkbox(False, label="Also create a demo Space")
    button = gr.Button("Publish", variant="primary", elem_id="publish-button")
    status = gr.Markdown(elem_id="publish-status")
    models = gr.Markdown(elem_id="publish-models")
    pending = gr.State(None)  # the publish run being followed
    timer = gr.Timer(POLL_S, active=False)

    @friendly
    def refresh(request: gr.Request):
        name = user(request)
        finished = handlers.finished_runs(ctx, name)
        return (gr.update(choices=finished, value=finished[0] if finished else None),
                views.models_text(handlers.my_models(ctx, name)))

    @friendly
    def start(name, where, hub_repo, is_private, with_dataset, with_space,
              request: gr.Request):
        form = PublishForm(where, hub_repo, is_private, with_dataset, with_space)
        launched = handlers.publish(ctx, user(request), name or "", form)
        return (f"Publishing as run **{launched.name}**; when it has succeeded the model is "
                "listed below and in Try it (the run page shows where it went).",
                launched.name, gr.Timer(active=True))

    @friendly
    def follow(run: str | None, request: gr.Request):
        finished = handlers.publish_outcome(ctx, user(request), run or "")
        if finished is None:  # still going
            return gr.update(), gr.update(), gr.update(), run, gr.Timer(active=True)
        listed = refresh(request)
        return (finished, *listed, None, gr.Timer(active=False))

    def hub_fields(where: str):
        return gr.update(visible=where == "hub"), gr.update(visible=where == "hub")

    tab.select(refresh, None, [run, models])
    destination.change(hub_fields, destination, [repo, private])  # only the Hub needs them
    button.click(start, [run, destination, repo, private, dataset, space],
                 [status, pending, timer])
    timer.tick(follow, pending, [status, run, models, pending, timer], show_progress="hidden",
               trigger_mode="once")
