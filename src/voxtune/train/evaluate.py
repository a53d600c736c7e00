"""Generation-based WER/CER on the held-out split, for the base and the tuned model.

    voxtune evaluate --model RUN_DIR_OR_MODEL --data PREPARED_DIR

Text is normalised the same way for references and hypotheses before scoring: lowercase and
punctuation removal are on by default (EvalSpec), then whitespace is collapsed. Degenerate
outputs are counted, not hidden: empty transcripts, runaway repetition (a compression ratio
above 2.4, the threshold Whisper uses to detect loops) and generations cut at max_new_tokens.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jiwer
import soundfile
import torch

from voxtune.data.manifest import Clip, read_manifest
from voxtune.errors import UserError
from voxtune.spec import EvalSpec, RunSpec, read_yaml

REPETITION_RATIO = 2.4


@dataclass(frozen=True)
class Transcript:
    text: str
    hit_max_length: bool


@dataclass
class Scores:
    wer: float
    cer: float
    clips: int
    empty: int
    repetitive: int
    max_length: int


def normalizer(spec: EvalSpec) -> jiwer.Compose:
    steps: list[Any] = []
    if spec.lowercase:
        steps.append(jiwer.ToLowerCase())
    if spec.remove_punctuation:
        steps.append(jiwer.RemovePunctuation())
    return jiwer.Compose([*steps, jiwer.RemoveMultipleSpaces(), jiwer.Strip()])


def is_repetitive(text: str) -> bool:
    data = text.encode("utf-8")
    return len(data) > 24 and len(data) / len(zlib.compress(data)) > REPETITION_RATIO


def score(references: list[str], transcripts: list[Transcript], spec: EvalSpec) -> Scores:
    """WER and CER over all clips (corpus level, as jiwer computes them) plus degenerate counts."""
    normalise = normalizer(spec)
    pairs = [(normalise(ref), normalise(hyp.text)) for ref, hyp in zip(references, transcripts,
                                                                       strict=True)]
    pairs = [(ref, hyp) for ref, hyp in pairs if ref]  # nothing to score against
    refs, hyps = [ref for ref, _ in pairs], [hyp for _, hyp in pairs]
    return Scores(
        wer=float(jiwer.wer(refs, hyps)) if refs else float("nan"),
        cer=float(jiwer.cer(refs, hyps)) if refs else float("nan"),
        clips=len(transcripts),
        empty=sum(not normalise(t.text) for t in transcripts),
        repetitive=sum(is_repetitive(t.text) for t in transcripts),
        max_length=sum(t.hit_max_length for t in transcripts),
    )


@torch.inference_mode()
def transcribe(model: Any, processor: Any, clips: list[Clip], prepared: Path,
               language: str | None, max_new_tokens: int) -> list[Transcript]:
    """Greedy transcription of each clip, in order, with the clip's (or run's) language."""
    model.eval()
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    results: list[Transcript] = []
    for clip in clips:  # one request per clip: languages differ and prompts must not mix
        audio, rate = soundfile.read(prepared / clip.audio_path, dtype="float32")
        inputs = processor.apply_transcription_request(
            language=clip.language or language, audio=audio, sampling_rate=rate, format="wav",
            model_id=getattr(model, "name_or_path", None) or "voxtral")
        inputs = {key: value.to(device) for key, value in inputs.items()}
        inputs["input_features"] = inputs["input_features"].to(dtype)
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new_tokens = output[0, inputs["input_ids"].shape[1]:]
        finished = bool((new_tokens == processor.tokenizer.eos_token_id).any())
        text = processor.decode(new_tokens, skip_special_tokens=True)
        results.append(Transcript(text.strip(), hit_max_length=not finished and len(
            new_tokens) >= max_new_tokens))
    return results


def samples(clips: list[Clip], base: list[str] | None,
            tuned: list[str] | None) -> list[dict[str, str | None]]:
    """Per-clip reference / base / tuned transcripts for metrics.json, the card and the UI."""
    return [{"id": clip.id, "reference": clip.text,
             "base": base[index] if base else None,
             "tuned": tuned[index] if tuned else None} for index, clip in enumerate(clips)]


def as_metrics(prefix: str, scores: Scores) -> dict[str, float]:
    return {f"{prefix}{key}": value for key, value in asdict(scores).items()}


def load_tuned(model: str) -> tuple[Any, Any, RunSpec | None]:
    """Load a run folder's final/ (adapter on its base, or full weights), or any model id/path.

    Returns the model, its processor, and the RunSpec it was trained with (None for others).
    """
    from voxtune.train.model import load, pick_dtype

    path = Path(model)
    final = path / "final" if (path / "final").is_dir() else path
    spec_file = final / "spec.yaml"
    spec = RunSpec.model_validate(read_yaml(spec_file)) if spec_file.exists() else None
    if (final / "adapter_config.json").exists():
        from peft import PeftModel

        if spec is None:
            raise UserError(f"{final}: adapter without spec.yaml; cannot tell its base model")
        # the base in the dtype it was trained under, so results match the run's metrics.json
        device = "cuda" if torch.cuda.is_available() else "cpu"
        base, processor = load(spec.base_model, pick_dtype(spec.training.precision, device))
        return PeftModel.from_pretrained(base, final).to(device), processor, spec
    loaded, processor = load(str(final) if final.exists() else model)
    return loaded, processor, spec


def evaluate_folder(model: str, prepared: Path, split: str = "eval",
                    language: str | None = None) -> dict[str, Any]:
    """`voxtune evaluate`: scores plus each clip's reference and hypothesis."""
    clips = read_manifest(prepared, split)
    if not clips:
        raise UserError(f"{prepared}: no {split} clips")
    loaded, processor, spec = load_tuned(model)
    settings = spec.eval if spec else EvalSpec()
    language = language or (spec.language if spec else None)
    transcripts = transcribe(loaded, processor, clips, prepared, language,
                             settings.max_new_tokens)
    scores = score([clip.text for clip in clips], transcripts, settings)
    return {**asdict(scores), "samples": [
        {"id": clip.id, "reference": clip.text, "hypothesis": transcript.text}
        for clip, transcript in zip(clips, transcripts, strict=True)]}


def export_merged(run: str, output: Path) -> Path:
    """Fold a LoRA adapter into its base and save a standalone model + processor + spec.

    The result loads with transformers alone (no peft) and runs as fast as the base model.
    """
    from peft import PeftModel

    model, processor, spec = load_tuned(run)
    if not isinstance(model, PeftModel):
        raise UserError(f"{run}: not a LoRA run (final/ holds full weights already)")
    merged = model.merge_and_unload()
    staging = output.with_name(f".{output.name}.tmp")
    merged.save_pretrained(staging)
    processor.save_pretrained(staging)
    if spec is not None:
        (staging / "spec.yaml").write_text(spec.to_yaml(), encoding="utf-8")
    if output.exists():
        raise UserError(f"{output} already exists; remove it or choose another --output")
    staging.rename(output)
    return output
