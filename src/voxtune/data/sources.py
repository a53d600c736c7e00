"""Read each kind of speech source into candidates (audio + transcript) or per-item rejections.

A source never decodes audio itself (prepare does that, in parallel); it only finds the audio,
the transcript and the language, and rejects what is wrong with the listing: lines that do not
parse, missing fields, paths outside the source's root, transcripts that are not UTF-8. A
prepared source's candidates carry their manifest row, and prepare reuses them as they are.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxtune.data.audio import AUDIO_SUFFIXES
from voxtune.data.manifest import AUDIO_DIR, MANIFEST, Clip, Rejection
from voxtune.errors import UserError
from voxtune.spec import (
    FolderSource,
    GranarySource,
    HubSource,
    JsonlSource,
    PreparedSource,
    RecordingsSource,
    Source,
)

TEXT_COLUMNS = ("text", "transcription", "sentence", "transcript")
RECORDINGS_LOG = "recordings.jsonl"
# what prepare writes: audio/<first 32 hex digits of the 16-bit PCM's sha256>.flac
PREPARED_AUDIO = re.compile(rf"^{AUDIO_DIR}/([0-9a-f]{{32}})\.flac$")
SPLITS = ("train", "eval")


@dataclass(frozen=True)
class Candidate:
    source: str  # for people: file, file:line or dataset[row]
    audio: Path | bytes
    text: Any  # validated by prepare: must be a non-blank str
    language: str | None = None
    prepared: Clip | None = None  # a prepared source's row: its audio is stored already


Item = Candidate | Rejection


def read_source(source: Source) -> Iterator[Item]:
    """Yield the candidates and rejections of one source, in a stable order."""
    readers = {
        JsonlSource: _read_jsonl,
        FolderSource: _read_folder,
        RecordingsSource: _read_recordings,
        PreparedSource: _read_prepared,
        HubSource: _read_hub,
        GranarySource: _read_granary,
    }
    return readers[type(source)](source)


def describe(source: Source) -> str:
    return str(getattr(source, "path", None) or getattr(source, "dataset", ""))


# --- files ------------------------------------------------------------------------------------


def resolve_inside(root: Path, relative: str) -> Path | None:
    """`root/relative` with links resolved, or None if that lands outside `root`."""
    target = (root / relative).resolve()
    return target if target.is_relative_to(root) else None


def _outside(path: Path, root: Path) -> bool:
    """Whether `path` under `root` is (or goes through) a link that lands outside `root`."""
    return resolve_inside(root, str(path.relative_to(root))) is None


def _escapes(where: str, relative: str, root: Path) -> Rejection:
    return Rejection(where, "escapes_root", f"{relative!r} points outside {root}")


def _json_objects(path: Path) -> Iterator[tuple[str, dict[str, Any]] | Rejection]:
    """Each non-blank line of a JSONL file as (where, object), or a rejection naming the line.

    A UTF-8 byte-order mark (Windows editors write one) and CRLF line ends are accepted."""
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    for number, raw in enumerate(data.splitlines(), start=1):
        where = f"{path}:{number}"
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            yield Rejection(where, "bad_utf8", "line is not valid UTF-8")
            continue
        except json.JSONDecodeError as error:
            yield Rejection(where, "bad_json", f"not valid JSON ({error.msg})")
            continue
        if not isinstance(row, dict):
            yield Rejection(where, "bad_json", "expected a JSON object per line")
            continue
        yield where, row


def _from_rows(rows: Iterator[tuple[str, dict[str, Any]] | Rejection], root: Path,
               audio_key: str, text_key: str) -> Iterator[Item]:
    for row in rows:
        if isinstance(row, Rejection):
            yield row
            continue
        where, fields = row
        missing = [key for key in (audio_key, text_key) if key not in fields]
        if missing:
            yield Rejection(where, "missing_field", f"no {' or '.join(missing)} field")
            continue
        relative = str(fields[audio_key])
        audio = resolve_inside(root, relative)
        if audio is None:
            yield _escapes(where, relative, root)
            continue
        yield Candidate(where, audio, fields[text_key], fields.get("language"))


def _read_jsonl(source: JsonlSource) -> Iterator[Item]:
    path = source.path
    if not path.is_file():
        raise UserError(f"jsonl source {path}: no such file")
    yield from _from_rows(_json_objects(path), path.parent.resolve(), "audio_path", "text")


def recording_entries(root: Path) -> tuple[dict[str, tuple[str, dict[str, Any]]],
                                             list[Rejection]]:
    """The current clips of a recordings folder by id, as (where, fields), and bad lines.

    The UI appends a line per take; a re-recorded id replaces the earlier take, and a line
    with `"deleted": true` removes it, so the log is kill-safe and never rewritten."""
    latest: dict[str, tuple[str, dict[str, Any]]] = {}
    problems: list[Rejection] = []
    for row in _json_objects(root / RECORDINGS_LOG):
        if isinstance(row, Rejection):
            problems.append(row)
            continue
        where, fields = row
        latest[str(fields.get("id", where))] = (where, fields)
    kept = {key: entry for key, entry in latest.items() if not entry[1].get("deleted")}
    return kept, problems


def _read_recordings(source: RecordingsSource) -> Iterator[Item]:
    root = source.path.resolve()
    if not root.is_dir():
        raise UserError(f"recordings source {source.path}: no such folder")
    if not (root / RECORDINGS_LOG).is_file():
        raise UserError(f"recordings source {source.path}: no {RECORDINGS_LOG} in it (the UI "
                        "writes one with the first recording)")
    kept, problems = recording_entries(root)
    yield from problems
    yield from _from_rows(iter(kept.values()), root, "audio_path", "text")


def _read_prepared(source: PreparedSource) -> Iterator[Item]:
    root = source.path.resolve()
    if not (root / MANIFEST).is_file():
        raise UserError(f"prepared source {source.path}: no {MANIFEST} in it (give a folder "
                        "the prepare step wrote: a run's prepared/ or the UI's dataset/)")
    for row in _json_objects(root / MANIFEST):
        if isinstance(row, Rejection):
            yield row
            continue
        where, fields = row
        try:
            clip = Clip(**fields)
        except TypeError:
            yield Rejection(where, "missing_field", "not a manifest row (id, audio_path, text, "
                            "duration, language, split, source)")
            continue
        stored = PREPARED_AUDIO.match(str(clip.audio_path))
        if stored is None or not isinstance(clip.duration, (int, float)) \
                or clip.split not in SPLITS:
            yield Rejection(where, "bad_manifest_row", "audio_path must be audio/<hash>.flac, "
                            f"duration a number and split one of {', '.join(SPLITS)}")
            continue
        audio = resolve_inside(root, clip.audio_path)
        if audio is None:
            yield _escapes(where, clip.audio_path, root)
        elif not audio.is_file():
            yield Rejection(where, "missing_audio", f"{clip.audio_path} is not in {root}")
        else:
            yield Candidate(where, audio, clip.text, clip.language, prepared=clip)


def _decode_text(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8-sig")  # Notepad and Excel start UTF-8 text with a BOM
    except UnicodeDecodeError:
        return None


def _metadata_rows(path: Path, text_column: str | None) -> Iterator[tuple[str, Any, Any]]:
    """(where, file_name, text) per row of an audiofolder metadata.csv / metadata.jsonl."""
    if path.suffix == ".jsonl":
        for row in _json_objects(path):
            if isinstance(row, Rejection):
                yield row.source, None, row
            else:
                where, fields = row
                yield where, fields.get("file_name"), _pick_text(fields, text_column)
        return
    # Undecodable bytes become surrogates, so one bad row is rejected and the others are kept;
    # Excel's "CSV UTF-8" starts with a BOM (and ends lines with CRLF, which csv reads).
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    for number, fields in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        yield f"{path}:{number}", fields.get("file_name"), _pick_text(fields, text_column)


def _has_undecodable(text: str) -> bool:
    return any("\udc80" <= char <= "\udcff" for char in text)


def _pick_text(fields: dict[str, Any], text_column: str | None) -> Any:
    names = (text_column,) if text_column else TEXT_COLUMNS
    return next((fields[name] for name in names if name in fields), None)


def _read_folder(source: FolderSource) -> Iterator[Item]:
    root = source.path.resolve()
    if not root.is_dir():
        raise UserError(f"folder source {source.path}: no such folder")
    listed: set[Path] = set()
    metadata = sorted(root.rglob("metadata.jsonl")) + sorted(root.rglob("metadata.csv"))
    for meta in metadata:
        if _outside(meta, root):
            yield _escapes(str(meta), str(meta.relative_to(root)), root)
            continue
        for where, file_name, text in _metadata_rows(meta, source.text_column):
            if isinstance(text, Rejection):
                yield text
                continue
            audio = resolve_inside(meta.parent.resolve(), str(file_name or ""))
            if audio is None:
                yield _escapes(where, str(file_name), root)
                continue
            listed.add(audio)  # listed files are never also reported by the folder scan
            if not file_name or text is None:
                yield Rejection(where, "missing_field", "row needs file_name and a transcript "
                                f"column ({source.text_column or ', '.join(TEXT_COLUMNS)})")
                continue
            if isinstance(text, str) and _has_undecodable(text):
                yield Rejection(where, "bad_utf8", "transcript is not valid UTF-8")
                continue
            yield Candidate(where, audio, text)
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path in listed or path in metadata or any(p.startswith(".") for p in relative.parts):
            continue
        if _outside(path, root):  # a link to elsewhere: reading it would leak that file
            yield _escapes(str(path), str(relative), root)
            continue
        if path.is_dir():
            continue
        suffix = path.suffix.lower()
        if suffix == ".txt":
            if not any(path.with_suffix(s).exists() for s in AUDIO_SUFFIXES):
                yield Rejection(str(path), "missing_audio", "transcript without an audio file")
            continue
        if suffix not in AUDIO_SUFFIXES:
            yield Rejection(str(path), "not_audio", f"{suffix or 'no extension'} is not a "
                            f"supported audio type ({', '.join(sorted(AUDIO_SUFFIXES))})")
            continue
        sidecar = path.with_suffix(".txt")
        if _outside(sidecar, root):
            yield _escapes(str(path), str(sidecar.relative_to(root)), root)
            continue
        if not sidecar.is_file():
            yield Rejection(str(path), "missing_transcript", f"no {sidecar.name} and not "
                            "listed in a metadata file")
            continue
        text = _decode_text(sidecar.read_bytes())
        if text is None:
            yield Rejection(str(sidecar), "bad_utf8", "transcript is not valid UTF-8")
            continue
        # The sidecar's final line break is file formatting, not part of the transcript.
        yield Candidate(str(path), path, text.removesuffix("\n").removesuffix("\r"))


# --- Hugging Face datasets --------------------------------------------------------------------


def _load_dataset(dataset: str, config: str | None, split: str, *, revision: str | None = None,
                  streaming: bool = False) -> Any:
    import datasets  # heavy; only sources that need it pay for the import

    local = Path(dataset)
    if dataset.startswith(("/", ".")) and not local.exists():  # a path, never a Hub id
        raise UserError(f"dataset {dataset}: no such local folder")
    try:
        if (local / "state.json").is_file() or (local / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(local))
            return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        return datasets.load_dataset(dataset, config, split=split, revision=revision,
                                     streaming=streaming)
    except (FileNotFoundError, ValueError, KeyError) as error:
        hint = " (offline? set HF_HUB_OFFLINE=0 or pre-seed HF_HOME)" if "offline" in str(
            error).lower() else ""
        raise UserError(f"cannot load dataset {dataset!r} config={config!r} split={split!r}: "
                        f"{error}{hint}") from None


def _rows(dataset: Any, required: tuple[str, ...], max_samples: int | None, name: str,
          audio_column: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    from datasets import Audio

    columns = list(dataset.column_names or dataset.features or [])
    missing = [column for column in required if column not in columns]
    if missing:
        raise UserError(f"{name}: no column {', '.join(missing)}; columns are {columns}")
    if audio_column is not None:
        # Decode ourselves: datasets' own Audio decoding needs torchcodec + FFmpeg (DESIGN §8).
        dataset = dataset.cast_column(audio_column, Audio(decode=False))
    for index, row in enumerate(dataset):
        if max_samples is not None and index >= max_samples:
            return
        yield index, row


def _audio_of(value: Any) -> Path | bytes | None:
    """An undecoded Audio value: inline bytes (parquet) or a path (arrow/audiofolder)."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
    return Path(value) if value else None


