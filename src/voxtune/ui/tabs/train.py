"""Train: what runs launched here run on, the run's settings, the resource plan they lead to
(updated as they change) with its verdict, and Preview (the exact spec, and on Kubernetes the
FineTuneRun) before Launch. Launch's answer sits right under the button; Runs' "Clone settings
into Train" fills the form from another run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from voxtune.ui import handlers, training
from voxtune.ui.auth import MAX_KEY_LENGTH
from voxtune.ui.handlers import Context
from voxtune.ui.tabs.common import LANGUAGE_CHOICES, UserOf, friendly
from voxtune.ui.training import MODES, TrainForm

RUN_NAME_ROOM = 40 - MAX_KEY_LENGTH - 1  # run names are `<user key>-<name>`, at most 40 long


def _mode_choices(modes: list[str]) -> list[tuple[str, str]]:
    return [(MODES[mode], mode) for mode in modes]


def layout(ctx: Context, user: UserOf, clone: gr.State) -> None:
    defaults = TrainForm()
    start = training.offer(ctx, defaults)  # the first choices already fit, on this hardware
    gr.Markdown(training.hardware_text(ctx), elem_id="train-hardware")
    with gr.Row():
        name = gr.Textbox(label="Run name (optional; prefixed with your user name)",
                          max_length=RUN_NAME_ROOM, elem_id="train-name")
        base_model = gr.Dropdown(list(training.BASE_MODELS), value=defaults.base_model,
                                 allow_custom_value=True, label="Base model",
                                 elem_id="train-base")
    with gr.Row():
        mode = gr.Radio(_mode_choices(start.modes), value=start.form.mode, label="Mode",
                        elem_id="train-mode")
        language = gr.Dropdown(LANGUAGE_CHOICES, value=defaults.language, label="Language")
        gpus = gr.Dropdown(start.gpus, value=start.form.gpus, label="GPUs",
                           elem_id="train-gpus")
        gpu_profile = gr.Dropdown(start.profiles, value=start.form.gpu_profile,
                                  label="GPU profile (memory per GPU)",
                                  elem_id="train-gpu-profile")
    with gr.Row():
        max_steps = gr.Slider(0, 5000, value=defaults.max_steps, step=1,
                              label="Max steps (0 = train for the epochs)",
                              elem_id="train-max-steps")
        epochs = gr.Slider(0.5, 20, value=defaults.epochs, step=0.5, label="Epochs")
    with gr.Accordion("Advanced", open=False):
        with gr.Row():
            learning_rate = gr.Number(defaults.learning_rate, minimum=0, maximum=1e-2,
                                      label=training.learning_rate_label(),
                                      elem_id="train-learning-rate")
            batch_size = gr.Slider(1, 64, value=defaults.batch_size, step=1,
                                   label="Batch size (clips per device)",
                                   elem_id="train-batch-size")
            grad_accum = gr.Slider(1, 64, value=defaults.grad_accum, step=1,
                                   label="Gradient accumulation")
        with gr.Row():
            lora_rank = gr.Slider(1, 256, value=defaults.lora_rank, step=1, label="LoRA rank")
            lora_alpha = gr.Slider(1, 512, value=defaults.lora_alpha, step=1,
                                   label="LoRA alpha")
            eval_fraction = gr.Slider(0.05, 0.5, value=defaults.eval_fraction, step=0.05,
                                      label="Held-out share for WER/CER")
    publish_after = gr.Checkbox(defaults.publish_after, label="Publish to the local registry "
                                "when training succeeds")
    plan = gr.Markdown(training.plan_text(start.plan, start.problem), elem_id="train-plan")
    with gr.Row():
        preview = gr.Button("Preview", elem_id="train-preview")
        launch = gr.Button("Launch", variant="primary", elem_id="train-launch")
    launched = gr.Markdown(elem_id="train-status")  # beside Launch, not below the YAML
    spec_view = gr.Code(language="yaml", label="Run spec", lines=12, max_lines=80,
                        elem_id="train-spec")
    run_view = gr.Code(language="yaml", label="FineTuneRun (Kubernetes)", lines=12, max_lines=80,
                       visible=ctx.kubernetes, elem_id="train-run-yaml")
    inputs = [name, base_model, mode, language, gpus, gpu_profile, max_steps, epochs,
              learning_rate, batch_size, grad_accum, lora_rank, lora_alpha, eval_fraction,
              publish_after]

    def with_form(action: Callable[[str, TrainForm], Any]) -> Callable[..., Any]:
        # Gradio injects gr.Request only into parameters it can see, so they are spelled out.
        @friendly
        def handler(name, base_model, mode, language, gpus, gpu_profile, max_steps, epochs,
                    learning_rate, batch_size, grad_accum, lora_rank, lora_alpha,
                    eval_fraction, publish_after, request: gr.Request):
            return action(user(request), TrainForm(
                name, base_model, mode, language, gpus, gpu_profile, max_steps, epochs,
                learning_rate or 0.0, batch_size, grad_accum, lora_rank, lora_alpha,
                eval_fraction, publish_after))

        return handler

    def refit(_: str, form: TrainForm):
        offered = training.offer(ctx, form)
        return (gr.update(choices=_mode_choices(offered.modes), value=offered.form.mode),
                gr.update(choices=offered.gpus, value=offered.form.gpus),
                gr.update(choices=offered.profiles, value=offered.form.gpu_profile),
                training.plan_text(offered.plan, offered.problem))

    def start_run(name: str, form: TrainForm) -> str:
        status = training.launch(ctx, name, form)
        gr.Info(f"Launched {status.name}")
        return f"Launched **{status.name}** ({status.phase}); follow it in the Runs tab."

    @friendly
    def fill(run: str | None, request: gr.Request):
        if not run:
            return [gr.update()] * (len(inputs) + 1)
        form = training.form_of(handlers.spec_of(ctx, user(request), run))
        offered = training.offer(ctx, form)
        form = offered.form
        return (form.name, form.base_model,
                gr.update(choices=_mode_choices(offered.modes), value=form.mode),
                form.language, gr.update(choices=offered.gpus, value=form.gpus),
                gr.update(choices=offered.profiles, value=form.gpu_profile), form.max_steps,
                form.epochs, form.learning_rate, form.batch_size, form.grad_accum,
                form.lora_rank, form.lora_alpha, form.eval_fraction, form.publish_after,
                f"Settings of **{run}** — name the new run, then Preview and Launch.")

    # `input`, not `change`, for the fields refit sets, so its own updates do not re-run it
    gr.on([base_model.change, mode.input, gpus.input, gpu_profile.input, batch_size.release],
          with_form(refit), inputs, [mode, gpus, gpu_profile, plan], show_progress="hidden")
    preview.click(with_form(lambda name, form: training.preview(ctx, name, form)), inputs,
                  [spec_view, run_view])
    launch.click(with_form(start_run), inputs, launched)
    clone.change(fill, clone, [*inputs, launched])
