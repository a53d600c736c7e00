"""The demo Space: a Gradio app that serves THE fine-tuned model, generated as a folder.

    space/README.md             Space front matter (sdk gradio, pinned sdk_version) + notes
    space/app.py                the Gradio UI; imports the inference module below
    space/voxtune_inference.py  voxtune.models.inference, copied byte for byte
    space/requirements.txt      pinned versions (the ones voxtune is tested with)

One inference path: the card's WER, the Space, the in-cluster demo and the UI's Try-it all
call `voxtune.models.inference` — the Space through a verbatim copy, because voxtune itself is
not installed on a Space — with the same generation settings (the token limit the run's
evaluation used, `inference.TokenLimit`, is written into app.py). The app loads the model by
Hub id (a private one with the HF_TOKEN Space
secret — a read-only token, see publish.step.space_token — which the Hub passes as an
environment variable) or by folder, and raises gr.Error when
loading fails: it never falls back to the base model. No token is ever written into these files.
Gradio is imported only by the generated app, never by voxtune.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from voxtune.models import inference
from voxtune.publish.card import openai_section

INFERENCE_MODULE = "voxtune_inference.py"
GRADIO_VERSION = "6.31.0"
PYTHON_VERSION = "3.11"
# What the app needs, at the versions voxtune is tested with (a unit test checks they match the
# installed ones). gradio itself comes from sdk_version on the Hub; listed for local runs.
SPACE_PINS = {
    "gradio": GRADIO_VERSION,
    "torch": "2.13.0",
    "transformers": "5.24.0",
    "peft": "0.21.2",
    "mistral-common[audio]": "1.13.1",
    "huggingface_hub": "2.4.0",
    "numpy": "2.3.5",
    "soundfile": "0.14.0",
    "soxr": "1.1.0",
}


# What each Hub Space hardware tier gives the model: GPU memory, or RAM on the CPU tiers (GB,
# as the Hub lists them). The app loads the fine-tuned model once, in bf16, and no base.
SPACE_MEMORY_GB = {"cpu-basic": 16, "cpu-upgrade": 32, "t4-small": 16, "t4-medium": 16,
                   "l4x1": 24, "a10g-small": 24, "a10g-large": 24, "l40sx1": 48,
                   "a100-large": 80, "h100": 80}
DEFAULT_SPACE_HARDWARE = "cpu-basic"  # the free tier, what the Hub gives a Space unless asked
SERVE_HEADROOM = 1.25  # generation's KV cache and activations for one clip, allocator slack


def space_hardware_problem(parameters: int, hardware: str | None) -> str | None:
    """Why the Space's hardware cannot hold a model of `parameters` (None when it can, or when
    the tier is one this table does not know: the Hub has the last word)."""
    name = hardware or DEFAULT_SPACE_HARDWARE
    have = SPACE_MEMORY_GB.get(name)
    need = parameters * 2 * SERVE_HEADROOM / 1e9
    if have is None or need <= have:
        return None
    larger = [tier for tier, gb in sorted(SPACE_MEMORY_GB.items(), key=lambda kv: kv[1])
              if gb >= need]
    fix = (f"set publish.space_hardware to {larger[0]} ({SPACE_MEMORY_GB[larger[0]]} GB) or "
           "larger" if larger else "no Space tier holds it; serve it in your cluster instead")
    return (f"the demo Space loads the model in bf16 (≈{need:.0f} GB with headroom) and {name} "
            f"has {have} GB: {fix}, or publish without a Space")


@dataclass(frozen=True)
class SpaceFacts:
    name: str  # the published model's name
    model_ref: str  # Hub repo id or folder the app loads
    on_hub: bool
    private: bool
    revision: str | None = None
    language: str | None = None  # the run's language: the app's default choice
    smoke: bool = False
    # the run's token limit, so the Space transcribes as the card's WER was measured
    limit: inference.TokenLimit = field(default_factory=inference.TokenLimit)
    loading: str = ""  # the model card's transformers snippet (card.loading_snippet)


def render_readme(facts: SpaceFacts) -> str:
    matter = {"title": f"{facts.name} demo"[:60], "emoji": "🎙️", "colorFrom": "indigo",
              "colorTo": "blue", "sdk": "gradio", "sdk_version": GRADIO_VERSION,
              "python_version": PYTHON_VERSION, "app_file": "app.py", "pinned": False,
              "short_description": "Speech recognition with a fine-tuned Voxtral"}
    if facts.on_hub:
        matter["models"] = [facts.model_ref]
    smoke = ("\n**Smoke test:** this model has random weights (voxtune's tiny-random preset); "
             "its transcripts are noise.\n" if facts.smoke else "")
    where = (f"This Space is **{'private' if facts.private else 'public'}**. "
             if facts.on_hub else "")
    transformers = (f"With transformers (as the model card shows):\n\n```python\n{facts.loading}\n"
                    "```\n\n" if facts.loading else "")
    body = f"""
