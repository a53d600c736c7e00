"""The file set a user loads, assembled from a trained run folder — and nothing else.

Layouts of a published model folder (local registry version or Hub repo):

    adapter   LoRA run:           adapter_config.json, adapter_model.safetensors, processor files,
                                  vllm-adapter/ (the adapter on the language model only)
    merged    LoRA run + --merge: config.json, model*.safetensors, processor files, adapter/,
                                  params.json + consolidated*.safetensors (the same weights in
                                  Mistral's layout, which vLLM loads: publish/consolidated.py)
    full      full fine-tuning:   config.json, model*.safetensors, processor files,
                                  params.json + consolidated*.safetensors
    all:      README.md (card), metrics.json, spec.yaml, vllm.json (how vLLM serves it:
              publish/vllm.py)

Files are copied by an allow-list of what `from_pretrained` reads, so optimizer, scheduler, RNG
and trainer state or checkpoints can never travel along, whatever lies in the run folder.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxtune.errors import UserError
from voxtune.run.layout import FINAL, METRICS, SPEC, RunFolder
from voxtune.spec import RunSpec, read_resolved_spec

ADAPTER_DIR = "adapter"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
WEIGHT_FILES = ("config.json", "generation_config.json", "model.safetensors",
                "model-*-of-*.safetensors", "model.safetensors.index.json")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tekken.json",
                   "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "chat_template.json")
LOADABLE = ADAPTER_FILES + WEIGHT_FILES + PROCESSOR_FILES
# Without config.json beside it, VoxtralProcessor cannot tell that tekken.json is a
# mistral-common tokenizer and loads a plain tokenizers one; this names the class.
TOKENIZER_HINT = {"tokenizer_class": "MistralCommonBackend"}


@dataclass(frozen=True)
class TrainedRun:
    """A run folder's final/ plus what the train step measured."""

    final: Path
    spec: RunSpec
    metrics: dict[str, Any]

    @property
    def run_dir(self) -> Path:
        return self.final.parent if self.final.name == FINAL else self.final

    @property
    def is_adapter(self) -> bool:
        return (self.final / "adapter_config.json").is_file()

    @property
    def base_ref(self) -> str | None:
        """The base an adapter was trained on, as peft recorded it (Hub id or folder)."""
        if not self.is_adapter:
            return None
        config = json.loads((self.final / "adapter_config.json").read_text(encoding="utf-8"))
        return config.get("base_model_name_or_path")

    @property
    def window_seconds(self) -> float:
        """The processor's audio window (30 s for every real Voxtral)."""
        path = self.final / "processor_config.json"
        config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        return float(config.get("feature_extractor", {}).get("chunk_length", 30))


def read_run(path: Path) -> TrainedRun:
    """A run folder (or its final/) → TrainedRun; UserError when it holds no trained model."""
    path = Path(path)
    final = (RunFolder(path).final if RunFolder(path).final.is_dir() else path).resolve()
    if not (final / SPEC).is_file() or not any(
            (final / name).is_file() for name in ("adapter_config.json", "config.json")):
        raise UserError(f"{path}: no trained model (expected final/ with adapter or weights and "
                        "spec.yaml, as `voxtune train` writes it)")
    run = TrainedRun(final, read_resolved_spec(final / SPEC), {})
    metrics_file = RunFolder(run.run_dir).metrics
    if metrics_file.is_file():
        run.metrics.update(json.loads(metrics_file.read_text(encoding="utf-8")))
    return run


def loadable(folder: Path, patterns: tuple[str, ...] = LOADABLE) -> list[Path]:
    """Top-level files of `folder` that a user loads (never training state)."""
    return sorted(path for path in folder.iterdir() if path.is_file()
                  and any(fnmatch.fnmatchcase(path.name, pattern) for pattern in patterns))


def copy_files(files: list[Path], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copyfile(path, target / path.name)


def stage_model(run: TrainedRun, target: Path, merge: bool) -> str:
    """Copy the loadable model into `target` (merging a LoRA adapter if asked); the layout."""
    if run.is_adapter and merge:
        from voxtune.models.merge import export_merged

        merged = export_merged(str(run.final), target / ".merged")
        copy_files(loadable(merged, WEIGHT_FILES + PROCESSOR_FILES), target)
        shutil.rmtree(merged)
        copy_files(loadable(run.final, ADAPTER_FILES), target / ADAPTER_DIR)
        layout = "merged"
    else:
        copy_files(loadable(run.final), target)
        layout = "adapter" if run.is_adapter else "full"
    from voxtune.publish.vllm import write_vllm_files  # it reads this module's file names

    write_vllm_files(run.final, target, run.spec.base_model if layout == "adapter" else None)
    if layout == "adapter" and not (target / "tokenizer_config.json").exists():
        (target / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_HINT, indent=2) + "\n")
    shutil.copyfile(run.final / SPEC, target / SPEC)
    if run.metrics:
        (target / METRICS).write_text(json.dumps(run.metrics, indent=2, ensure_ascii=False) + "\n",
                                      encoding="utf-8")
    return layout


def files_under(folder: Path) -> list[str]:
    """Every file below `folder`, as sorted relative POSIX paths."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*")
                  if path.is_file())
