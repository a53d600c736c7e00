"""Record: read a sentence aloud (or your own text), listen back, save the clip."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from voxtune.errors import UserError
from voxtune.models.inference import LANGUAGES
from voxtune.ui.handlers import Context
from voxtune.ui.phrases import PHRASES, sentence
from voxtune.ui.tabs.common import UserOf, friendly

RECORD_LANGUAGES = [(f"{code}: {LANGUAGES.get(code, code)}", code) for code in PHRASES]


def layout(ctx: Context, user: UserOf) -> None:
    gr.Markdown("Read the sentence aloud, or type your own text (names and words the model "
                "should learn). Listen back, re-record if needed, then save.")
    with gr.Row():
        language = gr.Dropdown(RECORD_LANGUAGES, value="en", label="Language", scale=1)
        index = gr.Number(0, label="Sentence number", precision=0, minimum=0, scale=1)
    prompt = gr.Textbox(PHRASES["en"][0], label="Sentence to read (editable)", elem_id="prompt")
    audio = gr.Audio(sources=["microphone"], type="filepath", label="Recording",
                     elem_id="record-audio")
    with gr.Row():
        next_button = gr.Button("Next sentence")
        save = gr.Button("Save clip", variant="primary", elem_id="save-clip")
    saved = gr.Markdown(elem_id="record-status")

    @friendly
    def keep(path: str | None, text: str, code: str, number: float, request: gr.Request):
        if not path:
            raise UserError("record something first (click the microphone's record button)")
        row = ctx.workspace(user(request)).add(Path(path), text, code, name="recording.wav")
        return (None, *sentence(code, (number or 0) + 1),
                f"Saved clip `{row['id']}` ({row['duration']:.1f} s): {row['text']}")

    language.change(lambda code: sentence(code, 0), language, [index, prompt])
    index.submit(sentence, [language, index], [index, prompt])
    next_button.click(lambda code, n: sentence(code, (n or 0) + 1), [language, index],
                      [index, prompt])
    save.click(keep, [audio, prompt, language, index], [audio, index, prompt, saved])