# {facts.name} demo

Record or upload speech and get a transcript from `{facts.model_ref}`, a Voxtral model
fine-tuned with voxtune. If that model cannot be loaded the app shows the error; it never
falls back to the base model.
{smoke}
Run it locally: `pip install -r requirements.txt && python app.py`.

## Use the model from code

{transformers}{openai_section(facts.model_ref)}

## Privacy

{where}Recordings are sent to this app only to be transcribed and are not stored by it (Gradio
keeps them as temporary files while it runs). Voice is biometric data: share the demo only with
people who may hear and use this model. A private model is read with the `HF_TOKEN` Space
secret, a read-only token that voxtune sets when it publishes (never the publishing token
unless that was asked for); no token is stored in these files.
"""
    return f"---\n{yaml.safe_dump(matter, sort_keys=False, allow_unicode=True)}---\n{body}"


APP_TEMPLATE = '''\
"""{title}: transcribe speech with a fine-tuned Voxtral model.

Model: {model_ref}
Generated by voxtune. It loads the fine-tuned model (a LoRA adapter on its base, or merged
weights) and shows an error when that fails; it never falls back to the base model.
Run locally: pip install -r requirements.txt && python app.py
"""

from __future__ import annotations

import functools

import gradio as gr
from voxtune_inference import LANGUAGES, ModelLoadError, TokenLimit, load_model
from voxtune_inference import transcribe as run_model

# the fine-tuned model: Hub repo id or folder, and its Hub branch (None = main)
MODEL = {model_ref!r}
REVISION = {revision!r}
DEFAULT_LANGUAGE = {language!r}
TITLE = {title!r}
SMOKE_TEST = {smoke!r}  # random weights (voxtune's tiny-random preset): transcripts are noise
# tokens per second of audio, at least the longest eval reference: as the card's WER was measured
TOKEN_LIMIT = {limit!r}


@functools.cache  # a failed load is not cached: the next request tries again
def fine_tuned_model():
    return load_model(MODEL, revision=REVISION)


def model_status() -> str:
    try:
        return f"Model: {{fine_tuned_model().description}}"
    except ModelLoadError as error:
        return (f"**Error:** {{error}}. Transcription is off: this demo never falls back to the "
                "base model.")


def transcribe(audio, language: str) -> str:
    """Gradio handler: (rate, samples) from the microphone or an upload → transcript."""
    if audio is None:
        raise gr.Error("Record or upload some speech first.")
    try:
        model = fine_tuned_model()
    except ModelLoadError as error:
        raise gr.Error(str(error)) from None
    try:
        return run_model(model.model, model.processor, audio, language,
                         max_new_tokens=TOKEN_LIMIT).text
    except ValueError as error:
        raise gr.Error(str(error)) from None


def build_app() -> gr.Blocks:
    languages = dict(LANGUAGES)
    languages.setdefault(DEFAULT_LANGUAGE, DEFAULT_LANGUAGE)  # a language Voxtral does not list
    with gr.Blocks(title=TITLE) as demo:
        note = "Speech recognition with a fine-tuned Voxtral model."
        if SMOKE_TEST:
            note += " Smoke test: this model has random weights, so its transcripts are noise."
        gr.Markdown(f"# {{TITLE}}\\n\\n{{note}}")
        status = gr.Markdown("Loading the fine-tuned model…")
        audio = gr.Audio(sources=["microphone", "upload"], type="numpy", label="Speech",
                         elem_id="speech")
        choices = [(f"{{code}}: {{label}}", code) for code, label in languages.items()]
        language = gr.Dropdown(choices, value=DEFAULT_LANGUAGE, label="Language")
        button = gr.Button("Transcribe", variant="primary")
        transcript = gr.Textbox(label="Transcript", lines=4)
        button.click(transcribe, inputs=[audio, language], outputs=transcript)
        demo.load(model_status, outputs=status)
    return demo


demo = build_app()

if __name__ == "__main__":
    demo.launch()
'''


def render_app(facts: SpaceFacts) -> str:
    return APP_TEMPLATE.format(title=f"{facts.name} demo", model_ref=facts.model_ref,
                               revision=facts.revision, language=facts.language or "auto",
                               smoke=facts.smoke, limit=facts.limit)


def render_requirements() -> str:
    lines = ["# pinned to the versions voxtune tests the app with"]
    lines += [f"{package}=={version}" for package, version in SPACE_PINS.items()]
    return "\n".join(lines) + "\n"


def write_space(folder: Path, facts: SpaceFacts) -> Path:
    """Write the Space folder; the inference module is copied verbatim (one code path)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(render_readme(facts), encoding="utf-8")
    (folder / "app.py").write_text(render_app(facts), encoding="utf-8")
    (folder / "requirements.txt").write_text(render_requirements(), encoding="utf-8")
    (folder / INFERENCE_MODULE).write_bytes(Path(inference.__file__).read_bytes())
    return folder