def _read_hub(source: HubSource) -> Iterator[Item]:
    dataset = _load_dataset(source.dataset, source.config, source.split,
                            revision=source.revision, streaming=source.streaming)
    rows = _rows(dataset, (source.audio_column, source.text_column), source.max_samples,
                 source.dataset, audio_column=source.audio_column)
    for index, row in rows:
        where = f"{source.dataset}[{source.split}][{index}]"
        audio = _audio_of(row[source.audio_column])
        if audio is None:
            yield Rejection(where, "missing", "row has no audio")
            continue
        yield Candidate(where, audio, row[source.text_column], row.get("language"))


def _read_granary(source: GranarySource) -> Iterator[Item]:
    root = source.audio_root.resolve()
    if not root.is_dir():
        raise UserError(f"granary audio_root {source.audio_root}: no such folder; download the "
                        f"{source.subset.split('_', 1)[1]} audio there first")
    dataset = _load_dataset(source.dataset, source.subset, source.split,
                            streaming=source.streaming)
    rows = _rows(dataset, ("audio_filepath", "text"), source.max_samples,
                 f"{source.dataset}/{source.subset}")
    for index, row in rows:
        where = f"{source.dataset}/{source.subset}[{source.split}][{index}]"
        relative = str(row["audio_filepath"] or "")
        audio = resolve_inside(root, relative)
        if audio is None:
            yield _escapes(where, relative, root)
        elif not audio.exists():
            yield Rejection(where, "missing_audio", f"{relative} is not under {root}; "
                            "download that part of the source corpus")
        else:
            yield Candidate(where, audio, row["text"], source.language)
