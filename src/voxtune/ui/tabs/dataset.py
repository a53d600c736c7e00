"""Dataset: the workspace's clips (play, fix a transcript, delete after a confirmation), extra
Hub / Granary sources, and "Build dataset" (the prepare step over the clips; the run then takes
it as it is, and Launch refuses a dataset older than the clips)."""

from __future__ import annotations

import gradio as gr

from voxtune.errors import UserError
from voxtune.ui import sources as user_sources
from voxtune.ui import views
from voxtune.ui.handlers import Context
from voxtune.ui.sources import SourceForm
from voxtune.ui.tabs.common import LANGUAGE_CHOICES, UserOf, friendly


def layout(ctx: Context, user: UserOf, tab: gr.Tab) -> None:
    total = gr.Markdown(elem_id="dataset-total")
    clips = gr.Dataframe(headers=views.CLIP_COLUMNS, label="Clips", interactive=False,
                         elem_id="dataset-clips", max_height=400)
    with gr.Row():
        chosen = gr.Dropdown([], label="Clip", scale=2, elem_id="dataset-clip")
        refresh = gr.Button("Refresh", scale=1)
    playback = gr.Audio(type="filepath", label="Playback", interactive=False)
    text = gr.Textbox(label="Transcript of this clip", elem_id="dataset-text")
    with gr.Row():
        save = gr.Button("Save transcript", elem_id="dataset-save")
        delete = gr.Button("Delete clip…", variant="stop", elem_id="dataset-delete")
    with gr.Row(visible=False) as confirm_row:
        asked = gr.Markdown()
        confirm = gr.Button("Yes, delete it", variant="stop", elem_id="dataset-delete-confirm")
        keep = gr.Button("Keep it", elem_id="dataset-delete-keep")
    done = gr.Markdown(elem_id="dataset-edit-status")
    defaults = SourceForm()
    with gr.Accordion("Add a Hugging Face or Granary source", open=False):
        kind = gr.Radio(["hub", "granary"], value=defaults.kind, label="Kind")
        dataset = gr.Textbox(label="Hub dataset id or folder (hub)",
                             placeholder="mozilla-foundation/common_voice_17_0")
        with gr.Row():
            config = gr.Textbox(label="Config / subset (hub)")
            split = gr.Textbox(defaults.split, label="Split (hub)")
            text_column = gr.Textbox(defaults.text_column, label="Text column (hub)")
        with gr.Row():
            subset = gr.Textbox(label="Granary subset, e.g. sv_voxpopuli (granary)")
            audio_root = gr.Textbox(label="Audio root on the server (granary)")
            max_samples = gr.Number(defaults.max_samples, label="Max samples", minimum=1,
                                    maximum=1_000_000, precision=0)
        with gr.Row():
            add_source = gr.Button("Add source")
            clear_sources = gr.Button("Remove all sources")
        sources = gr.JSON(label="Extra sources (read by the run's prepare step)")
    language = gr.Dropdown(LANGUAGE_CHOICES, value="auto",
                           label="Language for clips without one")
    build = gr.Button("Build dataset", variant="primary", elem_id="dataset-build")
    built = gr.Markdown(elem_id="dataset-summary")
    rejected = gr.Dataframe(headers=views.REJECTED_COLUMNS, label="Rejected by prepare",
                            interactive=False)

    def show(request: gr.Request):
        workspace = ctx.workspace(user(request))
        rows = workspace.clips()
        extra = [source.model_dump(mode="json") for source in workspace.sources()]
        return (views.dataset_total(rows, workspace.stale()), views.clips_table(rows),
                gr.update(choices=views.clip_choices(rows), value=None), extra)

    def pick(key: str | None, request: gr.Request):
        workspace = ctx.workspace(user(request))
        row = workspace.clips().get(key or "")
        return (None, "") if row is None else (str(workspace.recordings / row["audio_path"]),
                                               row["text"])

    @friendly
    def edit(key: str | None, value: str, request: gr.Request):
        ctx.workspace(user(request)).edit(key or "", value)
        return (*show(request), f"Saved the transcript of clip `{key}`: {value.strip()}")

    @friendly
    def ask(key: str | None, request: gr.Request):
        row = ctx.workspace(user(request)).clips().get(key or "")
        if row is None:
            raise UserError("choose a clip first")
        return gr.update(visible=True), f"Delete clip `{key}` ({row['text'][:60]})?"

    @friendly
    def remove(key: str | None, request: gr.Request):
        ctx.workspace(user(request)).delete(key or "")
        return (*show(request), gr.update(visible=False), f"Deleted clip `{key}`.")

    @friendly  # Gradio injects gr.Request only into a parameter it can see, so all are spelled out
    def add_extra(kind_value: str, dataset_value: str, config_value: str, split_value: str,
                  column: str, subset_value: str, root: str, limit: float,
                  request: gr.Request):
        form = SourceForm(kind_value, dataset_value, config_value, split_value, column,
                          subset_value, root, int(limit or 0))
        user_sources.add_source(ctx, user(request), form.source())
        return show(request)

    def clear(request: gr.Request):
        ctx.workspace(user(request)).set_sources([])
        return show(request)

    @friendly
    def prepare(code: str, request: gr.Request):
        summary, refused = ctx.workspace(user(request)).build(None if code == "auto" else code)
        return "\n\n".join(summary.lines()), views.rejected_table(refused)

    outputs = [total, clips, chosen, sources]
    tab.select(show, None, outputs)
    refresh.click(show, None, outputs)
    chosen.change(pick, chosen, [playback, text])
    save.click(edit, [chosen, text], [*outputs, done])
    delete.click(ask, chosen, [confirm_row, asked])
    keep.click(lambda: gr.update(visible=False), None, confirm_row)
    confirm.click(remove, chosen, [*outputs, confirm_row, done])
    add_source.click(add_extra, [kind, dataset, config, split, text_column, subset, audio_root,
                                 max_samples], outputs)
    clear_sources.click(clear, None, outputs)
    build.click(prepare, language, [built, rejected]).then(show, None, outputs)
