"""A full disk during a save is NoSpaceError (exit 74); other save failures stay what they are.

The writers are the real ones (torch.save, safetensors, plain file writes) on a real, small
tmpfs that they fill up; mounting one needs root (CI runs as root), so elsewhere these skip.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from voxtune.errors import NoSpaceError
from voxtune.train.checkpoints import full_disk_is_no_space

TENSORS = {"weights": torch.zeros(1 << 20)}  # 4 MiB: more than the small disk holds


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "1m") mounted on `folder` for the duration; skips unless root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        # lazy: a failed torch.save can leave its file open until the exception is collected
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def write_torch(path: Path) -> None:
    torch.save(TENSORS, path)


def write_safetensors(path: Path) -> None:
    save_file(TENSORS, path)


def write_bytes(path: Path) -> None:
    path.write_bytes(bytes(4 << 20))


# each reports a full disk its own way: RuntimeError, SafetensorError, OSError(ENOSPC)
WRITERS = [write_torch, write_safetensors, write_bytes]


@pytest.mark.parametrize("write", WRITERS, ids=lambda write: write.__name__)
def test_a_save_that_fills_the_disk_is_no_space(tmp_path: Path,
                                                write: Callable[[Path], None]) -> None:
    with (small_disk(tmp_path / "disk", "1m") as disk, pytest.raises(NoSpaceError) as raised,
          full_disk_is_no_space(disk / "run")):
        write(disk / "checkpoint")
    assert raised.value.path == str(disk / "run") and "no space left on" in str(raised.value)


@pytest.mark.parametrize(("write", "error"), [
    (write_torch, RuntimeError), (write_safetensors, SafetensorError),
    (write_bytes, FileNotFoundError),
], ids=lambda case: getattr(case, "__name__", ""))
def test_other_save_failures_are_not_called_a_full_disk(
        tmp_path: Path, write: Callable[[Path], None], error: type[Exception]) -> None:
    """A missing folder on a disk with room: each writer's own error comes through unchanged."""
    with pytest.raises(error) as raised, full_disk_is_no_space(tmp_path):
        write(tmp_path / "missing" / "checkpoint")
    assert not isinstance(raised.value, NoSpaceError)
