"""Load Voxtral: a base model by Hub id, folder or preset, or a fine-tuned model.

Real and test models take the same path: `load()` resolves the name to something
`from_pretrained` understands (the `tiny-random` presets are checkpoint folders built on first
use, see `presets`), checks it is a complete Voxtral checkpoint, and opens it with
`inference.open_checkpoint`, the code the generated Space runs too. `load_tuned()` loads what
training or publishing wrote (a run folder, its final/, a registry version, a Hub repo): a LoRA
adapter on its base (`inference.open_adapter`), or full/merged weights.

    model, processor = load("mistralai/Voxtral-Mini-3B-2507", dtype=torch.bfloat16)
    model, processor = load("tiny-random-4s")       # 4-s window: ~10x cheaper steps on CPU
    tuned, spec = load_tuned("runs/my-voice")      # tuned.model, tuned.processor, tuned.base
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedConfig, VoxtralForConditionalGeneration, VoxtralProcessor

from voxtune.errors import UserError
from voxtune.models.inference import (
    AudioWindowMismatch,
    LoadedModel,
    TokenLimit,
    adapter_config,
    align_audio_window,
    open_adapter,
    open_checkpoint,
)
from voxtune.models.presets import ensure_tiny_random, require_audio_stack, tiny_preset_window
from voxtune.run.layout import FINAL, METRICS, SPEC
from voxtune.spec import RunSpec, read_resolved_spec

MODEL_TYPE = "voxtral"


# --- dtype --------------------------------------------------------------------------------------


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 arithmetic instructions (AVX512-BF16 or AMX-BF16).

    Without them PyTorch emulates bf16 (≈5× slower than fp32 for the upstream recipe); with
    avx512_bf16 (AMD EPYC here) a tiny-model step took about as long as in fp32. Linux only
    (reads /proc/cpuinfo); elsewhere False, i.e. fp32.
    """
    try:
        flags = set(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def pick_dtype(precision: str, device: str | torch.device) -> torch.dtype:
    """Compute dtype for `TrainingSpec.precision` on `device`.

    auto = bf16 where the hardware does it natively (CUDA with bf16, CPUs with bf16
    instructions), else fp16 on GPUs and fp32 on CPUs. An explicit choice the hardware cannot
    run is a UserError. Meant for mixed precision (Trainer's bf16/fp16 flags, autocast); pure
    bf16 weights lose small updates.
    """
    kind = torch.device(device).type
    cuda_bf16 = kind == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    if precision == "auto":
        if kind == "cuda":
            return torch.bfloat16 if cuda_bf16 else torch.float16
        return torch.bfloat16 if kind == "cpu" and cpu_has_native_bf16() else torch.float32
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        if kind == "cuda" and not cuda_bf16:
            raise UserError("training.precision: bf16 is not supported by this GPU "
                            f"({torch.cuda.get_device_name(device)}); use fp16 or auto")
        return torch.bfloat16
    if precision == "fp16":
        if kind != "cuda":
            raise UserError(f"training.precision: fp16 needs a CUDA GPU, this is {kind}; "
                            "use fp32 or auto")
        return torch.float16
    raise UserError(f"training.precision: {precision!r} is not one of auto, bf16, fp16, fp32")


def inference_dtype(precision: str, device: str | torch.device) -> torch.dtype:
    """The dtype to run a model trained with `precision` in on `device`: the training one where
    the device runs it, else the nearest it does. A run trained in fp16 on a GPU evaluates on a
    CPU (which has no fast fp16) in bf16 where the CPU has it natively, else fp32; one trained
    in bf16 runs in fp16 on a GPU without bf16."""
    kind = torch.device(device).type
    if precision == "fp16" and kind != "cuda":
        return pick_dtype("auto", device)
    if precision == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported(
            including_emulation=False):
        return torch.float16
    return pick_dtype(precision, device)


# --- loading ----------------------------------------------------------------------------------


def resolve(model: str) -> str:
    """Turn a model name into what `from_pretrained` takes: a local folder or a Hub id."""
    window = tiny_preset_window(model)
    if window is not None:
        return str(ensure_tiny_random(window))
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path)
    # Hub ids are `name` or `owner/name`; anything else was meant as a path.
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise UserError(f"{model}: no such model folder (give a checkpoint folder, a Hub id "
                        "such as mistralai/Voxtral-Mini-3B-2507, or tiny-random)")
    return model


