"""The upstream recipe the benchmarks compare against, reimplemented (Mistral's Voxtral
fine-tuning examples: a datasets table decoded per row, the whole audio front end in the
collator, their TrainingArguments and LoRA), and the espeak-ng corpus both sides train on.
Imported by the sibling scripts train.py, features.py and gpu.py.
"""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LANGUAGE = "en"  # upstream hard-codes it; our corpus is English, so both prompts are identical


UPSTREAM_MODEL_ID = "mistralai/Voxtral-Mini-3B-2507"  # only written into the request


UPSTREAM_MAX_TEXT_TOKENS = 256  # upstream truncates transcripts to this


# Dense bf16 tensor-core peaks (FLOP/s) for MFU; first substring of the device name that matches.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
              "A10": 125e12}


def make_corpus(folder: Path, clips: int) -> Path:
    """`clips` espeak-ng clips prepared by voxtune (16 kHz FLAC + manifest); all go to train."""
    from voxtune.data.prepare import prepare
    from voxtune.data.synth import plan, synthesize
    from voxtune.spec import DataSpec, JsonlSource

    jsonl = synthesize(folder / "synth", plan(clips, "mixed", seed=1))
    with contextlib.redirect_stderr(io.StringIO()):
        prepare(DataSpec(sources=[JsonlSource(path=jsonl)]), folder / "prepared",
                language=LANGUAGE, workers=1)
    return folder / "prepared"


def upstream_rows(clips: list[Any], prepared: Path) -> Any:
    """A datasets table like upstream's, its audio decoded on every row access (at 16 kHz)."""
    from datasets import Audio, Dataset

    from voxtune.data.audio import SAMPLE_RATE
    from voxtune.train.collator import read_audio

    table = Dataset.from_list([{"audio": str(prepared / clip.audio_path), "text": clip.text}
                               for clip in clips]).cast_column("audio", Audio(decode=False))

    def decode_rows(batch: dict) -> dict:
        return {"text": batch["text"],
                "audio": [{"array": read_audio(Path(audio["path"])), "sampling_rate": SAMPLE_RATE}
                          for audio in batch["audio"]]}

    return table.with_transform(decode_rows)


@dataclass(frozen=True)
class UpstreamCollator:
    """What upstream's `VoxtralDataCollator` does per batch: the whole audio front end, then
    prompt + transcript, right-padded. Like upstream it passes no sampling_rate (one warning)."""

    processor: Any

    def __call__(self, rows: list[dict]) -> dict:
        from voxtune.train.collator import IGNORE_INDEX, pad

        tokenizer = self.processor.tokenizer
        prompt = self.processor.apply_transcription_request(
            language=LANGUAGE, model_id=UPSTREAM_MODEL_ID,
            audio=[row["audio"]["array"] for row in rows], format=["WAV"] * len(rows),
            return_tensors="pt")
        texts = tokenizer([row["text"] for row in rows], add_special_tokens=False, padding=False,
                          truncation=True, max_length=UPSTREAM_MAX_TEXT_TOKENS)["input_ids"]
        input_ids, masks, labels = [], [], []
        for ids, mask, text in zip(prompt["input_ids"].tolist(), prompt["attention_mask"].tolist(),
                                   texts, strict=True):
            input_ids.append(ids + text)
            masks.append(mask + [1] * len(text))
            labels.append([IGNORE_INDEX] * len(ids) + text)
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.eos_token_id
        batch = {"input_ids": pad(input_ids, pad_id), "attention_mask": pad(masks, 0),
                 "labels": pad(labels, IGNORE_INDEX)}
        batch.update({k: v for k, v in prompt.items() if k not in ("input_ids", "attention_mask")})
        return batch


def upstream_arguments(output: Path, steps: int, batch_size: int, grad_accum: int,
                       precision: str, workers: int, on_gpu: bool) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(output), max_steps=steps, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum, learning_rate=5e-5,
        bf16=precision == "bf16", fp16=precision == "fp16", logging_steps=10,
        save_strategy="no", report_to="none", remove_unused_columns=False,
        dataloader_num_workers=workers,  # upstream: 1
        use_cpu=not on_gpu,  # not upstream's: without it TrainingArguments refuses bf16 on a CPU
        disable_tqdm=True)


def upstream_lora(model: Any) -> Any:
    """train_lora.py's adapters: r 8, α 32, no dropout on q/k/v/o by plain names, which also
    match the audio encoder's q/k/v — so backward runs through the frozen encoder."""
    from peft import LoraConfig, get_peft_model

    for parameter in model.model.audio_tower.parameters():
        parameter.requires_grad = False
    return get_peft_model(model, LoraConfig(
        r=8, lora_alpha=32, lora_dropout=0.0, bias="none",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="SEQ_2_SEQ_LM"))


@contextlib.contextmanager
def quiet():
    """Keep progress bars and per-step logs out of the tables; show them if something fails."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield
    except BaseException:
        sys.stderr.write(buffer.getvalue())
        raise
