"""Runs: the user's runs (newest first), and one run's page — phase and why, a progress bar with
the time left, loss curve, base vs tuned scores, per-clip transcripts, where it was published,
the latest log lines — with Cancel, Launch again (failed or cancelled), Delete (confirmed) and
Clone into Train; polled every POLL_S seconds. Below, the user's calibration clips (Record →
Targeted recording) checked with the run's model: which words are fixed, and a button that
starts a targeted round for the ones still wrong."""

from __future__ import annotations

import gradio as gr

from voxtune.ui import handlers, views
from voxtune.ui.handlers import Context
from voxtune.ui.tabs.common import UserOf, friendly

POLL_S = 2.0


def layout(ctx: Context, user: UserOf, tab: gr.Tab, clone: gr.State, tabs: gr.Tabs) -> None:
    gr.Markdown(f"Showing {handlers.where_runs_are(ctx)}.")
    table = gr.Dataframe(headers=views.RUN_COLUMNS, label="Your runs (newest first)",
                         interactive=False, elem_id="runs-table", max_height=240)
    chosen = gr.Dropdown([], label="Run", elem_id="runs-choice")
    phase = gr.Markdown(elem_id="run-phase")
    bar = gr.HTML(elem_id="run-progress")
    with gr.Row():
        cancel = gr.Button("Cancel run", variant="stop", elem_id="run-cancel")
        again = gr.Button("Launch again (resume)", visible=False, elem_id="run-resume")
        clone_button = gr.Button("Clone settings into Train", elem_id="run-clone")
        delete = gr.Button("Delete run…", elem_id="run-delete")
    with gr.Row(visible=False) as confirm_row:
        gr.Markdown("Delete this run with its checkpoints, model and logs? This cannot be "
                    "undone.")
        confirm = gr.Button("Yes, delete", variant="stop", elem_id="run-delete-confirm")
        keep = gr.Button("Keep it", elem_id="run-delete-keep")
    with gr.Row():
        loss = gr.LinePlot(x="step", y="value", color="metric", label="Training loss",
                           elem_id="run-loss")
        scores = gr.BarPlot(x="score", y="percent", color="model", sort=list(views.SCORE_BARS),
                            y_lim=[0, None], color_map={"base": "#9ca3af", "tuned": "#f97316"},
                            label="WER / CER %: base vs tuned (lower is better)",
                            elem_id="run-scores")
    samples = gr.HTML(elem_id="run-samples", label="Per-clip transcripts")
    published = gr.Markdown(elem_id="run-published")
    logs = gr.Textbox(label="Logs (latest lines; all of them: `voxtune logs RUN`)",
                      lines=handlers.LOG_TAIL, max_lines=handlers.LOG_TAIL,
                      elem_id="run-logs")
    with gr.Accordion("Calibration words: which ones this run's model now gets right",
                      open=False, elem_id="run-calibration-box"):
        calibration = gr.Markdown(elem_id="run-calibration")
        with gr.Row():
            check = gr.Button("Check my calibration clips with this run's model",
                              elem_id="run-calibrate")
            more = gr.Button("Record more for the words still wrong", elem_id="run-record-more")
    timer = gr.Timer(POLL_S)

    @friendly
    def listing(current: str | None, request: gr.Request):
        runs = handlers.my_runs(ctx, user(request))
        names = [status.name for status in runs]
        newest = handlers.newest_training_run(ctx, runs)
        return (views.runs_table(runs),
                gr.update(choices=names, value=views.chosen_run(names, current, newest)))

    @friendly
    def opened(request: gr.Request):  # the tab opens on the newest run, e.g. one just launched
        runs = handlers.my_runs(ctx, user(request))
        return (views.runs_table(runs), gr.update(choices=[s.name for s in runs],
                                                  value=handlers.newest_training_run(ctx, runs)))

    @friendly
    def page(run: str | None, request: gr.Request):
        if not run:
            return ("Launch a run in the Train tab.", "", None, None, "", "", "",
                    *buttons(None))
        view = handlers.run_page(ctx, user(request), run)
        return (views.run_heading(view), views.progress_bar(view.status),
                views.loss_curve(view), views.score_bars(view.status.metrics),
                views.samples_table(view.samples), views.published_text(view.published),
                view.logs,
                *buttons(view))

    def buttons(view: handlers.RunPage | None):
        # Pending and Queued runs can be cancelled too
        return (gr.update(visible=view is not None and not view.finished),
                gr.update(visible=view is not None and view.resumable and not ctx.kubernetes))

    @friendly
    def stop(run: str | None, request: gr.Request):
        status = handlers.cancel(ctx, user(request), run or "")
        return f"### {status.name}: {status.phase}\ncancel requested"

    @friendly
    def resume(run: str | None, request: gr.Request):
        status = handlers.resume(ctx, user(request), run or "")
        return f"### {status.name}: {status.phase}\nlaunched again; finished steps are kept"

    @friendly
    def remove(run: str | None, request: gr.Request):
        handlers.delete(ctx, user(request), run or "")
        gr.Info(f"Deleted {run}")
        return (gr.update(visible=False), *opened(request))

    def ask(run: str | None):
        if not run:
            raise gr.Error("choose a run first", print_exception=False)
        return gr.update(visible=True)

    def cloned(run: str | None):
        if not run:
            raise gr.Error("choose a run first", print_exception=False)
        return run, gr.Tabs(selected="train")

    outputs = [phase, bar, loss, scores, samples, published, logs, cancel, again]
    # a tick that finds the previous one still running is dropped: a slow machine never
    # queues up polls ahead of what the user clicks
    timer.tick(listing, chosen, [table, chosen], show_progress="hidden", trigger_mode="once")
    timer.tick(page, chosen, outputs, show_progress="hidden", trigger_mode="once")
    tab.select(opened, None, [table, chosen])
    chosen.change(page, chosen, outputs)
    cancel.click(stop, chosen, phase)
    again.click(resume, chosen, phase)
    delete.click(ask, chosen, confirm_row)
    keep.click(lambda: gr.update(visible=False), None, confirm_row)
    confirm.click(remove, chosen, [confirm_row, table, chosen])
    clone_button.click(cloned, chosen, [clone, tabs])

    # targeted recording: the calibration clips, transcribed by this run's tuned model
    def checked(run: str | None, request: gr.Request) -> str:
        if not run:
            return ""
        return views.calibration_outcomes(run, handlers.checked_words(ctx, user(request), run))

    @friendly
    def check_words(run: str | None, request: gr.Request) -> str:
        if not run:
            raise gr.Error("choose a run first", print_exception=False)
        return views.calibration_outcomes(run, handlers.rescore(ctx, user(request), run))

    @friendly
    def record_more(run: str | None, request: gr.Request):
        handlers.record_more(ctx, user(request), run or "")
        return gr.Tabs(selected="record")

    chosen.change(checked, chosen, calibration)
    check.click(check_words, chosen, calibration)
    more.click(record_more, chosen, tabs)
