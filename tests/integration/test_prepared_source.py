"""A prepared folder as a source: taken as it is (nothing decoded), mixed with other sources,
and its bad rows rejected one by one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import speechlike, write_audio
from voxtune.data import prepare as prepare_module
from voxtune.data.manifest import MANIFEST, REJECTED, read_jsonl, read_manifest
from voxtune.data.prepare import prepare
from voxtune.errors import UserError
from voxtune.spec import DataSpec, PreparedSource


def listing(root: Path, count: int, first_seed: int = 0) -> Path:
    """A JSONL source of `count` distinct one-second clips."""
    rows = []
    for number in range(count):
        name = f"clip{first_seed + number}.wav"
        write_audio(root / name, speechlike(1.0, 16_000, first_seed + number), 16_000)
        rows.append({"audio_path": name, "text": f"clip number {first_seed + number}"})
    path = root / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every audio the prepare step decodes (workers=1 decodes in this process)."""
    seen: list[object] = []
    real = prepare_module.load_clip

    def counting(audio, limits):
        seen.append(audio)
        return real(audio, limits)

    monkeypatch.setattr(prepare_module, "load_clip", counting)
    return seen


def test_a_prepared_folder_is_reused_without_decoding(tmp_path: Path,
                                                       decodes: list[object]) -> None:
    first = tmp_path / "first"
    prepare(DataSpec(sources=[str(listing(tmp_path / "in", 6))], eval_fraction=0.3), first,
            workers=1)
    assert len(decodes) == 6
    decodes.clear()
    again = tmp_path / "again"
    # another eval_fraction: the prepared rows keep the split they were given
    summary = prepare(DataSpec(sources=[PreparedSource(path=first)], eval_fraction=0.5), again,
                      workers=1)
    assert decodes == [] and summary.kept == 6
    assert read_manifest(again) == read_manifest(first)
    for clip in read_manifest(again):
        assert (again / clip.audio_path).stat().st_ino == (first / clip.audio_path).stat().st_ino


def test_prepared_and_raw_sources_mix(tmp_path: Path, decodes: list[object]) -> None:
    first = tmp_path / "first"
    prepare(DataSpec(sources=[str(listing(tmp_path / "a", 3))]), first, workers=1)
    decodes.clear()
    mixed = tmp_path / "mixed"
    prepare(DataSpec(sources=[PreparedSource(path=first), str(listing(tmp_path / "b", 2, 10))]),
            mixed, workers=1)
    assert len(decodes) == 2  # only the new clips
    rows = read_manifest(mixed)
    assert len(rows) == 5
    assert set(read_manifest(first)) <= set(rows)


def test_bad_rows_of_a_prepared_folder_are_rejected_each_with_a_reason(tmp_path: Path) -> None:
    first = tmp_path / "first"
    prepare(DataSpec(sources=[str(listing(tmp_path / "in", 3))]), first, workers=1)
    rows = read_jsonl(first / MANIFEST)
    (first / rows[0]["audio_path"]).unlink()
    broken = [rows[0], {**rows[1], "audio_path": "../elsewhere.flac"}, {"id": "x"}, rows[2]]
    (first / MANIFEST).write_text("".join(json.dumps(row) + "\n" for row in broken) + "{oops\n")
    out = tmp_path / "out"
    assert prepare(DataSpec(sources=[PreparedSource(path=first)]), out, workers=1).kept == 1
    reasons = sorted(row["reason"] for row in read_jsonl(out / REJECTED))
    assert reasons == ["bad_json", "bad_manifest_row", "missing_audio", "missing_field"]


def test_a_folder_without_a_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no manifest\.jsonl"):
        prepare(DataSpec(sources=[PreparedSource(path=tmp_path)]), tmp_path / "out")
