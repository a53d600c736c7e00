"""Runs: the user's runs, and one run's page (phase and why, loss curve, base vs tuned scores,
where it was published, log tail, Cancel), polled every POLL_S seconds."""

from __future__ import annotations

import gradio as gr

from voxtune.ui import handlers, views
from voxtune.ui.handlers import Context
from voxtune.ui.tabs.common import UserOf, friendly

POLL_S = 2.0


def layout(ctx: Context, user: UserOf) -> None:
    table = gr.Dataframe(headers=views.RUN_COLUMNS, label="Your runs", interactive=False,
                         elem_id="runs-table")
    chosen = gr.Dropdown([], label="Run", elem_id="runs-choice")
    phase = gr.Markdown(elem_id="run-phase")
    with gr.Row():
        loss = gr.LinePlot(x="step", y="value", color="metric", label="Training loss",
                           elem_id="run-loss")
        scores = gr.BarPlot(x="score", y="percent", color="model", sort=list(views.SCORE_BARS),
                            y_lim=[0, None], color_map={"base": "#9ca3af", "tuned": "#f97316"},
                            label="WER / CER %: base vs tuned (lower is better)",
                            elem_id="run-scores")
    published = gr.Markdown(elem_id="run-published")
    logs = gr.Textbox(label="Logs (latest lines)", lines=14, max_lines=14, autoscroll=True,
                      elem_id="run-logs")
    cancel = gr.Button("Cancel run", variant="stop", elem_id="run-cancel")
    timer = gr.Timer(POLL_S)

    @friendly
    def listing(current: str | None, request: gr.Request):
        runs = handlers.my_runs(ctx, user(request))
        names = [status.name for status in runs]
        return (views.runs_table(runs),
                gr.update(choices=names, value=views.chosen_run(names, current)))

    @friendly
    def page(run: str | None, request: gr.Request):
        if not run:
            return "Launch a run in the Train tab.", None, None, "", "", gr.update(visible=False)
        view = handlers.run_page(ctx, user(request), run)
        # Pending and Queued runs can be cancelled too
        return (views.run_heading(view), views.loss_curve(view),
                views.score_bars(view.status.metrics), views.published_text(view.published),
                view.logs, gr.update(visible=not view.finished))

    @friendly
    def stop(run: str | None, request: gr.Request):
        status = handlers.cancel(ctx, user(request), run or "")
        return f"### {status.name}: {status.phase}\ncancel requested"

    outputs = [phase, loss, scores, published, logs, cancel]  # cancel: only while it runs
    timer.tick(listing, chosen, [table, chosen], show_progress="hidden")
    timer.tick(page, chosen, outputs, show_progress="hidden")
    chosen.change(page, chosen, outputs)
    cancel.click(stop, chosen, phase)
