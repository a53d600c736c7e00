"""Record: read a sentence aloud (or your own text), listen back, save the clip; a counter says
how far along the user is. A new take of a sentence already recorded replaces its clip, and
"Save clip & next" is the one button that moves on after a save ("Skip sentence" moves on
without one), so no prompt is passed over by pressing both."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from voxtune.errors import UserError
from voxtune.models.inference import LANGUAGES
from voxtune.ui import views
from voxtune.ui.handlers import Context
from voxtune.ui.phrases import PHRASES, sentence
from voxtune.ui.tabs.common import UserOf, friendly
from voxtune.ui.workspace import RECORDING

RECORD_LANGUAGES = [(f"{code}: {LANGUAGES.get(code, code)}", code) for code in PHRASES]


def layout(ctx: Context, user: UserOf, tab: gr.Tab) -> None:
    gr.Markdown("Read the sentence aloud, or type your own text (names and words the model "
                "should learn). Listen back; record again to replace the take, then save.")
    with gr.Row():
        language = gr.Dropdown(RECORD_LANGUAGES, value="en", label="Language", scale=1)
        index = gr.Number(0, label="Sentence number", precision=0, minimum=0, scale=1,
                          elem_id="record-index")
    counter = gr.Markdown(elem_id="record-counter")
    prompt = gr.Textbox(PHRASES["en"][0], label="Sentence to read (editable)", elem_id="prompt")
    audio = gr.Audio(sources=["microphone"], type="filepath", label="Recording",
                     elem_id="record-audio")
    with gr.Row():
        skip = gr.Button("Skip sentence", elem_id="record-skip")
        save = gr.Button("Save clip & next", variant="primary", elem_id="save-clip")
    saved = gr.Markdown(elem_id="record-status")

    def count(code: str, number: float, request: gr.Request) -> str:
        clips = ctx.workspace(user(request)).clips()
        return views.record_count(clips, int(number or 0), len(PHRASES[code]))

    def move(code: str, number: float, request: gr.Request):
        shown, text = sentence(code, number)
        return shown, text, count(code, shown, request)

    @friendly
    def keep(path: str | None, text: str, code: str, number: float, request: gr.Request):
        if not path:
            raise UserError("record something first (click the microphone's record button)")
        workspace = ctx.workspace(user(request))
        earlier = workspace.take_of(text)
        row = workspace.add(Path(path), text, code, name=RECORDING, clip_id=earlier)
        what = "Replaced the take of" if earlier else "Saved"
        return (None, *move(code, (number or 0) + 1, request),
                f"{what} clip `{row['id']}` ({row['duration']:.1f} s): {row['text']}")

    def first(code: str, request: gr.Request):
        return move(code, 0, request)

    def next_one(code: str, number: float, request: gr.Request):
        return move(code, (number or 0) + 1, request)

    language.change(first, language, [index, prompt, counter])
    index.submit(move, [language, index], [index, prompt, counter])
    skip.click(next_one, [language, index], [index, prompt, counter])
    save.click(keep, [audio, prompt, language, index], [audio, index, prompt, counter, saved])
    tab.select(count, [language, index], counter)
    gr.on(None, count, [language, index], counter, show_progress="hidden")  # on page load
