"""The prepared dataset on disk: manifest.jsonl, rejected.jsonl, audio/ — and how to split it.

Every file is written to a temporary name and renamed, so a killed step never leaves half a
manifest; re-running rewrites it whole, so lines are never duplicated.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.jsonl"
REJECTED = "rejected.jsonl"
SUMMARY = "summary.json"
AUDIO_DIR = "audio"


@dataclass(frozen=True)
class Clip:
    """One kept clip. `audio_path` is relative to the prepared folder."""

    id: str
    audio_path: str
    text: str
    duration: float
    language: str | None
    split: str
    source: str  # where it came from, for people: file, file:line or dataset[row]


@dataclass(frozen=True)
class Rejection:
    """One input that was not kept, and why (`reason` is a stable code)."""

    source: str
    reason: str
    detail: str


def clip_id(audio_sha256: str, text: str) -> str:
    """Stable id: the same audio with the same transcript is the same clip (and a duplicate)."""
    return hashlib.sha256(f"{audio_sha256}\n{text}".encode()).hexdigest()[:20]


def _unit_interval(key: str) -> float:
    return int(hashlib.sha256(key.encode()).hexdigest()[:15], 16) / 16**15


def assign_splits(ids: list[str], eval_fraction: float) -> dict[str, str]:
    """Split by a hash of each id (never by position): the same clips always split the same way.

    With two or more clips there is at least one eval and one train clip, so a small personal
    dataset still gets a WER; the clips moved are the ones whose hash is closest to the boundary.
    """
    position = {clip: _unit_interval(clip) for clip in ids}
    splits = {clip: "eval" if position[clip] < eval_fraction else "train" for clip in ids}
    if len(ids) >= 2:
        ordered = sorted(ids, key=position.__getitem__)
        if "eval" not in splits.values():
            splits[ordered[0]] = "eval"
        if "train" not in splits.values():
            splits[ordered[-1]] = "train"
    return splits


def jsonl_bytes(rows: Iterable[Any]) -> bytes:
    lines = (json.dumps(asdict(row) if hasattr(row, "__dataclass_fields__") else row,
                        ensure_ascii=False) for row in rows)
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read our own JSONL files (manifest, rejected); a torn last line from a kill is skipped."""
    rows = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def read_manifest(prepared: Path, split: str | None = None) -> list[Clip]:
    """The kept clips of a prepared folder, optionally of one split."""
    clips = [Clip(**row) for row in read_jsonl(prepared / MANIFEST)]
    return [clip for clip in clips if split is None or clip.split == split]
