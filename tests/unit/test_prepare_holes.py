"""The prepare step's review findings (issue 10), each on real files: transcripts that cannot
fit their clip, links out of a folder, byte-order marks, clipped audio, missing sources."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import speechlike, write_audio
from voxtune.data.manifest import read_jsonl, read_manifest
from voxtune.data.prepare import prepare
from voxtune.errors import UserError
from voxtune.spec import DataSpec


def clip(root: Path, name: str, seconds: float = 1.0, seed: int = 0) -> str:
    write_audio(root / name, speechlike(seconds, seed=seed))
    return name


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def reasons(out: Path) -> dict[str, str]:
    """Rejected item (file name or line number) → reason."""
    return {Path(row["source"]).name.rsplit(":", 1)[-1]: row["reason"]
            for row in read_jsonl(out / "rejected.jsonl")}


# --- transcripts that cannot be what was said in the clip ------------------------------------


def test_transcript_too_long_for_its_clip_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "src"
    rows = [
        {"audio_path": clip(root, "a.wav", 3.0, seed=1), "text": "x" * 10_000_000},  # 10 MB
        {"audio_path": clip(root, "b.wav", 3.0, seed=2), "text": "y" * 101},  # 30 × 3 + 10 = 100
        {"audio_path": clip(root, "c.wav", 3.0, seed=3), "text": "z" * 100},
        {"audio_path": clip(root, "ok.wav", 0.5, seed=4), "text": "OK"},
        {"audio_path": clip(root, "fast.wav", 2.0, seed=5),
         "text": "She sells sea shells by the sea shore."},
    ]
    out = tmp_path / "out"
    prepare(DataSpec(sources=[str(jsonl(root / "data.jsonl", rows))]), out)
    assert reasons(out) == {"1": "text_too_long", "2": "text_too_long"}
    assert sorted(len(c.text) for c in read_manifest(out)) == [2, 38, 100]
    detail = read_jsonl(out / "rejected.jsonl")[0]["detail"]
    assert "10000000 characters" in detail and "3.00-s clip holds at most 100" in detail


def test_chars_per_second_is_the_spec_knob(tmp_path: Path) -> None:
    root = tmp_path / "src"
    rows = [{"audio_path": clip(root, "a.wav", 1.0), "text": "w" * 30}]
    source = str(jsonl(root / "data.jsonl", rows))
    assert prepare(DataSpec(sources=[source]), tmp_path / "default").kept == 1
    strict = DataSpec(sources=[source], max_chars_per_second=10.0)  # 10 × 1 + 10 = 20 < 30
    assert prepare(strict, tmp_path / "strict").kept == 0


# --- links out of a folder source ------------------------------------------------------------


def test_folder_source_rejects_links_that_leave_it(tmp_path: Path) -> None:
    outside = tmp_path / "private"
    clip(outside, "secret.wav", seed=1)
    (outside / "secret.txt").write_text("a private transcript")
    (outside / "notes.txt").write_text("not for the dataset")
    (outside / "metadata.csv").write_text("file_name,text\nsecret.wav,leaked\n")
    root = tmp_path / "folder"
    clip(root, "kept.wav", seed=2)
    (root / "kept.txt").write_text("kept")
    os.symlink(outside / "secret.wav", root / "linked.wav")  # audio out, transcript in
    (root / "linked.txt").write_text("linked")
    clip(root, "own.wav", seed=3)
    os.symlink(outside / "secret.txt", root / "own.txt")  # audio in, transcript out
    os.symlink(outside, root / "subfolder")  # a whole folder
    (root / "meta").mkdir()
    os.symlink(outside / "metadata.csv", root / "meta" / "metadata.csv")
    os.symlink(root / "kept.wav", root / "alias.wav")  # stays inside: an ordinary file
    (root / "alias.txt").write_text("kept")  # alias.wav sorts first, so kept.wav is the copy
    out = tmp_path / "out"
    prepare(DataSpec(sources=[f"folder:{root}"]), out)
    assert sorted(c.text for c in read_manifest(out)) == ["kept"]
    assert reasons(out) == {"linked.wav": "escapes_root", "own.wav": "escapes_root",
                            "own.txt": "escapes_root", "subfolder": "escapes_root",
                            "metadata.csv": "escapes_root", "kept.wav": "duplicate"}
    assert b"private" not in (out / "manifest.jsonl").read_bytes()


# --- files as Windows tools write them -------------------------------------------------------

BOM = b"\xef\xbb\xbf"


def test_jsonl_with_a_byte_order_mark_keeps_its_first_row(tmp_path: Path) -> None:
    root = tmp_path / "src"
    rows = [{"audio_path": clip(root, f"{i}.wav", seed=i), "text": f"row {i}"} for i in range(3)]
    lines = [json.dumps(row).encode() for row in rows]
    (root / "data.jsonl").write_bytes(BOM + b"\r\n".join(lines) + b"\r\n")
    prepare(DataSpec(sources=[str(root / "data.jsonl")]), tmp_path / "out")
    assert sorted(c.text for c in read_manifest(tmp_path / "out")) == ["row 0", "row 1", "row 2"]


def test_excel_metadata_csv_and_notepad_sidecars(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" is BOM + CRLF; Notepad's UTF-8 .txt starts with a BOM too."""
    root = tmp_path / "folder"
    for i in range(3):
        clip(root, f"listed/{i}.wav", seed=i)
    (root / "listed" / "metadata.csv").write_bytes(
        BOM + "file_name,transcription\r\n0.wav,première\r\n1.wav,\"two, with comma\"\r\n"
        "2.wav,three\r\n".encode())
    clip(root, "side/s.wav", seed=9)
    (root / "side" / "s.txt").write_bytes(BOM + b"from notepad\r\n")
    out = tmp_path / "out"
    prepare(DataSpec(sources=[f"folder:{root}"]), out)
    assert sorted(c.text for c in read_manifest(out)) == [
        "from notepad", "première", "three", "two, with comma"]
    assert read_jsonl(out / "rejected.jsonl") == []


