"""A user's workspace: recordings and uploads, extra sources, and the prepared dataset.

    VOXTUNE_HOME/users/<key>/recordings/recordings.jsonl   append-only log (a RecordingsSource)
                                       /clips/<id>-<name>    copies of every take and upload
                            /sources.json                    Hub / Granary sources to add
                            /dataset/                        prepared: manifest.jsonl, audio/

Uploads are copied in under sanitised names (never referenced at Gradio's temporary paths)
and checked with the prepare step's own audio rules (voxtune.data.audio) before they are kept;
"Build dataset" runs the prepare step itself over the recordings, and a launched run takes
dataset/ as a `prepared` source (its clips as they are, nothing decoded twice), so what the
table shows is what training gets. Users never share a folder, so no two sessions write the
same files: <key> is voxtune.ui.auth.user_key of the exact name a user signed in with.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from voxtune.data.audio import AUDIO_SUFFIXES, SAMPLE_RATE, AudioRejected, ClipLimits, load_16k
from voxtune.data.manifest import MANIFEST, REJECTED, read_jsonl
from voxtune.data.sources import RECORDINGS_LOG, TEXT_COLUMNS, recording_entries
from voxtune.errors import UserError
from voxtune.files import child_path, write_atomic
from voxtune.spec import DataSpec, GranarySource, HubSource, RecordingsSource
from voxtune.ui.auth import USER_KEY

CLIPS = "clips"
SOURCES = "sources.json"
FILE_COLUMNS = ("file_name", "file", "audio_path", "audio", "path")
UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_append_lock = threading.Lock()  # one writer per process; lines are short, O_APPEND keeps order


def safe_name(name: str, limit: int = 60) -> str:
    """A file name that cannot escape or surprise: basename, letters/digits/._- only."""
    base = Path(name.replace("\\", "/")).name
    stem, suffix = Path(base).stem, Path(base).suffix.lower()
    stem = UNSAFE.sub("_", stem).strip("._")[:limit] or "clip"
    return stem + (suffix if suffix in AUDIO_SUFFIXES else "")


@dataclass(frozen=True)
class Rejected:
    """An upload or take that was not kept, and why (the prepare step's reason codes)."""

    name: str
    reason: str
    detail: str


class Workspace:
    def __init__(self, home: Path, user: str, max_bytes: int = 50 * 2**20,
                 max_clips: int = 2000):
        self.root = child_path(Path(home) / "users", user, USER_KEY, "user")
        self.max_bytes, self.max_clips = max_bytes, max_clips

    recordings = property(lambda self: self.root / "recordings")
    dataset = property(lambda self: self.root / "dataset")
    manifest = property(lambda self: self.dataset / MANIFEST)

    # --- clips --------------------------------------------------------------------------------
    def clips(self) -> dict[str, dict[str, Any]]:
        """Current clips by id: audio_path (relative), text, language, duration, name."""
        if not (self.recordings / RECORDINGS_LOG).is_file():
            return {}
        kept, _ = recording_entries(self.recordings.resolve())
        return {key: fields for key, (_, fields) in kept.items()}

    def add(self, audio: Path, text: str, language: str | None, name: str | None = None,
            clip_id: str | None = None, limits: ClipLimits | None = None) -> dict[str, Any]:
        """Check one take or upload and copy it in; `clip_id` replaces an earlier take.
        Raises AudioRejected (a prepare reason code + message) for what cannot be used."""
        name = safe_name(name or audio.name)
        if not text or not text.strip():
            raise AudioRejected("empty_text", "the transcript is empty")
        if Path(name).suffix not in AUDIO_SUFFIXES:
            raise AudioRejected("not_audio", f"type not accepted; use one of "
                                f"{', '.join(sorted(AUDIO_SUFFIXES))}")
        size = audio.stat().st_size
        if size > self.max_bytes:
            raise AudioRejected("too_large", f"{size / 2**20:.0f} MB is over the "
                                f"{self.max_bytes / 2**20:.0f} MB limit")
        if clip_id is None and len(self.clips()) >= self.max_clips:
            raise AudioRejected("workspace_full", f"the workspace holds {self.max_clips} clips")
        samples = load_16k(audio, limits or ClipLimits())  # AudioRejected with the reason
        clip_id = clip_id or uuid.uuid4().hex[:12]
        relative = f"{CLIPS}/{uuid.uuid4().hex[:8]}-{name}"  # every take its own file
        (self.recordings / CLIPS).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(audio, self.recordings / relative)
        row = {"id": clip_id, "audio_path": relative, "text": text.strip(),
               "language": language or None, "duration": round(len(samples) / SAMPLE_RATE, 2),
               "name": name, "added": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._append(row)
        return row

    def edit(self, clip_id: str, text: str) -> None:
        clip = self._clip(clip_id)
        if not text.strip():
            raise UserError("the transcript is empty; delete the clip instead")
        self._append({**clip, "text": text.strip()})

    def delete(self, clip_id: str) -> None:
        self._clip(clip_id)
        self._append({"id": clip_id, "deleted": True})

    def _clip(self, clip_id: str) -> dict[str, Any]:
        clip = self.clips().get(clip_id)
        if clip is None:
            raise UserError(f"no clip {clip_id!r} in your workspace")
        return clip

    def _append(self, row: dict[str, Any]) -> None:
        self.recordings.mkdir(parents=True, exist_ok=True)
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with _append_lock, open(self.recordings / RECORDINGS_LOG, "a", encoding="utf-8") as log:
            log.write(line)

    # --- extra sources ------------------------------------------------------------------------
    def sources(self) -> list[HubSource | GranarySource]:
        path = self.root / SOURCES
        rows = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
        return [DataSpec.model_validate({"sources": [row]}).sources[0] for row in rows]

    def set_sources(self, sources: list[HubSource | GranarySource]) -> None:
        rows = [source.model_dump(mode="json") for source in sources]
        write_atomic(self.root / SOURCES, json.dumps(rows, indent=2).encode())

    # --- the prepared dataset -----------------------------------------------------------------
    def build(self, language: str | None, workers: int = 1) -> tuple[Any, list[Rejected]]:
        """Run the prepare step over the recordings into dataset/; its summary and rejections."""
        from voxtune.data.prepare import prepare

        if not self.clips():
            raise UserError("no clips yet: record or upload some speech first")
        data = DataSpec(sources=[RecordingsSource(path=self.recordings)])
        summary = prepare(data, self.dataset, language, workers)
        rejected = [Rejected(row["source"], row["reason"], row["detail"])
                    for row in read_jsonl(self.dataset / REJECTED)]
        return summary, rejected


def add_uploads(workspace: Workspace, paths: list[Path], texts: dict[str, Any],
                language: str | None) -> tuple[int, list[Rejected]]:
    """Add uploaded files with their transcripts (by file name); how many were added, and the
    ones refused with the reason."""
    added, refused = 0, []
    for path in paths:
        try:
            workspace.add(path, str(texts.get(path.name) or ""), language, name=path.name)
            added += 1
        except AudioRejected as problem:
            refused.append(Rejected(path.name, problem.reason, str(problem)))
    return added, refused


def transcript_rows(names: list[str], sheet: Path | None) -> list[tuple[str, str]]:
    """(file, transcript) per uploaded file name, the transcript from `sheet` where it has one."""
    known = transcripts_file(sheet.name, sheet.read_bytes()) if sheet else {}
    return [(name, known.get(safe_name(name), "")) for name in names]


def transcripts_file(name: str, content: bytes) -> dict[str, str]:
    """File name → transcript from an uploaded CSV (header row) or JSONL file."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{name}: not UTF-8 text") from None
    if name.lower().endswith(".jsonl"):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise UserError(f"{name}:{number}: not valid JSON") from None
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
    found: dict[str, str] = {}
    for row in rows:
        if not isinstance(row, dict):
            continue
        file = next((row[key] for key in FILE_COLUMNS if row.get(key)), None)
        text_value = next((row[key] for key in TEXT_COLUMNS if row.get(key)), None)
        if file and isinstance(text_value, str):
            found[safe_name(str(file))] = text_value
    if not found:
        raise UserError(f"{name}: no rows with a file column ({', '.join(FILE_COLUMNS)}) and a "
                        f"text column ({', '.join(TEXT_COLUMNS)})")
    return found
