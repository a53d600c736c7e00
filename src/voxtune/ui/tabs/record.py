"""Record: read a sentence aloud (or your own text), listen back, save the clip; a counter says
how far along the user is. A new take of a sentence already recorded replaces its clip, and
"Save clip & next" is the one button that moves on after a save ("Skip sentence" moves on
without one), so no prompt is passed over by pressing both.

Targeted recording (an accordion above): the user pastes their own text and records a few
calibration prompts; a model transcribes each (handlers.save_calibration_take), and from then
on the prompt shown is the one holding most of what the model got wrong, with why
(handlers.targeted) — until "Back to the built-in sentences"."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from voxtune.errors import UserError
from voxtune.models.inference import LANGUAGES
from voxtune.spec import DEFAULT_BASE_MODEL
from voxtune.ui import handlers, views
from voxtune.ui.handlers import Context
from voxtune.ui.phrases import PHRASES, sentence
from voxtune.ui.tabs.common import UserOf, friendly
from voxtune.ui.workspace import RECORDING

RECORD_LANGUAGES = [(f"{code}: {LANGUAGES.get(code, code)}", code) for code in PHRASES]


def layout(ctx: Context, user: UserOf, tab: gr.Tab) -> None:
    gr.Markdown("Read the sentence aloud, or type your own text (names and words the model "
                "should learn). Listen back; record again to replace the take, then save.")
    with gr.Accordion("Targeted recording: find what the model gets wrong in your voice, "
                      "then record what helps most", open=False, elem_id="targeted"):
        gr.Markdown("Paste your own text (a glossary, product names, pages you dictate) and "
                    "start: record the calibration prompts first; a model transcribes them, "
                    "and from then on each prompt is the one holding most of the words it got "
                    "wrong, with why. Calibration clips stay out of training, so a finished "
                    "run can be checked against them (Runs tab).")
        text = gr.Textbox(label="Your text", lines=4, elem_id="targeted-text")
        with gr.Row():
            model = gr.Dropdown([DEFAULT_BASE_MODEL], value=DEFAULT_BASE_MODEL,
                                allow_custom_value=True, visible=not ctx.settings.demo_url,
                                label="Model that transcribes the calibration clips (one of "
                                "your published models, or a Hub id)", elem_id="targeted-model",
                                scale=3)
            calibration_count = gr.Number(10, label="Calibration prompts", precision=0,
                                          minimum=1, maximum=50, elem_id="targeted-count",
                                          scale=1)
        with gr.Row():
            start = gr.Button("Start calibration", variant="primary", elem_id="targeted-start")
            stop = gr.Button("Back to the built-in sentences", elem_id="targeted-stop")
        errors = gr.Markdown(elem_id="targeted-errors")
    with gr.Row():
        language = gr.Dropdown(RECORD_LANGUAGES, value="en", label="Language", scale=1)
        index = gr.Number(0, label="Sentence number", precision=0, minimum=0, scale=1,
                          elem_id="record-index")
    counter = gr.Markdown(elem_id="record-counter")
    prompt = gr.Textbox(PHRASES["en"][0], label="Sentence to read (editable)", elem_id="prompt")
    why = gr.Markdown(elem_id="record-why")
    audio = gr.Audio(sources=["microphone"], type="filepath", label="Recording",
                     elem_id="record-audio")
    with gr.Row():
        skip = gr.Button("Skip sentence", elem_id="record-skip")
        save = gr.Button("Save clip & next", variant="primary", elem_id="save-clip")
    saved = gr.Markdown(elem_id="record-status")

    def count(code: str, number: float, request: gr.Request,
              view: handlers.Targeted | None = None) -> str:
        clips = ctx.workspace(user(request)).clips()
        return views.record_count(clips, int(number or 0), len(PHRASES[code]), view)

    def move(code: str, number: float, request: gr.Request):
        """The prompt to show: targeted recording's next one while it is on, else sentence
        `number` of the built-in list."""
        view = handlers.targeted(ctx, user(request))
        if view.prompt is not None:
            return (number, view.prompt, count(code, number, request, view),
                    views.targeted_why(view), views.calibration_report(view))
        shown, text = sentence(code, number)
        return shown, text, count(code, shown, request), "", views.calibration_report(view)

    @friendly
    def keep(path: str | None, text: str, code: str, number: float, request: gr.Request):
        if not path:
            raise UserError("record something first (click the microphone's record button)")
        if handlers.targeted(ctx, user(request)).calibrating:
            row = handlers.save_calibration_take(ctx, user(request), path, text)
            return (None, *move(code, number, request),
                    f"Calibration clip `{row['id']}`: the model heard “{row['heard']}”")
        workspace = ctx.workspace(user(request))
        earlier = workspace.take_of(text)
        row = workspace.add(Path(path), text, code, name=RECORDING, clip_id=earlier)
        what = "Replaced the take of" if earlier else "Saved"
        return (None, *move(code, (number or 0) + 1, request),
                f"{what} clip `{row['id']}` ({row['duration']:.1f} s): {row['text']}")

    def first(code: str, request: gr.Request):
        return move(code, 0, request)

    @friendly
    def next_one(code: str, number: float, text: str, request: gr.Request):
        if handlers.targeted(ctx, user(request)).prompt is not None:
            handlers.skip_targeted(ctx, user(request), text)
            return move(code, number, request)
        return move(code, (number or 0) + 1, request)

    @friendly
    def begin(domain: str, code: str, prompts: float, chosen: str, number: float,
              request: gr.Request):
        handlers.start_targeted(ctx, user(request), domain, code, int(prompts or 0),
                                chosen or "")
        return move(code, number, request)

    def end(code: str, number: float, request: gr.Request):
        handlers.stop_targeted(ctx, user(request))
        return move(code, number, request)

    def opened(code: str, number: float, chosen: str, request: gr.Request):
        """Back on the tab: a targeted round started elsewhere (Runs: "record more") shows its
        prompt; otherwise the prompt, perhaps typed by the user, stays."""
        models = [*handlers.my_models(ctx, user(request)), DEFAULT_BASE_MODEL]
        listed = gr.update(choices=models, value=chosen if chosen in models else models[0])
        view = handlers.targeted(ctx, user(request))
        if view.prompt is not None:
            return (*move(code, number, request), listed)
        return (gr.update(), gr.update(), count(code, number, request), "",
                views.calibration_report(view), listed)

    shown = [index, prompt, counter, why, errors]
    language.change(first, language, shown)
    index.submit(move, [language, index], shown)
    skip.click(next_one, [language, index, prompt], shown)
    save.click(keep, [audio, prompt, language, index], [audio, *shown, saved])
    start.click(begin, [text, language, calibration_count, model, index], shown)
    stop.click(end, [language, index], shown)
    tab.select(opened, [language, index, model], [*shown, model])
    gr.on(None, move, [language, index], shown, show_progress="hidden")  # on page load
