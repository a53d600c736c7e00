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
import hashlib
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
BUILT_FROM = "built-from.sha256"  # in dataset/: the recordings log it was built from
FILE_COLUMNS = ("file_name", "file", "audio_path", "audio", "path")
RECORDING = "recording.wav"  # the name every take from the Record tab is kept under
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

    def take_of(self, text: str) -> str | None:
        """The id of the recorded clip of this sentence, if there is one (a new take of it
        replaces that clip)."""
        return next((key for key, row in self.clips().items()
                     if row["text"] == text.strip() and row.get("name") == RECORDING), None)

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
        fingerprint = self._fingerprint()  # before prepare reads: a clip added meanwhile counts
        data = DataSpec(sources=[RecordingsSource(path=self.recordings)])
        summary = prepare(data, self.dataset, language, workers)
        write_atomic(self.dataset / BUILT_FROM, fingerprint.encode())
        rejected = [Rejected(row["source"], row["reason"], row["detail"])
                    for row in read_jsonl(self.dataset / REJECTED)]
        return summary, rejected

    def stale(self) -> bool:
        """Whether clips were added, edited or deleted since the dataset was built."""
        built = self.dataset / BUILT_FROM
        return not built.is_file() or built.read_text(encoding="utf-8") != self._fingerprint()

    def _fingerprint(self) -> str:
        log = self.recordings / RECORDINGS_LOG
        return hashlib.sha256(log.read_bytes() if log.is_file() else b"").hexdigest()


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


def transcript_rows(names: list[str], sheet: Path | None, file_column: str | None = None,
                    text_column: str | None = None) -> list[tuple[str, str]]:
    """(file, transcript) per uploaded file name, the transcript from `sheet` where it has one;
    the sheet's columns are the ones named, else the usual names."""
    known = transcripts_file(sheet.name, sheet.read_bytes(), file_column, text_column) \
        if sheet else {}
    return [(name, known.get(safe_name(name), "")) for name in names]


def sheet_rows(name: str, content: bytes) -> list[dict[str, Any]]:
    """The rows of an uploaded CSV (header row) or JSONL file, as mappings."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{name}: not UTF-8 text") from None
    if not name.lower().endswith(".jsonl"):
        return list(csv.DictReader(io.StringIO(text)))
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(f"{name}:{number}: not valid JSON") from None
    return [row for row in rows if isinstance(row, dict)]


def sheet_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every column name in `rows`, in the order they first appear."""
    return list(dict.fromkeys(key for row in rows for key in row))


def guess_column(columns: list[str], usual: tuple[str, ...]) -> str | None:
    return next((name for name in usual if name in columns), None)


def transcripts_file(name: str, content: bytes, file_column: str | None = None,
                     text_column: str | None = None) -> dict[str, str]:
    """File name → transcript from an uploaded CSV or JSONL file, read from `file_column` and
    `text_column` (unset: per row, the first of the usual names it has)."""
    found: dict[str, str] = {}
    for row in sheet_rows(name, content):
        file_key = file_column or guess_column(list(row), FILE_COLUMNS)
        text_key = text_column or guess_column(list(row), TEXT_COLUMNS)
        file, text = row.get(file_key or ""), row.get(text_key or "")
        if file and isinstance(text, str):
            found[safe_name(str(file))] = text
    if not found:
        columns = ", ".join(sheet_columns(sheet_rows(name, content))) or "none"
        raise UserError(f"{name}: no rows with a file column "
                        f"({file_column or ', '.join(FILE_COLUMNS)}) and a text column "
                        f"({text_column or ', '.join(TEXT_COLUMNS)}); it has {columns}: pick "
                        "its columns above the table")
    return found
