"""Upload: audio files with their transcripts (typed per file, or a CSV / JSONL sheet)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas

from voxtune.data.audio import AUDIO_SUFFIXES
from voxtune.errors import UserError
from voxtune.ui.handlers import Context
from voxtune.ui.tabs.common import LANGUAGE_CHOICES, UserOf, friendly
from voxtune.ui.views import rejected_table
from voxtune.ui.workspace import add_uploads, transcript_rows


def layout(ctx: Context, user: UserOf) -> None:
    gr.Markdown("Upload WAV/FLAC files with their transcripts: type them per file in the table, "
                "or upload a CSV (`file_name,text`) or JSONL (`{\"audio_path\", \"text\"}`).")
    files = gr.File(file_count="multiple", file_types=sorted(AUDIO_SUFFIXES), type="filepath",
                    label="Audio files", elem_id="upload-files")
    transcripts = gr.File(file_types=[".csv", ".jsonl"], type="filepath",
                          label="Transcripts file (optional)", elem_id="upload-transcripts")
    table = gr.Dataframe(headers=["file", "transcript"], datatype=["str", "str"],
                         interactive=True, label="Transcript per file", elem_id="upload-table",
                         max_height=400)
    language = gr.Dropdown(LANGUAGE_CHOICES, value="en", label="Language of these files")
    add = gr.Button("Add to dataset", variant="primary", elem_id="upload-add")
    result = gr.Markdown(elem_id="upload-status")
    rejected = gr.Dataframe(headers=["file", "reason", "detail"], label="Rejected files",
                            elem_id="upload-rejected", interactive=False)

    @friendly
    def fill(paths: list[str] | None, sheet: str | None) -> pandas.DataFrame:
        names = [Path(path).name for path in paths or []]
        rows = transcript_rows(names, Path(sheet) if sheet else None)
        return pandas.DataFrame(rows, columns=["file", "transcript"])

    @friendly
    def keep(paths: list[str] | None, rows: pandas.DataFrame, code: str, request: gr.Request):
        if not paths:
            raise UserError("choose one or more audio files first")
        texts = dict(zip(rows["file"], rows["transcript"], strict=False)) \
            if rows is not None else {}
        added, refused = add_uploads(ctx.workspace(user(request)),
                                     [Path(path) for path in paths], texts, code)
        summary = f"Added {added} of {len(paths)} files."
        if refused:
            summary += f" {len(refused)} rejected (below, with the reason)."
        return summary, rejected_table(refused).rename(columns={"source": "file"})

    files.change(fill, [files, transcripts], table)
    transcripts.change(fill, [files, transcripts], table)
    add.click(keep, [files, table, language], [result, rejected])
