"""Model and dataset cards: pure functions of what was trained, measured and published.

No I/O here. The YAML front matter is what the Hub indexes (`huggingface_hub.ModelCard` parses
it); every value comes from the run — nothing is a template default. `base_model` is left out
when the base is not a Hub model (a local folder or the tiny-random preset), because the Hub
rejects cards whose `base_model` names no Hub model. The numbers (Results, `model-index`) are
`card_results`.
"""

from __future__ import annotations

from typing import Any

import yaml

from voxtune.publish.card_facts import (
    ModelFacts,
    cell,
    clips_text,
    finite,
    is_hub_id,
)
from voxtune.publish.card_results import generation_limit, model_index, results_section
from voxtune.spec import GranarySource, HubSource, RunSpec

LAYOUT_WORDS = {"adapter": "a LoRA adapter (load it on top of the base model with peft)",
                "merged": "a merged model (the LoRA adapter folded into the base weights; "
                          "the adapter itself is in `adapter/`)",
                "full": "fully fine-tuned weights (the audio encoder was "
                        "{frozen} during training)"}


# --- front matter -------------------------------------------------------------------------------


def license_of(facts: ModelFacts) -> str:
    """Voxtral and voxtune's tiny preset are Apache-2.0; for anything else the user must check."""
    if facts.base_preset or facts.spec.base_model.lower().startswith("mistralai/voxtral"):
        return "apache-2.0"
    return "other"


def languages(facts: ModelFacts) -> list[str]:
    found = set(facts.data.languages) if facts.data else set()
    if facts.spec.language:
        found.add(facts.spec.language)
    return sorted(found)


def source_datasets(spec: RunSpec) -> list[str]:
    """Hub datasets the training data came from (local folders are not Hub references)."""
    ids = [source.dataset for source in spec.data.sources
           if isinstance(source, (HubSource, GranarySource)) and is_hub_id(source.dataset)]
    return list(dict.fromkeys(ids))


def tags(facts: ModelFacts) -> list[str]:
    names = ["voxtral", "speech-recognition", "voxtune",
             "lora" if facts.spec.mode == "lora" else "full-fine-tuning"]
    if facts.layout == "merged":
        names.append("merged")
    if facts.smoke:
        names += ["smoke-test", "random-weights"]
    return names


def front_matter(facts: ModelFacts) -> dict[str, Any]:
    matter: dict[str, Any] = {}
    if is_hub_id(facts.spec.base_model) and not facts.base_preset:
        matter["base_model"] = facts.spec.base_model
    matter["library_name"] = "peft" if facts.layout == "adapter" else "transformers"
    matter["pipeline_tag"] = "automatic-speech-recognition"
    if languages(facts):
        matter["language"] = languages(facts)
    matter["license"] = license_of(facts)
    datasets = source_datasets(facts.spec)
    if facts.on_hub and facts.dataset_ref:
        datasets.insert(0, facts.dataset_ref)
    if datasets:
        matter["datasets"] = datasets
    matter["tags"] = tags(facts)
    if facts.evaluated:
        matter["model-index"] = model_index(facts)
    return matter


def with_front_matter(matter: dict[str, Any], body: str) -> str:
    yaml_text = yaml.safe_dump(matter, sort_keys=False, allow_unicode=True)
    return f"---\n{yaml_text}---\n\n{body.strip()}\n"


# --- body ---------------------------------------------------------------------------------------


def smoke_banner(facts: ModelFacts) -> str:
    if not facts.smoke:
        return ""
    return ("> **This is a smoke-test model.** Its base is voxtune's `tiny-random` preset: a "
            "tiny, randomly initialised Voxtral (about 0.5 M parameters) that only exercises "
            "the pipeline. It does not recognise speech; its transcripts and error rates "
            "below are noise.\n\n")


def summary_section(facts: ModelFacts) -> str:
    spec = facts.spec
    base = f"voxtune's `{facts.base_preset}` smoke preset" if facts.base_preset else \
        f"`{spec.base_model}`"
    frozen = "frozen" if spec.training.freeze_audio_encoder else "trained too"
    what = LAYOUT_WORDS[facts.layout].format(frozen=frozen)
    language = facts.language or "detected by the model"
    return (f"Speech recognition (ASR) model: {base} fine-tuned with "
            f"{'LoRA' if spec.mode == 'lora' else 'full fine-tuning'} by "
            f"voxtune (run `{spec.name}`, language: {language}). "
            f"This repository holds {what}, the processor (tokenizer and feature extractor), "
            "`metrics.json` and the resolved run spec `spec.yaml`.\n")


