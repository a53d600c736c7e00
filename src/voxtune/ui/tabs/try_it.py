"""Try it: one recording transcribed by the base model and by one of the user's models."""

from __future__ import annotations

import time

import gradio as gr

from voxtune.ui import handlers
from voxtune.ui.handlers import Context
from voxtune.ui.tabs.common import LANGUAGE_CHOICES, UserOf, friendly

SMOKE_NOTE = ("**Smoke-test model:** trained from `tiny-random`, a randomly initialised "
              "stand-in for Voxtral that checks the pipeline; its transcripts are noise by "
              "design. Train on a real base model for real transcripts.")


def layout(ctx: Context, user: UserOf, tab: gr.Tab) -> None:
    where = (f"Transcribed by the demo server at {ctx.settings.demo_url}."
             if ctx.settings.demo_url else "The first transcription starts the model server "
             "(`voxtune serve`), which takes a moment.")
    gr.Markdown(f"Record or upload a clip and compare the base model with yours. {where}")
    with gr.Row():
        model = gr.Dropdown([], label="Your model", elem_id="try-model",
                            visible=not ctx.settings.demo_url)
        language = gr.Dropdown(LANGUAGE_CHOICES, value="auto", label="Language")
    audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Speech",
                     elem_id="try-audio")
    button = gr.Button("Transcribe", variant="primary", elem_id="try-button")
    smoke = gr.Markdown(visible=False, elem_id="try-smoke")
    note = gr.Markdown(elem_id="try-status")
    with gr.Row():
        base = gr.Textbox(label="Base model", lines=4, max_lines=8, elem_id="try-base")
        tuned = gr.Textbox(label="Fine-tuned model", lines=4, max_lines=8, elem_id="try-tuned")

    def models(request: gr.Request):
        found = handlers.my_models(ctx, user(request))
        return gr.update(choices=found, value=found[0] if found else None)

    def label(chosen: str | None):
        smoke_test = bool(chosen) and handlers.is_smoke_test(ctx, chosen or "")
        return gr.update(visible=smoke_test, value=SMOKE_NOTE)

    @friendly
    def run(chosen: str | None, path: str | None, code: str, request: gr.Request):
        started = time.monotonic()
        result = handlers.try_it(ctx, user(request), chosen or "", path, code)
        model = result.get("description") or result["model"]  # vLLM's: only the name
        return (result["base"], result["tuned"], f"{model} vs {result['base_model']} "
                f"({time.monotonic() - started:.1f} s)")

    tab.select(models, None, model)
    model.change(label, model, smoke)
    button.click(run, [model, audio, language], [base, tuned, note])