def unavailable(source: str, error: Exception) -> UserError:
    """The error for a checkpoint that cannot be read, saying why in the user's terms."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if Path(source).is_dir():
        return UserError(f"{source}: not a complete Hugging Face checkpoint folder ({reason})")
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return UserError(
            f"{source} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
            "offline mode is on (HF_HUB_OFFLINE=1): download it where there is network "
            f"(`hf download {source}`) into that cache, or pass a local checkpoint folder")
    return UserError(
        f"cannot fetch {source} from the Hugging Face Hub ({reason}): check the id, the "
        "network, and HF_TOKEN for gated models; or pass a local checkpoint folder "
        "(without network, HF_HUB_OFFLINE=1 skips the retries)")


def check_voxtral(source: str) -> None:
    """Refuse checkpoints that are incomplete or not Voxtral before loading any weights."""
    folder = Path(source)
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise UserError(f"{source}: no config.json, so not a Hugging Face checkpoint folder "
                        "(one written by save_pretrained)")
    try:
        config, _ = PreTrainedConfig.get_config_dict(source)
    except OSError as error:
        raise unavailable(source, error) from None
    model_type = config.get("model_type")
    if model_type != MODEL_TYPE:
        raise UserError(f"{source} is not a Voxtral checkpoint (config model_type {model_type!r}, "
                        f"expected {MODEL_TYPE!r}); voxtune fine-tunes Voxtral models such as "
                        "mistralai/Voxtral-Mini-3B-2507")
    if folder.is_dir() and not (folder / "tekken.json").is_file():
        raise UserError(f"{source}: no tekken.json (Voxtral's tokenizer); save the processor "
                        "next to the weights, or copy it from the base model")


def load(model: str, dtype: torch.dtype | None = None, **loading: Any
         ) -> tuple[VoxtralForConditionalGeneration, VoxtralProcessor]:
    """Load a Voxtral model and its processor by Hub id, local folder or tiny preset name.

    `dtype` None keeps the checkpoint's own dtype (bf16 for Mistral's releases, fp32 for the
    tiny preset); `loading` goes to `from_pretrained` (the train step's, from
    `voxtune.train.resources.loading_arguments`). Raises UserError for anything the user can
    fix.
    """
    require_audio_stack()
    source = resolve(model)
    check_voxtral(source)
    try:
        return open_checkpoint(source, dtype=dtype or "auto", **loading)
    except OSError as error:
        raise unavailable(source, error) from None
    except AudioWindowMismatch as error:
        raise UserError(str(error)) from None


def empty_model(config: Any, dtype: torch.dtype) -> VoxtralForConditionalGeneration:
    """The model `config` describes, its parameters uninitialised host memory that nothing has
    touched yet, and its buffers computed as usual.

    What FSDP ranks other than 0 start from: they receive every parameter from rank 0 when
    accelerate shards the model, so reading the checkpoint would be wasted, and untouched
    pages are not resident (the kernel maps them on first write), so the pod's memory does not
    grow with the ranks. Not `meta` parameters: accelerate matches the optimizer's parameters
    to their shards by storage address, which every `meta` tensor shares. Buffers stay real
    because accelerate re-registers non-persistent ones (the rotary frequencies) as they are.
    """
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):  # shapes first, no memory at all
        model = VoxtralForConditionalGeneration._from_config(config, dtype=dtype)
    buffers = dict(model.named_buffers())
    model.to_empty(device="cpu")  # every tensor, buffers too: those are put back
    for name, buffer in buffers.items():
        owner, _, leaf = name.rpartition(".")
        model.get_submodule(owner)._buffers[leaf] = buffer
    return model


def load_empty(model: str, dtype: torch.dtype
               ) -> tuple[VoxtralForConditionalGeneration, VoxtralProcessor]:
    """`empty_model` of a base by any name `load` takes, and its processor."""
    require_audio_stack()
    source = resolve(model)
    check_voxtral(source)
    try:
        config = VoxtralForConditionalGeneration.config_class.from_pretrained(source)
        processor = VoxtralProcessor.from_pretrained(source)
    except OSError as error:
        raise unavailable(source, error) from None
    empty = empty_model(config, dtype)
    align_audio_window(empty, processor)
    return empty, processor


def load_tuned(model: str, dtype: torch.dtype | None = None
               ) -> tuple[LoadedModel, RunSpec | None]:
    """Load a fine-tuned model on the GPU when there is one, ready to transcribe.

    `model` is a run folder (its final/ is loaded), a final/ or registry version folder, a Hub
    id, or any name `load` takes. With `dtype` None a LoRA adapter goes on its base in the
    dtype it was trained under where this device runs it (`inference_dtype`), so transcripts
    match the run's metrics.json (and a merge keeps them: `merge.export_merged`), and full or
    merged weights keep their own; a `dtype` is used for either.
    Returns the model and the RunSpec it was trained with (None for models from elsewhere).
    """
    path = Path(model).expanduser()
    source = str(path / FINAL) if (path / FINAL).is_dir() else resolve(model)
    try:
        spec = trained_spec(source)
        adapter = adapter_config(source)
    except OSError as error:
        raise unavailable(source, error) from None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if adapter is None:
        tuned, processor = load(source, dtype)
        return LoadedModel(tuned.to(device), processor, source, None), spec
    base_name = spec.base_model if spec else adapter["base_model_name_or_path"]
    if dtype is None and spec is not None:
        dtype = inference_dtype(spec.training.precision, device)
    base, processor = load(base_name, dtype)
    try:
        tuned = open_adapter(source, base)
    except OSError as error:
        raise unavailable(source, error) from None
    return LoadedModel(tuned.to(device), processor, source, base_name), spec


def trained_spec(source: str) -> RunSpec | None:
    """The spec.yaml saved with every voxtune model (None for models from elsewhere)."""
    path = Path(source) / SPEC
    if not Path(source).is_dir():
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            path = Path(hf_hub_download(source, SPEC))
        except EntryNotFoundError:
            return None
    return read_resolved_spec(path) if path.is_file() else None


def published_limit(source: str, spec: RunSpec | None) -> TokenLimit:
    """The token limit a model's evaluation used (metrics.json's `generation`, beside the
    model or in the run folder around its final/), so `voxtune serve` never cuts off what the
    card's WER was measured on; the spec's eval.max_new_tokens wins when set."""
    folder = Path(source)
    candidates = [folder / METRICS, folder.parent / METRICS] if folder.is_dir() else []
    if not folder.is_dir():
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            candidates = [Path(hf_hub_download(source, METRICS))]
        except EntryNotFoundError:
            candidates = []
    found = next((path for path in candidates if path.is_file()), None)
    recorded = json.loads(found.read_text(encoding="utf-8")).get("generation") if found else None
    return TokenLimit.from_dict(recorded, spec.eval.max_new_tokens if spec else None)