# --- clipped audio ---------------------------------------------------------------------------


def loud(root: Path, name: str, seed: int) -> str:
    """Speech-like audio driven 3× past full scale: flat tops, as an overloaded recorder makes."""
    write_audio(root / name, np.clip(10 * speechlike(1.0, seed=seed), -1.0, 1.0))
    return name


def test_clipped_clips_are_kept_and_listed_as_warnings(tmp_path: Path) -> None:
    root = tmp_path / "src"
    rows = [{"audio_path": loud(root, "loud1.wav", 1), "text": "loud one"},
            {"audio_path": loud(root, "loud2.wav", 2), "text": "loud two"},
            {"audio_path": clip(root, "clean.wav", seed=3), "text": "clean"}]
    source = str(jsonl(root / "data.jsonl", rows))
    out = tmp_path / "out"
    summary = prepare(DataSpec(sources=[source]), out)
    assert summary.kept == 3
    assert any(line.startswith("2 clips are clipped") and "warnings" in line
               for line in summary.lines())
    written = json.loads((out / "summary.json").read_text())
    by_clip = {c.id: c.text for c in read_manifest(out)}
    assert sorted(by_clip[w["clip"]] for w in written["warnings"]) == ["loud one", "loud two"]
    assert {w["reason"] for w in written["warnings"]} == {"clipped"}

    strict = prepare(DataSpec(sources=[source], max_clipped_fraction=0.05), tmp_path / "strict")
    assert strict.kept == 1 and strict.warnings == []
    assert reasons(tmp_path / "strict") == {"1": "clipped", "2": "clipped"}


# --- a named source that does not exist ------------------------------------------------------


@pytest.mark.parametrize("source", [
    "jsonl:{tmp}/missing.jsonl", "{tmp}/missing.jsonl", "folder:{tmp}/missing",
    "recordings:{tmp}/missing", "recordings:{tmp}", "hub:{tmp}/missing", "hub:./missing-dataset",
], ids=["jsonl", "jsonl-bare", "folder", "recordings", "recordings-without-log", "hub-path",
        "hub-relative"])
def test_missing_source_is_one_clear_error_naming_it(tmp_path: Path, source: str) -> None:
    source = source.format(tmp=tmp_path)
    with pytest.raises(UserError) as error:
        prepare(DataSpec(sources=[source]), tmp_path / "out")
    named = source if source.startswith("/") else source.split(":", 1)[1]
    message = str(error.value)
    assert named in message and "\n" not in message
