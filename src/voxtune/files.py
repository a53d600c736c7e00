"""Crash-safe file writes shared by every step."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from voxtune.errors import UserError


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def child_path(root: Path, name: str, rule: re.Pattern[str], what: str) -> Path:
    """`root / name` for a user-supplied `name`, after checking it against the name `rule` and
    that the resolved path stays inside `root` (so `..`, `/abs` or a symlink cannot escape).
    Every place that turns a run, model, registry entry or user name into a path goes here."""
    if not isinstance(name, str) or not rule.fullmatch(name):
        raise UserError(f"{name!r} is not a valid {what} name")
    path = Path(root) / name
    resolved_root = Path(root).resolve()
    if not path.resolve().is_relative_to(resolved_root) or path.resolve() == resolved_root:
        raise UserError(f"{what} {name!r} resolves outside {root}")
    return path
