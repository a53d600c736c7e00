"""Upload: audio files with their transcripts (typed per file in an editable table, or from a
CSV / JSONL sheet whose file-name and transcript columns the user can pick)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas

from voxtune.data.audio import AUDIO_SUFFIXES
from voxtune.data.sources import TEXT_COLUMNS
from voxtune.errors import UserError
from voxtune.ui.handlers import Context
from voxtune.ui.tabs.common import LANGUAGE_CHOICES, UserOf, friendly
from voxtune.ui.views import rejected_table
from voxtune.ui.workspace import (
    FILE_COLUMNS,
    add_uploads,
    guess_column,
    sheet_columns,
    sheet_rows,
    transcript_rows,
)

TABLE = ["file", "transcript ✎"]


def layout(ctx: Context, user: UserOf) -> None:
    gr.Markdown("Upload WAV/FLAC files with their transcripts: type them per file in the table, "
                "or upload a CSV (`file_name,text`) or JSONL (`{\"audio_path\", \"text\"}`).")
    files = gr.File(file_count="multiple", file_types=sorted(AUDIO_SUFFIXES), type="filepath",
                    label="Audio files", elem_id="upload-files")
    transcripts = gr.File(file_types=[".csv", ".jsonl"], type="filepath",
                          label="Transcripts file (optional)", elem_id="upload-transcripts")
    with gr.Row(visible=False) as mapping:
        file_column = gr.Dropdown([], label="Column with the file names",
                                  elem_id="upload-file-column")
        text_column = gr.Dropdown([], label="Column with the transcripts",
                                  elem_id="upload-text-column")
    table = gr.Dataframe(headers=["file", "transcript ✎"], datatype=["str", "str"],
                         interactive=True, static_columns=[0],
                         label="Transcript per file — click a transcript cell to type or fix it",
                         elem_id="upload-table", max_height=400)
    language = gr.Dropdown(LANGUAGE_CHOICES, value="en", label="Language of these files")
    add = gr.Button("Add to dataset", variant="primary", elem_id="upload-add")
    result = gr.Markdown(elem_id="upload-status")
    rejected = gr.Dataframe(headers=["file", "reason", "detail"], label="Rejected files",
                            elem_id="upload-rejected", interactive=False)

    @friendly
    def fill(paths: list[str] | None, sheet: str | None, file_key: str | None,
             text_key: str | None) -> pandas.DataFrame:
        names = [Path(path).name for path in paths or []]
        rows = transcript_rows(names, Path(sheet) if sheet else None, file_key, text_key)
        return pandas.DataFrame(rows, columns=TABLE)

    @friendly
    def columns(sheet: str | None):
        if not sheet:
            return gr.update(visible=False), gr.update(value=None), gr.update(value=None)
        names = sheet_columns(sheet_rows(Path(sheet).name, Path(sheet).read_bytes()))
        return (gr.update(visible=True),
                gr.update(choices=names, value=guess_column(names, FILE_COLUMNS)),
                gr.update(choices=names, value=guess_column(names, TEXT_COLUMNS)))

    @friendly
    def keep(paths: list[str] | None, rows: pandas.DataFrame, code: str, request: gr.Request):
        if not paths:
            raise UserError("choose one or more audio files first")
        texts = dict(zip(rows.iloc[:, 0], rows.iloc[:, 1], strict=False)) \
            if rows is not None and len(rows.columns) == len(TABLE) else {}
        added, refused = add_uploads(ctx.workspace(user(request)),
                                     [Path(path) for path in paths], texts, code)
        summary = f"Added {added} of {len(paths)} files."
        if refused:
            summary += f" {len(refused)} rejected (below, with the reason)."
        return summary, rejected_table(refused).rename(columns={"source": "file"})

    sheet_fields = [files, transcripts, file_column, text_column]
    files.change(fill, sheet_fields, table)
    transcripts.change(columns, transcripts, [mapping, file_column, text_column]).then(
        fill, sheet_fields, table)
    file_column.input(fill, sheet_fields, table)
    text_column.input(fill, sheet_fields, table)
    add.click(keep, [files, table, language], [result, rejected])
