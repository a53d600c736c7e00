"""What the train step writes: rolling checkpoints (to resume), final/ (what a user loads), and
a full disk told apart from other failed writes."""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from voxtune.errors import NoSpaceError
from voxtune.run.layout import SPEC
from voxtune.spec import RunSpec

# A failed save that left less than this free failed for lack of space (its partial file stays).
FULL_DISK_BYTES = 1 << 20
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # the disk, or the user's quota on it, is full
# Full fine-tuning trains fp32 master weights, but what a user loads is bf16, the dtype Mistral
# releases Voxtral in: half the size (Mini 9.4 GB, not 18.7) and what every loader expects.
FINAL_DTYPE = torch.bfloat16


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint; one cut off by a kill (no trainer_state.json) is removed."""
    if not folder.is_dir():
        return None
    candidates = sorted((p for p in folder.glob("checkpoint-*") if p.name[11:].isdigit()),
                        key=lambda p: int(p.name[11:]), reverse=True)
    for candidate in candidates:
        if (candidate / "trainer_state.json").exists():
            return candidate
        shutil.rmtree(candidate, ignore_errors=True)
    return None


@contextlib.contextmanager
def full_disk_is_no_space(folder: Path) -> Iterator[None]:
    """A save into `folder` that failed because its disk is full raises NoSpaceError (exit 74).

    torch.save and safetensors report a full disk without an errno (RuntimeError "…failed
    writing file…", SafetensorError); `disk_full` tells those from other failures.
    """
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, RuntimeError, SafetensorError) as error:
        if disk_full(error, folder):
            raise NoSpaceError(folder) from error
        raise


def disk_full(error: BaseException, folder: Path) -> bool:
    """Whether `error`, raised while writing into `folder`, means its disk is full."""
    if isinstance(error, OSError):
        return error.errno in NO_SPACE_ERRNOS
    # safetensors deletes its partial file but keeps the OS error's text ("… (os error 28)");
    # torch.save loses the error but keeps the partial file, so the disk is still full.
    if any(f"(os error {code})" in str(error) for code in NO_SPACE_ERRNOS):
        return True
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    return shutil.disk_usage(existing).free < FULL_DISK_BYTES


def save_final(model: Any, processor: Any, spec: RunSpec, folder: Path,
               state_dict: dict[str, Any] | None = None) -> None:
    """What a user loads: adapter or weights, processor, spec. Written aside, then swapped in.
    `state_dict`: the weights gathered from a sharded (FSDP) model, else the model's own.

    Full fine-tuning's weights are written in FINAL_DTYPE, one tensor at a time on the host, so
    the GPU needs no second copy of the model; the training model itself stays as it is (the
    tuned evaluation runs on it next).
    """
    staging = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    if spec.mode == "full":
        # what the model itself keeps in fp32 (Voxtral: the encoder's position table) stays so
        keep = tuple(f"{module}." for module in model._keep_in_fp32_modules_strict or ())
        weights = {name: tensor.detach().to("cpu", FINAL_DTYPE)
                   if tensor.is_floating_point() and not any(k in name for k in keep)
                   else tensor for name, tensor in (state_dict or model.state_dict()).items()}
        model.save_pretrained(staging, state_dict=weights)
        label_dtype(staging / "config.json", FINAL_DTYPE)
    else:
        model.save_pretrained(staging, state_dict=state_dict)  # the adapter (fp32: small)
    (staging / "README.md").unlink(missing_ok=True)  # peft's stub card; publish writes ours
    processor.save_pretrained(staging)
    (staging / SPEC).write_text(spec.to_yaml(), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)


def label_dtype(config_file: Path, dtype: torch.dtype) -> None:
    """Make config.json say the dtype the weights beside it hold: save_pretrained writes the
    model's (fp32 master weights) even when it was handed a bf16 state dict, and `dtype="auto"`
    loads by that label."""
    config = json.loads(config_file.read_text(encoding="utf-8"))
    name = str(dtype).removeprefix("torch.")
    for section in (config, *(v for v in config.values() if isinstance(v, dict))):
        if "dtype" in section:
            section["dtype"] = name
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
