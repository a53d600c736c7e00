"""The local model registry: `<registry>/<name>/<version>/`, numbered versions that never change.

    voxtune publish --model runs/me                  # → $VOXTUNE_HOME/registry/me/1
    voxtune models list
    voxtune models show me            # latest version; `me@1` for a given one

A version is built in a hidden folder beside it and renamed into place in one step, so a killed
publish leaves no half-written version, and a version that exists is never written again (two
publishers racing for the same number: the second takes the next one).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from voxtune.errors import UserError
from voxtune.files import child_path
from voxtune.publish.bundle import files_under
from voxtune.run.layout import METRICS, SPEC
from voxtune.run.status import format_percent
from voxtune.spec import read_resolved_spec

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
ATTEMPTS = 5  # versions tried when other publishers keep taking the next number


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise UserError(f"--name {name!r}: use letters, digits, '-', '_' or '.', starting with "
                        "a letter or digit, at most 96 characters")
    return name


@dataclass(frozen=True)
class Entry:
    """One published version, as `models list|show` reports it."""

    name: str
    version: int
    path: Path

    @property
    def layout(self) -> str:
        if (self.path / "adapter" / "adapter_config.json").is_file():
            return "merged"
        return "adapter" if (self.path / "adapter_config.json").is_file() else "full"

    @property
    def metrics(self) -> dict[str, Any]:
        path = self.path / METRICS
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    @property
    def base_model(self) -> str:
        return read_resolved_spec(self.path / SPEC).base_model

    @property
    def created(self) -> str:
        stamp = datetime.fromtimestamp(self.path.stat().st_mtime, timezone.utc)
        return stamp.isoformat(timespec="seconds")


class Registry:
    def __init__(self, root: Path):
        self.root = Path(root)

    def folder(self, name: str) -> Path:
        """Where model `name` lives: a user-supplied name never reaches outside the registry."""
        return child_path(self.root, check_name(name), NAME, "model")

    def versions(self, name: str) -> list[int]:
        folder = self.folder(name)
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())

    def publish(self, name: str, build: Callable[[Path, Path], None]) -> Path:
        """Build a new version with `build(staging, final_path)` and move it into place.

        `build` writes into `staging`; `final_path` is where it will live (for cards and apps
        that must name their own location).
        """
        folder = self.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(ATTEMPTS):
            version = (self.versions(name) or [0])[-1] + 1
            final = folder / str(version)
            staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".{version}."))
            try:
                build(staging, final)
                staging.chmod(0o755)  # mkdtemp's 0700 would hide it from other users
                try:
                    os.rename(staging, final)  # a version folder is never empty: no overwrite
                except OSError:
                    if not final.exists():
                        raise
                    continue  # someone else published this number meanwhile
                return final
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"{folder}: other publishers kept taking new versions; try again")

    def entries(self) -> list[Entry]:
        names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.is_symlink()
                       and NAME.fullmatch(p.name) and ".." not in p.name) \
            if self.root.is_dir() else []
        return [Entry(name, version, self.root / name / str(version))
                for name in names for version in self.versions(name)]

    def find(self, reference: str) -> Entry:
        """`NAME` (latest version), `NAME@VERSION` or `NAME/VERSION`."""
        name, _, version = reference.replace("/", "@", 1).partition("@")
        versions = self.versions(name)
        if not versions:
            raise UserError(f"no model {name!r} in {self.root} (see `voxtune models list`)")
        number = int(version) if version.isdigit() else versions[-1]
        if number not in versions:
            raise UserError(f"{name} has no version {version!r}; versions: {versions}")
        return Entry(name, number, self.folder(name) / str(number))


def list_lines(registry: Registry) -> list[str]:
    entries = registry.entries()
    if not entries:
        return [f"no published models in {registry.root}"]
    lines = [f"{'NAME':24} {'VER':>4} {'LAYOUT':8} {'WER':>8} {'BASE WER':>9} {'CREATED':25} "
             "BASE MODEL"]
    for entry in entries:
        metrics = entry.metrics
        lines.append(f"{entry.name:24} {entry.version:>4} {entry.layout:8} "
                     f"{format_percent(metrics.get('wer')):>8} "
                     f"{format_percent(metrics.get('base_wer')):>9} "
                     f"{entry.created:25} {entry.base_model}")
    return lines


def show_lines(entry: Entry) -> list[str]:
    metrics = entry.metrics
    lines = [f"{entry.name} version {entry.version}", f"  path:     {entry.path}",
             f"  layout:   {entry.layout} (base {entry.base_model})",
             f"  created:  {entry.created}", f"  card:     {entry.path / 'README.md'}"]
    if "wer" in metrics:
        wer, cer = (f"{format_percent(metrics.get('base_' + key))} → "
                    f"{format_percent(metrics.get(key))}" for key in ("wer", "cer"))
        lines.append(f"  WER {wer}   CER {cer}")
    if metrics.get("smoke_model"):
        lines.append("  smoke-test model (random weights)")
    lines.append("  files:")
    lines += [f"    {path}  ({(entry.path / path).stat().st_size:,} bytes)"
              for path in files_under(entry.path)]
    return lines