def data_section(facts: ModelFacts) -> str:
    lines = ["## Data", ""]
    data = facts.data
    if data is None:
        clips = facts.metrics.get("clips")
        lines.append("The prepared data folder was not published with this model"
                     + (f"; evaluation used {clips_text(clips)} held out." if clips else "."))
    else:
        lines += ["| split | clips | minutes |", "|---|---:|---:|"]
        lines += [f"| {split} | {count} | {data.minutes.get(split, 0):.1f} |"
                  for split, count in data.clips.items()]
        lines += [f"| total | {data.total_clips} | {data.total_minutes:.1f} |", ""]
        lines.append(f"Languages: {', '.join(data.languages) or 'not labelled'}. The eval split "
                     "is chosen by a hash of each clip's id, so no eval clip was trained on.")
    kinds = sorted({source.kind for source in facts.spec.data.sources})
    if kinds:
        lines += ["", f"Sources: {', '.join(kinds)}"
                  + "".join(f"; Hub dataset `{name}`" for name in source_datasets(facts.spec))
                  + "."]
    if facts.dataset_ref:
        lines += ["", f"The prepared clips are published as the dataset `{facts.dataset_ref}`."]
    return "\n".join(lines) + "\n"


def training_section(facts: ModelFacts) -> str:
    spec, training, metrics = facts.spec, facts.spec.training, facts.metrics
    rows = [("mode", "LoRA" if spec.mode == "lora" else "full fine-tuning"),
            ("base model", facts.base_preset or spec.base_model),
            ("optimizer steps", metrics.get("train_steps")),
            ("schedule", f"max {training.max_steps} steps" if training.max_steps
             else f"{training.epochs:g} epochs"),
            ("learning rate", f"{training.learning_rate:g} (cosine, "
                              f"{training.warmup_ratio:g} warm-up)"),
            ("batch", f"{training.batch_size} × {training.grad_accum} accumulation"),
            ("precision", training.precision), ("seed", training.seed)]
    if spec.mode == "lora":
        lora = training.lora
        targets = "language-model attention" + (" + MLP" if lora.mlp else "")
        rows += [("LoRA", f"r {lora.rank}, alpha {lora.alpha}, dropout {lora.dropout:g}, "
                          f"on {targets}" + ("; projector trained" if lora.projector else ""))]
    else:
        rows += [("audio encoder", "frozen" if training.freeze_audio_encoder else "trained")]
    rows += [("train loss", _number(metrics.get("train_loss"))),
             ("eval loss", _number(metrics.get("eval_loss"))),
             ("hardware", metrics.get("hardware")),
             ("peak memory", f"{metrics['peak_memory_gb']:g} GB"
              if finite(metrics.get("peak_memory_gb")) else None),
             ("wall time", f"{metrics['wall_time_s']:g} s"
              if finite(metrics.get("wall_time_s")) else None)]
    lines = ["## Training", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | {cell(value)} |" for key, value in rows if value is not None]
    return "\n".join(lines) + "\n"


def _number(value: Any) -> str | None:
    return f"{value:.4g}" if finite(value) else None


def loading_snippet(facts: ModelFacts) -> str:
    """Python that loads what was published and transcribes `speech.wav` (tested verbatim)."""
    revision = f", revision={facts.revision!r}" if facts.revision else ""
    lines = ["import math", ""] if generation_limit(facts).fixed is None else []
    lines += ["import soundfile"] if generation_limit(facts).fixed is None else []
    if facts.layout == "adapter":
        lines += ["from peft import PeftModel"]
    lines += ["from transformers import VoxtralForConditionalGeneration, VoxtralProcessor", ""]
    if facts.layout == "adapter" and facts.base_preset:
        lines += ["from voxtune.models.load import resolve",
                  "", f"model_id = {facts.model_ref!r}",
                  f"base_id = resolve({facts.base_preset!r})  # the exact base, built offline"]
    elif facts.layout == "adapter":
        lines += [f"model_id = {facts.model_ref!r}",
                  f"base_id = {facts.base_ref or facts.spec.base_model!r}"]
    else:
        lines += [f"model_id = {facts.model_ref!r}"]
    if facts.layout == "adapter":
        lines += ['base = VoxtralForConditionalGeneration.from_pretrained(base_id, dtype="auto")',
                  f"model = PeftModel.from_pretrained(base, model_id{revision})"]
    else:
        lines += ["model = VoxtralForConditionalGeneration.from_pretrained("
                  f'model_id, dtype="auto"{revision})']
    lines += [f"processor = VoxtralProcessor.from_pretrained(model_id{revision})"]
    if facts.window_seconds != 30:
        lines += [f"# this model encodes {facts.window_seconds:g}-s audio windows (real Voxtral: "
                  "30 s, no such line needed)",
                  "extractor = processor.feature_extractor",
                  "processor.audio_kwargs = {**processor.audio_kwargs, "
                  '"pad_to_multiple_of": extractor.n_samples,',
                  '                          "max_source_positions": extractor.nb_max_frames}']
    lines += ["",
              f"inputs = processor.apply_transcription_request(language={facts.language!r}, "
              'audio="speech.wav", model_id=model_id)',
              "inputs = inputs.to(model.device, dtype=model.dtype)",
              *_limit_lines(facts),
              "outputs = model.generate(**inputs, max_new_tokens=max_new_tokens, "
              "do_sample=False)",
              'new_tokens = outputs[:, inputs["input_ids"].shape[1]:]',
              "print(processor.batch_decode(new_tokens, skip_special_tokens=True)[0])"]
    return "\n".join(lines)


def openai_section(model_ref: str) -> str:
    """Serving the model behind OpenAI's transcription API, and the official client's call
    (the card's and the Space README's; voxtune.models.serve is what answers it)."""
    return "\n".join([
        "Or serve it behind OpenAI's transcription API (`pip install voxtune`; on GPUs vLLM "
        "serves it too, from `vllm.json`) and call it with any OpenAI client:", "",
        "```bash", f"voxtune serve {model_ref} --port 7861", "```", "", "```python",
        "from openai import OpenAI", "",
        'client = OpenAI(base_url="http://localhost:7861/v1", api_key="unused")',
        'with open("speech.wav", "rb") as audio:',
        f"    print(client.audio.transcriptions.create(model={model_ref!r}, file=audio).text)",
        "```"])


def _limit_lines(facts: ModelFacts) -> list[str]:
    """The snippet's token limit: the evaluation's, so it never cuts off a transcript."""
    limit = generation_limit(facts)
    if limit.fixed is not None:
        return [f"max_new_tokens = {limit.fixed}  # as the evaluation (eval.max_new_tokens)"]
    return ["# as the evaluation: tokens per second of audio, at least the longest reference",
            'seconds = soundfile.info("speech.wav").duration',
            f"max_new_tokens = max({limit.floor}, math.ceil(seconds * {limit.per_second:g}))"]


def usage_section(facts: ModelFacts) -> str:
    needs = "transformers, peft" if facts.layout == "adapter" else "transformers"
    if facts.base_preset and facts.layout == "adapter":
        needs += ", voxtune (it builds the tiny base)"
    lines = ["## How to use", "",
             f"Needs {needs} and `mistral-common[audio]`. `language` is an ISO-639-1 code, or "
             "`None` to let the model detect it.", "", "```python", loading_snippet(facts),
             "```"]
    lines += ["", openai_section(facts.model_ref)]
    if facts.layout == "merged":
        lines += ["", "The LoRA adapter is in `adapter/`: "
                  "`PeftModel.from_pretrained(base, model_id, subfolder=\"adapter\")`."]
    if facts.space_ref:
        lines += ["", f"Try it in the demo Space `{facts.space_ref}` (it loads this model, and "
                  "shows an error rather than falling back to the base model)."]
    return "\n".join(lines) + "\n"


def limitations_section(facts: ModelFacts) -> str:
    data = facts.data
    amount = (f"{data.total_minutes:.1f} minutes ({data.total_clips} clips)" if data
              else "a small amount of speech")
    lines = ["## Limitations", "",
             f"- Fine-tuned on {amount} from a few speakers: it works best on the voices, "
             "accents and vocabulary it was trained on and may be worse than the base model "
             "on other speech.",
             "- Error rates come from a small held-out set and have wide uncertainty.",
             "- Like every speech recogniser it can produce fluent text for noise or silence; "
             "check transcripts before relying on them."]
    if facts.smoke:
        lines.append("- This is a smoke-test model with random weights: do not use it for "
                     "anything but testing the pipeline.")
    if license_of(facts) == "other":
        lines.append(f"- License: check the base model `{facts.spec.base_model}`'s license; "
                     "this model inherits it.")
    return "\n".join(lines) + "\n"


def privacy_section(facts: ModelFacts) -> str:
    if facts.on_hub:
        where = ("This repository is **private**." if facts.private else
                 "This repository is **public**: make sure every speaker agreed to that.")
    else:
        where = ("This copy lives in a local model registry; if you upload it, keep the "
                 "repository private unless every speaker agreed to publication.")
    return ("## Privacy\n\n"
            "Voice recordings are biometric personal data. A model fine-tuned on someone's "
            "speech can reveal how they speak and can reproduce phrases from its training "
            "data; the sample transcripts above are real eval clips. " + where +
            " Publish models and datasets only with the speakers' informed consent, and "
            "delete them when consent is withdrawn.\n")


def reproduce_section(facts: ModelFacts) -> str:
    return ("## Reproduce\n\n"
            "`spec.yaml` is the resolved run spec this model was trained with; "
            "`voxtune run spec.yaml` repeats the run (data source paths may need adjusting). "
            "`metrics.json` holds every number above and each eval clip's transcripts.\n")


def render_model_card(facts: ModelFacts) -> str:
    """The README.md for a published model."""
    body = "\n".join([
        f"# {facts.name}\n", smoke_banner(facts) + summary_section(facts), data_section(facts),
        training_section(facts), results_section(facts), usage_section(facts),
        limitations_section(facts), privacy_section(facts), reproduce_section(facts)])
    return with_front_matter(front_matter(facts), body)
