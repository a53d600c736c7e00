"""`voxtune ui`: the Gradio app. `build_app(ctx)` only lays out widgets and wires them to the
plain functions in voxtune.ui.handlers; user mistakes become gr.Error messages.

    voxtune ui                                     # http://127.0.0.1:7860, local runs, user "local"
    VOXTUNE_UI_AUTH=password VOXTUNE_UI_USERS_FILE=users.txt voxtune ui --host 0.0.0.0
    voxtune ui --backend kubernetes --namespace ml # in the cluster: FineTuneRuns
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import pandas

from voxtune.client import Client
from voxtune.data.audio import AUDIO_SUFFIXES, AudioRejected
from voxtune.errors import RetryableError, UserError
from voxtune.models.inference import LANGUAGES
from voxtune.run.layout import RunFolder
from voxtune.spec import GranarySource, HubSource, Settings
from voxtune.ui import handlers
from voxtune.ui.auth import (
    MAX_KEY_LENGTH,
    check_bind,
    password_check,
    proxy_user,
    read_users,
    signed_in_name,
    user_of,
)
from voxtune.ui.demo import DemoServers
from voxtune.ui.handlers import Context, PublishForm, TrainForm
from voxtune.ui.phrases import PHRASES
from voxtune.ui.settings import UiSettings

POLL_S = 2.0
LANGUAGE_CHOICES = [(f"{code}: {label}", code) for code, label in LANGUAGES.items()]
# bar label → (series, metric key in metrics.json)
SCORE_BARS = {"WER base": ("base", "base_wer"), "WER tuned": ("tuned", "wer"),
              "CER base": ("base", "base_cer"), "CER tuned": ("tuned", "cer")}
RECORD_LANGUAGES = [(f"{code}: {LANGUAGES.get(code, code)}", code) for code in PHRASES]
RUN_NAME_ROOM = 40 - MAX_KEY_LENGTH - 1  # run names are `<user key>-<name>`, at most 40 long
# Gradio features voxtune does not use, off whatever GRADIO_* variables say. Run history hands
# callers on loopback (kubectl port-forward is loopback) the server's own HF_TOKEN, and its
# routes skip the login; monitoring shows everyone's traffic to any signed-in user; MCP, share
# links and server-side rendering add servers and routes nobody here needs.
GRADIO_FEATURES_OFF: dict[str, Any] = {"run_history": False, "enable_monitoring": False,
                                       "mcp_server": False, "share": False, "ssr_mode": False}


def friendly(function: Callable[..., Any]) -> Callable[..., Any]:
    """Show a UserError, an invalid audio clip or a passing failure (cluster unreachable) as a
    Gradio error message."""
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (UserError, AudioRejected) as error:
            raise gr.Error(str(error), print_exception=False) from None
        except RetryableError as error:
            raise gr.Error(f"{error}; try again in a moment", print_exception=False) from None

    return wrapper


def build_app(ctx: Context) -> gr.Blocks:
    def user(request: gr.Request) -> str:
        return user_of(request, ctx.settings)

    # no usage reports to Gradio's servers: which features a clinic's UI uses is not theirs
    with gr.Blocks(title="voxtune", analytics_enabled=False) as app:
        header = gr.Markdown("# voxtune\nFine-tune Voxtral speech recognition on your own voice.")

        def greet(request: gr.Request) -> str:
            return (f"# voxtune\nFine-tune Voxtral on your own voice — signed in as "
                    f"**{signed_in_name(request, ctx.settings)}**, runs on "
                    f"**{ctx.client.backend}**.")

        app.load(greet, None, header)
        with gr.Tabs():
            with gr.Tab("Record", id="record"):
                _record_tab(ctx, user)
            with gr.Tab("Upload", id="upload"):
                _upload_tab(ctx, user)
            with gr.Tab("Dataset", id="dataset") as dataset_tab:
                _dataset_tab(ctx, user, dataset_tab)
            with gr.Tab("Train", id="train"):
                _train_tab(ctx, user)
            with gr.Tab("Runs", id="runs"):
                _runs_tab(ctx, user)
            with gr.Tab("Publish", id="publish") as publish_tab:
                _publish_tab(ctx, user, publish_tab)
            with gr.Tab("Try it", id="try") as try_tab:
                _try_tab(ctx, user, try_tab)
    return app


# --- record and upload ----------------------------------------------------------------------


def _record_tab(ctx: Context, user: Callable[[gr.Request], str]) -> None:
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

    def sentence(code: str, number: float) -> tuple[int, str]:
        phrases = PHRASES[code]
        number = int(number or 0) % len(phrases)
        return number, phrases[number]

    @friendly
    def keep(path: str | None, text: str, code: str, number: float, request: gr.Request):
        if not path:
            raise UserError("record something first (click the microphone's record button)")
        row = ctx.workspace(user(request)).add(Path(path), text, code, name="recording.wav")
        following = sentence(code, (number or 0) + 1)
        return (None, *following, f"Saved clip `{row['id']}` ({row['duration']:.1f} s): "
                f"{row['text']}")

    language.change(lambda code: sentence(code, 0), language, [index, prompt])
    index.submit(sentence, [language, index], [index, prompt])
    next_button.click(lambda code, n: sentence(code, (n or 0) + 1), [language, index],
                      [index, prompt])
    save.click(keep, [audio, prompt, language, index], [audio, index, prompt, saved])


def _upload_tab(ctx: Context, user: Callable[[gr.Request], str]) -> None:
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
        from voxtune.ui.workspace import safe_name, transcripts_file

        known = transcripts_file(Path(sheet).name, Path(sheet).read_bytes()) if sheet else {}
        names = [Path(path).name for path in paths or []]
        return pandas.DataFrame({"file": names,
                                 "transcript": [known.get(safe_name(n), "") for n in names]})

    @friendly
    def keep(paths: list[str] | None, rows: pandas.DataFrame, code: str, request: gr.Request):
        if not paths:
            raise UserError("choose one or more audio files first")
        workspace = ctx.workspace(user(request))
        texts = dict(zip(rows["file"], rows["transcript"], strict=False)) if rows is not None \
            else {}
        added, refused = 0, []
        for path in paths:
            name = Path(path).name
            try:
                workspace.add(Path(path), str(texts.get(name) or ""), code, name=name)
                added += 1
            except AudioRejected as problem:
                refused.append((name, problem.reason, str(problem)))
        summary = f"Added {added} of {len(paths)} files."
        if refused:
            summary += f" {len(refused)} rejected (below, with the reason)."
        return summary, pandas.DataFrame(refused, columns=["file", "reason", "detail"])

    files.change(fill, [files, transcripts], table)
    transcripts.change(fill, [files, transcripts], table)
    add.click(keep, [files, table, language], [result, rejected])


# --- dataset -------------------------------------------------------------------------------------


def _dataset_tab(ctx: Context, user: Callable[[gr.Request], str], tab: gr.Tab) -> None:
    total = gr.Markdown(elem_id="dataset-total")
    clips = gr.Dataframe(headers=["id", "file", "seconds", "language", "transcript"],
                         label="Clips", interactive=False, elem_id="dataset-clips",
                         max_height=400)
    with gr.Row():
        chosen = gr.Dropdown([], label="Clip", scale=2, elem_id="dataset-clip")
        refresh = gr.Button("Refresh", scale=1)
    playback = gr.Audio(type="filepath", label="Playback", interactive=False)
    text = gr.Textbox(label="Transcript of this clip")
    with gr.Row():
        save = gr.Button("Save transcript")
        delete = gr.Button("Delete clip", variant="stop")
    with gr.Accordion("Add a Hugging Face or Granary source", open=False):
        kind = gr.Radio(["hub", "granary"], value="hub", label="Kind")
        dataset = gr.Textbox(label="Hub dataset id or folder (hub)",
                             placeholder="mozilla-foundation/common_voice_17_0")
        with gr.Row():
            config = gr.Textbox(label="Config / subset (hub)")
            split = gr.Textbox("train", label="Split (hub)")
            text_column = gr.Textbox("text", label="Text column (hub)")
        with gr.Row():
            subset = gr.Textbox(label="Granary subset, e.g. sv_voxpopuli (granary)")
            audio_root = gr.Textbox(label="Audio root on the server (granary)")
            max_samples = gr.Number(1000, label="Max samples", minimum=1, maximum=1_000_000,
                                    precision=0)
        with gr.Row():
            add_source = gr.Button("Add source")
            clear_sources = gr.Button("Remove all sources")
        sources = gr.JSON(label="Extra sources (read by the run's prepare step)")
    language = gr.Dropdown(LANGUAGE_CHOICES, value="auto", label="Language for clips without "
                           "one")
    build = gr.Button("Build dataset", variant="primary", elem_id="dataset-build")
    built = gr.Markdown(elem_id="dataset-summary")
    rejected = gr.Dataframe(headers=["source", "reason", "detail"], label="Rejected by prepare",
                            interactive=False)

    def show(request: gr.Request):
        workspace = ctx.workspace(user(request))
        rows = workspace.clips()
        minutes = sum(row.get("duration", 0) for row in rows.values()) / 60
        table = pandas.DataFrame(
            [(key, row.get("name", ""), row.get("duration", 0), row.get("language") or "",
              row["text"]) for key, row in rows.items()],
            columns=["id", "file", "seconds", "language", "transcript"])
        choices = [(f"{key} — {row['text'][:40]}", key) for key, row in rows.items()]
        extra = [source.model_dump(mode="json") for source in workspace.sources()]
        return (f"**{len(rows)} clips, {minutes:.1f} minutes** in your workspace", table,
                gr.update(choices=choices, value=None), extra)

    def pick(key: str | None, request: gr.Request):
        row = ctx.workspace(user(request)).clips().get(key or "")
        if row is None:
            return None, ""
        return str(ctx.workspace(user(request)).recordings / row["audio_path"]), row["text"]

    @friendly
    def edit(key: str | None, value: str, request: gr.Request):
        ctx.workspace(user(request)).edit(key or "", value)
        return show(request)

    @friendly
    def remove(key: str | None, request: gr.Request):
        ctx.workspace(user(request)).delete(key or "")
        return show(request)

    @friendly
    def add_extra(kind_value, dataset_value, config_value, split_value, column, subset_value,
                  root, limit, request: gr.Request):
        if kind_value == "hub":
            source: Any = HubSource(dataset=dataset_value.strip(), config=config_value or None,
                                    split=split_value or "train", text_column=column or "text",
                                    max_samples=int(limit or 0) or None)
        else:
            source = GranarySource(subset=subset_value.strip(), audio_root=Path(root.strip()),
                                   max_samples=int(limit or 0) or None)
        handlers.add_source(ctx, user(request), source)
        return show(request)

    def clear(request: gr.Request):
        ctx.workspace(user(request)).set_sources([])
        return show(request)

    @friendly
    def prepare(code: str, request: gr.Request):
        summary, refused = ctx.workspace(user(request)).build(None if code == "auto" else code)
        rows = pandas.DataFrame([(r.name, r.reason, r.detail) for r in refused],
                                columns=["source", "reason", "detail"])
        return "\n\n".join(summary.lines()), rows

    outputs = [total, clips, chosen, sources]
    tab.select(show, None, outputs)
    refresh.click(show, None, outputs)
    chosen.change(pick, chosen, [playback, text])
    save.click(edit, [chosen, text], outputs)
    delete.click(remove, chosen, outputs)
    add_source.click(add_extra, [kind, dataset, config, split, text_column, subset, audio_root,
                                 max_samples], outputs)
    clear_sources.click(clear, None, outputs)
    build.click(prepare, language, [built, rejected])


# --- train and runs ------------------------------------------------------------------------------


def _train_tab(ctx: Context, user: Callable[[gr.Request], str]) -> None:
    defaults = TrainForm()
    with gr.Row():
        name = gr.Textbox(label="Run name (optional; prefixed with your user name)",
                          max_length=RUN_NAME_ROOM, elem_id="train-name")
        base_model = gr.Dropdown(list(handlers.BASE_MODELS), value=defaults.base_model,
                                 allow_custom_value=True, label="Base model",
                                 elem_id="train-base")
    with gr.Row():
        mode = gr.Radio([("LoRA (16-24 GB GPU)", "lora"), ("Full (80 GB GPU)", "full")],
                        value=defaults.mode, label="Mode")
        language = gr.Dropdown(LANGUAGE_CHOICES, value=defaults.language, label="Language")
        gpus = gr.Dropdown(list(handlers.GPU_PROFILES), value=defaults.gpu_profile,
                           label="GPU profile", elem_id="train-gpus")
    with gr.Row():
        max_steps = gr.Slider(0, 5000, value=defaults.max_steps, step=1,
                              label="Max steps (0 = train for the epochs)",
                              elem_id="train-max-steps")
        epochs = gr.Slider(0.5, 20, value=defaults.epochs, step=0.5, label="Epochs")
    with gr.Accordion("Advanced", open=False):
        with gr.Row():
            learning_rate = gr.Number(defaults.learning_rate, minimum=1e-7, maximum=1e-2,
                                      label="Learning rate")
            batch_size = gr.Slider(1, 64, value=defaults.batch_size, step=1,
                                   label="Batch size (clips per device)")
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
    with gr.Row():
        preview = gr.Button("Preview", elem_id="train-preview")
        launch = gr.Button("Launch", variant="primary", elem_id="train-launch")
    spec_view = gr.Code(language="yaml", label="Run spec", lines=12, max_lines=80,
                        elem_id="train-spec")
    run_view = gr.Code(language="yaml", label="FineTuneRun (Kubernetes)", lines=12, max_lines=80,
                       visible=ctx.kubernetes,
                       elem_id="train-run-yaml")
    launched = gr.Markdown(elem_id="train-status")
    inputs = [name, base_model, mode, language, gpus, max_steps, epochs, learning_rate,
              batch_size, grad_accum, lora_rank, lora_alpha, eval_fraction, publish_after]

    def with_form(action: Callable[[str, TrainForm], Any]) -> Callable[..., Any]:
        # Gradio injects gr.Request only into parameters it can see, so they are spelled out.
        @friendly
        def handler(name, base_model, mode, language, gpus, max_steps, epochs, learning_rate,
                    batch_size, grad_accum, lora_rank, lora_alpha, eval_fraction,
                    publish_after, request: gr.Request):
            return action(user(request), TrainForm(
                name, base_model, mode, language, gpus, max_steps, epochs, learning_rate,
                batch_size, grad_accum, lora_rank, lora_alpha, eval_fraction, publish_after))

        return handler

    def start(name: str, form: TrainForm) -> str:
        status = handlers.launch(ctx, name, form)
        return f"Launched **{status.name}** ({status.phase}); follow it in the Runs tab."

    show = with_form(lambda name, form: handlers.preview(ctx, name, form))
    launched_text = with_form(start)
    preview.click(show, inputs, [spec_view, run_view])
    launch.click(launched_text, inputs, launched)


def _runs_tab(ctx: Context, user: Callable[[gr.Request], str]) -> None:
    table = gr.Dataframe(headers=["run", "phase", "progress", "WER base → tuned", "updated"],
                         label="Your runs", interactive=False, elem_id="runs-table")
    chosen = gr.Dropdown([], label="Run", elem_id="runs-choice")
    phase = gr.Markdown(elem_id="run-phase")
    with gr.Row():
        loss = gr.LinePlot(x="step", y="value", color="metric", label="Training loss",
                           elem_id="run-loss")
        scores = gr.BarPlot(x="score", y="percent", color="model", sort=list(SCORE_BARS),
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
        rows = [(s.name, s.phase, handlers.progress(s), _wer(s.metrics), s.updated)
                for s in runs]
        names = [s.name for s in runs]
        value = current if current in names else (names[-1] if names else None)
        return (pandas.DataFrame(rows, columns=["run", "phase", "progress", "WER base → tuned",
                                                "updated"]),
                gr.update(choices=names, value=value))

    @friendly
    def page(run: str | None, request: gr.Request):
        if not run:
            return "Launch a run in the Train tab.", None, None, "", "", gr.update(visible=False)
        view = handlers.run_page(ctx, user(request), run)
        status = view.status
        text = f"### {run}: {status.phase}\n{view.progress}"
        if view.explanation:
            text += f"\n\n{view.explanation}"
        curve = pandas.DataFrame([(step, value, "loss") for step, value in
                                  view.curves.get("loss", [])],
                                 columns=["step", "value", "metric"])
        bars = pandas.DataFrame(
            [(label, model, 100 * view.metrics[key]) for label, (model, key) in SCORE_BARS.items()
             if key in view.metrics], columns=["score", "model", "percent"])
        links = "\n".join(f"- `{line.strip()}`" for line in view.published)
        # Pending and Queued runs can be cancelled too
        return text, curve, bars, links, view.logs, gr.update(visible=not view.finished)

    @friendly
    def stop(run: str | None, request: gr.Request):
        status = handlers.cancel(ctx, user(request), run or "")
        return f"### {status.name}: {status.phase}\ncancel requested"

    outputs = [phase, loss, scores, published, logs, cancel]  # cancel: only while it runs
    timer.tick(listing, chosen, [table, chosen], show_progress="hidden")
    timer.tick(page, chosen, outputs, show_progress="hidden")
    chosen.change(page, chosen, outputs)
    cancel.click(stop, chosen, phase)


def _wer(metrics: dict[str, float]) -> str:
    if "wer" not in metrics:
        return ""
    return f"{100 * metrics.get('base_wer', float('nan')):.1f}% → {100 * metrics['wer']:.1f}%"


# --- publish and try it ---------------------------------------------------------------------


def _publish_tab(ctx: Context, user: Callable[[gr.Request], str], tab: gr.Tab) -> None:
    gr.Markdown("Publish a finished run. Hub repositories are private by default; the Hub "
                "token is the server's (HF_TOKEN / its Secret) and is never entered here.")
    run = gr.Dropdown([], label="Finished run", elem_id="publish-run")
    destination = gr.Radio([("Local registry", "local"), ("Hugging Face Hub", "hub")],
                           value="local", label="Destination", elem_id="publish-to")
    repo = gr.Textbox(label="Hub repository (owner/name)", placeholder="alice/my-voice",
                      visible=False, elem_id="publish-repo")
    with gr.Row():
        private = gr.Checkbox(True, label="Private (recommended: voice is biometric data)",
                              visible=False, elem_id="publish-private")
        dataset = gr.Checkbox(False, label="Also publish the dataset")
        space = gr.Checkbox(False, label="Also create a demo Space")
    button = gr.Button("Publish", variant="primary", elem_id="publish-button")
    status = gr.Markdown(elem_id="publish-status")
    models = gr.Markdown(elem_id="publish-models")

    def refresh(request: gr.Request):
        name = user(request)
        finished = [s.name for s in handlers.my_runs(ctx, name) if s.phase == "Succeeded"
                    and RunFolder.named(ctx.home, s.name).final.is_dir()]
        published = handlers.my_models(ctx, name)
        listing = "\n".join(f"- `{model}`" for model in published) or "nothing published yet"
        return gr.update(choices=finished, value=finished[-1] if finished else None), \
            f"**Your models in the local registry:**\n{listing}"

    @friendly
    def start(name, where, hub_repo, is_private, with_dataset, with_space,
              request: gr.Request):
        form = PublishForm(where, hub_repo, is_private, with_dataset, with_space)
        launched = handlers.publish(ctx, user(request), name or "", form)
        return (f"Publishing as run **{launched.name}**; when it has succeeded the model is "
                "listed below and in Try it (the run page shows where it went).")

    def hub_fields(where: str):
        return gr.update(visible=where == "hub"), gr.update(visible=where == "hub")

    tab.select(refresh, None, [run, models])
    destination.change(hub_fields, destination, [repo, private])  # only the Hub needs them
    button.click(start, [run, destination, repo, private, dataset, space], status)
    status.change(refresh, None, [run, models])


def _try_tab(ctx: Context, user: Callable[[gr.Request], str], tab: gr.Tab) -> None:
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
    note = gr.Markdown(elem_id="try-status")
    with gr.Row():
        base = gr.Textbox(label="Base model", lines=4, max_lines=8, elem_id="try-base")
        tuned = gr.Textbox(label="Fine-tuned model", lines=4, max_lines=8, elem_id="try-tuned")

    def models(request: gr.Request):
        found = handlers.my_models(ctx, user(request))
        return gr.update(choices=found, value=found[0] if found else None)

    @friendly
    def run(chosen: str | None, path: str | None, code: str, request: gr.Request):
        started = time.monotonic()
        result = handlers.try_it(ctx, user(request), chosen or "", path, code)
        return (result["base"], result["tuned"], f"{result['model']} vs {result['base_model']} "
                f"({time.monotonic() - started:.1f} s)")

    tab.select(models, None, model)
    button.click(run, [model, audio, language], [base, tuned, note])


# --- the process -------------------------------------------------------------------------------


def login_options(settings: UiSettings) -> dict[str, Any]:
    """Gradio's launch arguments for `settings.auth`; reads and checks the users file."""
    if settings.auth == "password":
        return {"auth": password_check(read_users(settings))}
    if settings.auth == "proxy":
        return {"auth_dependency": proxy_user(settings)}
    return {}


def launch(ctx: Context, host: str, port: int, login: dict[str, Any],
           block: bool = True) -> gr.Blocks:
    """Serve the app on host:port with `login` and every unused Gradio feature off; with
    `block=False` return the running app (its `.close()` stops it)."""
    app = build_app(ctx)
    app.queue(default_concurrency_limit=16)  # many users; handlers only wait on I/O
    app.launch(server_name=host, server_port=port, quiet=True, prevent_thread_lock=not block,
               **login, **GRADIO_FEATURES_OFF)
    return app


def serve(host: str, port: int, backend: str, namespace: str | None = None) -> None:
    """Check the settings, connect the backend and serve until interrupted."""
    settings = UiSettings()
    check_bind(host, settings)
    login = login_options(settings)  # a bad users file stops here, before any connection
    home = Settings().home
    client = Client(backend, namespace=namespace)  # type: ignore[arg-type]
    ctx = Context(client, settings, home, DemoServers(home / "ui"))
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"voxtune UI on http://{shown}:{port} (runs: {backend}, auth: {settings.auth}; "
          "Ctrl-C stops it)", flush=True)
    try:
        launch(ctx, host, port, login)
    finally:
        ctx.demo.stop()
