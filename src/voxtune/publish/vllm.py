"""What vLLM loads from a published model, written beside it at publish: `vllm.json` says how to
serve it; merged and fully tuned weights get Mistral's consolidated layout beside transformers'
(publish/consolidated.py), and a LoRA run gets `vllm-adapter/`, its adapter restricted to the
language model under vLLM's module names.

    vllm.json  {"model": "." | base id, "adapter": null | "vllm-adapter", "dtype": "bfloat16",
                "args": [the `vllm serve` flags that read Mistral's layout], "dropped": [...],
                "note": "..."}

vLLM's Voxtral loads only Mistral's layout (params.json, consolidated*.safetensors, tekken.json;
docs/operations.md cites its source), so "model" "." — the published folder itself — carries
it, as mistralai's own repositories do, and "args" names the flags that make vLLM read it. An
adapter is served on its base by Hub id: mistralai's bases ship that layout.

vLLM puts LoRA only on the language model (its Voxtral declares the audio tower and the
projector as non-LoRA parts) and matches adapter tensors by its own module path
(`language_model.model.layers.N.…`, where transformers 5 and peft write
`model.language_model.layers.N.…`), so vllm-adapter/ holds the language model's tensors
renamed. A run that also trained the projector (`lora.projector`, peft's `modules_to_save`)
loses that part under vLLM: the note says so and names the way to keep it (`publish --merge`,
or `voxtune serve`). The chart's vLLM demo reads this file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from voxtune.publish.bundle import ADAPTER_FILES

MANIFEST = "vllm.json"
ADAPTER_DIR = "vllm-adapter"
LANGUAGE_MODEL = "language_model"
DTYPE = "bfloat16"  # merged and full final/ weights are bf16 (train.checkpoints.FINAL_DTYPE)
MISTRAL_FORMAT = ["--tokenizer-mode", "mistral", "--config-format", "mistral",
                  "--load-format", "mistral"]
PEFT_PREFIX = "base_model.model."
# peft's path to a language-model module under transformers 5 → vLLM's (the older
# transformers layout already is vLLM's)
PEFT_LANGUAGE_MODEL = re.compile(r"^model\.language_model\.")
VLLM_LANGUAGE_MODEL = "language_model.model."


def vllm_tensor_name(tensor: str) -> str:
    """`base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight` →
    `base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight`."""
    return PEFT_PREFIX + PEFT_LANGUAGE_MODEL.sub(VLLM_LANGUAGE_MODEL,
                                                 tensor.removeprefix(PEFT_PREFIX), count=1)


def restrict_to_language_model(tensors: dict[str, Any], config: dict[str, Any]
                               ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The adapter's tensors (renamed for vLLM) and config without what vLLM cannot load, and
    the top-level modules dropped (e.g. multi_modal_projector). Pure: tests call it on plain
    dicts."""
    kept = {vllm_tensor_name(name): value for name, value in tensors.items()
            if f".{LANGUAGE_MODEL}." in name}
    dropped = sorted({module_of(name) for name in tensors if f".{LANGUAGE_MODEL}." not in name})
    dropped += [name for name in config.get("modules_to_save") or [] if name not in dropped]
    # vLLM checks each adapter tensor's module against the names it supports (q_proj, …): the
    # training regex means nothing to it, the plain module names do.
    modules = sorted({name.split(".")[-3] for name in kept})
    return kept, {**config, "modules_to_save": None, "target_modules": modules}, \
        sorted(set(dropped))


def module_of(tensor: str) -> str:
    """`base_model.model.model.multi_modal_projector.linear_1.weight` → multi_modal_projector."""
    parts = [part for part in tensor.split(".") if part not in ("base_model", "model")]
    return parts[0] if parts else tensor


def manifest(base: str | None, dropped: list[str], positions_match: bool = True
             ) -> dict[str, Any]:
    """vllm.json for an adapter on `base` (None: merged or full weights, served from the
    folder's consolidated layout)."""
    notes = []
    if dropped:
        notes.append(f"this run also trained {', '.join(dropped)}, which vLLM cannot load "
                     "beside a LoRA adapter: under vLLM the adapter runs without it and "
                     "transcribes worse than the card's WER; publish with --merge (or serve "
                     "with `voxtune serve`) to keep it")
    if not positions_match:
        notes.append("the audio encoder's positional table is not Whisper's sinusoids, which "
                     "vLLM computes instead of loading: vLLM hears this model differently from "
                     "transformers (expected only of a random smoke-test model)")
    return {"model": base or ".", "adapter": ADAPTER_DIR if base else None, "dtype": DTYPE,
            "args": MISTRAL_FORMAT, "dropped": dropped, "note": "; ".join(notes)}


def write_vllm_files(source: Path, target: Path, base: str | None) -> dict[str, Any]:
    """Write vllm.json into `target`, and either vllm-adapter/ (for an adapter in `source` on
    `base`) or the consolidated layout of the weights already copied into `target`; returns the
    manifest."""
    dropped: list[str] = []
    positions_match = True
    if base is None:
        from voxtune.publish.consolidated import write_consolidated

        positions_match = write_consolidated(target)["positions_match"]
    else:
        from safetensors.torch import load_file, save_file

        config = json.loads((source / ADAPTER_FILES[0]).read_text(encoding="utf-8"))
        kept, config, dropped = restrict_to_language_model(
            load_file(source / ADAPTER_FILES[1]), config)
        folder = target / ADAPTER_DIR
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ADAPTER_FILES[0]).write_text(json.dumps(config, indent=2) + "\n",
                                               encoding="utf-8")
        save_file(kept, folder / ADAPTER_FILES[1], metadata={"format": "pt"})
    written = manifest(base, dropped, positions_match)
    (target / MANIFEST).write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
    return written


def vllm_note(folder: Path) -> str:
    """The note of the vllm.json in a staged model folder (what publish prints)."""
    return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["note"]
