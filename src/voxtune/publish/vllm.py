"""What vLLM loads from a published model, written beside it at publish: `vllm.json` says how to
serve it, and a LoRA run gets `vllm-adapter/`, its adapter restricted to the language model.

    vllm.json  {"model": "." | base id, "adapter": null | "vllm-adapter", "dtype": "bfloat16",
                "dropped": [...], "note": "..."}

Merged and fully tuned weights are already what vLLM serves (bf16, the whole model, projector
and encoder included): "model" is the folder itself. vLLM puts LoRA only on the language model
(its Voxtral declares the audio tower and the projector as non-LoRA parts) and refuses adapter
weights elsewhere, so a run that also trained the projector (`lora.projector`, peft's
`modules_to_save`) loses that part under vLLM: the note says so and names the way to keep it
(`publish --merge`, or `voxtune serve`). The chart's vLLM demo reads this file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from voxtune.publish.bundle import ADAPTER_FILES

MANIFEST = "vllm.json"
ADAPTER_DIR = "vllm-adapter"
LANGUAGE_MODEL = "language_model"
DTYPE = "bfloat16"  # merged and full final/ weights are bf16 (train.checkpoints.FINAL_DTYPE)


def restrict_to_language_model(tensors: dict[str, Any], config: dict[str, Any]
                               ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The adapter's tensors and config without what vLLM cannot load, and the top-level
    modules dropped (e.g. multi_modal_projector). Pure: tests call it on plain dicts."""
    kept = {name: value for name, value in tensors.items() if f".{LANGUAGE_MODEL}." in name}
    dropped = sorted({module_of(name) for name in tensors if name not in kept})
    dropped += [name for name in config.get("modules_to_save") or [] if name not in dropped]
    return kept, {**config, "modules_to_save": None}, sorted(set(dropped))


def module_of(tensor: str) -> str:
    """`base_model.model.model.multi_modal_projector.linear_1.weight` → multi_modal_projector."""
    parts = [part for part in tensor.split(".") if part not in ("base_model", "model")]
    return parts[0] if parts else tensor


def manifest(base: str | None, dropped: list[str]) -> dict[str, Any]:
    """vllm.json for an adapter on `base` (None: merged or full weights, served as they are)."""
    note = ""
    if dropped:
        note = (f"this run also trained {', '.join(dropped)}, which vLLM cannot load beside a "
                "LoRA adapter: under vLLM the adapter runs without it and transcribes worse than "
                "the card's WER; publish with --merge (or serve with `voxtune serve`) to keep it")
    return {"model": base or ".", "adapter": ADAPTER_DIR if base else None, "dtype": DTYPE,
            "dropped": dropped, "note": note}


def write_vllm_files(source: Path, target: Path, base: str | None) -> dict[str, Any]:
    """Write vllm.json (and, for an adapter in `source` on `base`, vllm-adapter/) into
    `target`; returns the manifest."""
    dropped: list[str] = []
    if base is not None:
        from safetensors.torch import load_file, save_file

        config = json.loads((source / ADAPTER_FILES[0]).read_text(encoding="utf-8"))
        kept, config, dropped = restrict_to_language_model(
            load_file(source / ADAPTER_FILES[1]), config)
        folder = target / ADAPTER_DIR
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ADAPTER_FILES[0]).write_text(json.dumps(config, indent=2) + "\n",
                                               encoding="utf-8")
        save_file(kept, folder / ADAPTER_FILES[1], metadata={"format": "pt"})
    written = manifest(base, dropped)
    (target / MANIFEST).write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
    return written
