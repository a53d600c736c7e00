"""The prepare step on real files: every rejection reason, every source kind, reruns and kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.helpers import speechlike, write_audio
from voxtune.data.manifest import read_jsonl, read_manifest
from voxtune.data.prepare import CACHE, prepare
from voxtune.spec import DataSpec

ACCENTED = "Ça coûte « 5 € » — l’été, naïve “quotes” 日本語"


def jsonl(path: Path, rows: list[dict | bytes]) -> Path:
    lines = [row if isinstance(row, bytes) else json.dumps(row, ensure_ascii=False).encode()
             for row in rows]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def good(root: Path, name: str, seconds: float = 1.0, rate: int = 16_000,
         subtype: str = "PCM_16", seed: int = 0) -> str:
    write_audio(root / name, speechlike(seconds, rate, seed), rate, subtype)
    return name


@pytest.fixture
def mixed_batch(tmp_path: Path) -> Path:
    """A JSONL source with good clips of many formats and one bad input per rejection reason."""
    root = tmp_path / "source"
    (root / "a-folder").mkdir(parents=True)
    good(tmp_path, "outside.wav")
    wav = (root / "truncated.wav")
    wav.write_bytes(Path(root / good(root, "whole.wav", seconds=2.0, seed=9)).read_bytes()[:20000])
    flac = root / "corrupt.flac"
    good(root, "corrupt.flac", seconds=2.0, seed=8)
    flac.write_bytes(flac.read_bytes()[:3000])
    soundfile.write(root / "empty.wav", np.zeros(0, dtype=np.float32), 16_000)
    (root / "text.wav").write_text("this is not audio")
    os.symlink(tmp_path / "outside.wav", root / "link.wav")
    rows: list[dict | bytes] = [
        {"audio_path": good(root, "g16.wav", seed=1), "text": "sixteen kilohertz"},
        {"audio_path": good(root, "g8.wav", rate=8_000, seed=2), "text": "eight kilohertz"},
        {"audio_path": good(root, "g44.flac", seconds=2.0, rate=44_100, subtype="PCM_24",
                            seed=3), "text": ACCENTED},
        {"audio_path": good(root, "g48.wav", rate=48_000, subtype="FLOAT", seed=4),
         "text": "float", "language": "fr"},
        {"audio_path": "g16.wav", "text": "sixteen kilohertz"},  # duplicate of line 1
        {"audio_path": "g16.wav", "text": "same audio, other words"},  # conflicting
        {"audio_path": "truncated.wav", "text": "t"},
        {"audio_path": "corrupt.flac", "text": "t"},
        {"audio_path": "empty.wav", "text": "t"},
        {"audio_path": "text.wav", "text": "t"},
        {"audio_path": "a-folder", "text": "t"},
        {"audio_path": "nowhere.wav", "text": "t"},
        {"audio_path": "../outside.wav", "text": "t"},
        {"audio_path": "link.wav", "text": "t"},
        {"audio_path": good(root, "short.wav", seconds=0.2), "text": "t"},
        {"audio_path": good(root, "long.wav", seconds=31.0), "text": "t"},
        {"audio_path": write_audio(root / "silent.wav", np.zeros(16_000, np.float32)).name,
         "text": "t"},
        {"audio_path": good(root, "g5.wav", seed=5), "text": "   "},
        {"audio_path": "g5.wav", "text": None},
        b'{"audio_path": "g5.wav", "text": "\\ud800 lone surrogate"}',
        b'{"audio_path": "g5.wav", "text": "caf\xe9 in latin-1"}',
        b"{not json",
        {"text": "no audio_path"},
        {"audio_path": "g5.wav"},
        {"audio_path": "g5.wav", "text": "bad language", "language": "english"},
    ]
    return jsonl(root / "data.jsonl", rows)


EXPECTED_REASONS = {
    7: "truncated", 8: "unreadable", 9: "empty", 10: "not_audio", 11: "is_directory",
    12: "missing", 13: "escapes_root", 14: "escapes_root", 15: "too_short", 16: "too_long",
    17: "silent", 18: "empty_text", 19: "empty_text", 20: "bad_utf8", 21: "bad_utf8",
    22: "bad_json", 23: "missing_field", 24: "missing_field", 25: "bad_language", 5: "duplicate",
    6: "conflicting_transcript",
}


def test_mixed_batch_keeps_every_good_clip_and_explains_every_rejection(
        mixed_batch: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    summary = prepare(DataSpec(sources=[str(mixed_batch)]), out, language="en")

    rejected = {int(row["source"].rsplit(":", 1)[1]): row for row in read_jsonl(
        out / "rejected.jsonl")}
    assert {line: row["reason"] for line, row in rejected.items()} == EXPECTED_REASONS
    assert all(row["detail"] for row in rejected.values())
    clips = read_manifest(out)
    assert [clip.source.rsplit(":", 1)[1] for clip in clips] == ["1", "2", "3", "4"]
    assert summary.kept == 4 and sum(summary.rejected.values()) == len(EXPECTED_REASONS)
    for clip in clips:
        info = soundfile.info(out / clip.audio_path)
        assert (info.samplerate, info.channels, info.format) == (16_000, 1, "FLAC")
        assert clip.duration == pytest.approx(info.frames / 16_000)
        assert clip.audio_path.startswith("audio/") and str(tmp_path) not in clip.audio_path
    assert {clip.language for clip in clips} == {"en", "fr"}
    assert {clip.split for clip in clips} == {"train", "eval"}


def test_utf8_transcripts_are_kept_byte_for_byte(mixed_batch: Path, tmp_path: Path) -> None:
    prepare(DataSpec(sources=[str(mixed_batch)]), tmp_path / "out")
    raw = (tmp_path / "out" / "manifest.jsonl").read_bytes()
    assert ACCENTED.encode("utf-8") in raw


def test_rerun_reuses_work_and_never_duplicates(mixed_batch: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    data = DataSpec(sources=[str(mixed_batch)])
    prepare(data, out)
    first = {name: (out / name).read_bytes() for name in ("manifest.jsonl", "rejected.jsonl")}
    decoded_once = len(read_jsonl(out / CACHE))
    stored = {path: path.stat().st_mtime_ns for path in (out / "audio").iterdir()}
    prepare(data, out)
    assert {name: (out / name).read_bytes() for name in first} == first
    assert len(read_jsonl(out / CACHE)) == decoded_once  # nothing was decoded again
    assert {path: path.stat().st_mtime_ns for path in (out / "audio").iterdir()} == stored


def test_split_is_by_id_not_position(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    rows = [{"audio_path": good(root, f"{i}.wav", seed=i), "text": f"clip {i}"}
            for i in range(12)]
    forward = prepare(DataSpec(sources=[str(jsonl(root / "a.jsonl", rows))], eval_fraction=0.25),
                      tmp_path / "a")
    prepare(DataSpec(sources=[str(jsonl(root / "b.jsonl", rows[::-1]))], eval_fraction=0.25),
            tmp_path / "b")
    split_a = {clip.id: clip.split for clip in read_manifest(tmp_path / "a")}
    split_b = {clip.id: clip.split for clip in read_manifest(tmp_path / "b")}
    assert split_a == split_b and forward.splits["eval"]["clips"] >= 1


def test_two_clips_still_get_an_eval_clip(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    rows = [{"audio_path": good(root, f"{i}.wav", seed=i), "text": f"clip {i}"} for i in (1, 2)]
    prepare(DataSpec(sources=[str(jsonl(root / "d.jsonl", rows))], eval_fraction=0.01),
            tmp_path / "out")
    assert sorted(clip.split for clip in read_manifest(tmp_path / "out")) == ["eval", "train"]


def test_folder_source_metadata_and_sidecars(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    good(root, "listed/a.wav", seed=1)
    good(root, "listed/b.flac", seed=2)
    good(root, "listed/c.wav", seed=3)
    (root / "listed" / "metadata.csv").write_bytes(
        b"file_name,transcription\na.wav,first clip\nb.flac,\"second, with comma\"\n"
        b"c.wav,caf\xe9\n")
    good(root, "side/d.wav", seed=4)
    (root / "side" / "d.txt").write_text("sidecar text\n")
    good(root, "side/e.wav", seed=5)  # no transcript
    (root / "side" / "orphan.txt").write_text("no audio for me")
    (root / "notes.pdf").write_bytes(b"%PDF-1.4")
    (root / "meta2").mkdir()
    good(root, "meta2/f.wav", seed=6)
    (root / "meta2" / "metadata.jsonl").write_text(json.dumps(
        {"file_name": "f.wav", "text": "from jsonl"}) + "\n")
    out = tmp_path / "out"
    prepare(DataSpec(sources=[f"folder:{root}"]), out)
    assert sorted(clip.text for clip in read_manifest(out)) == [
        "first clip", "from jsonl", "second, with comma", "sidecar text"]
    reasons = sorted(row["reason"] for row in read_jsonl(out / "rejected.jsonl"))
    assert reasons == ["bad_utf8", "missing_audio", "missing_transcript", "not_audio"]


def test_recordings_source_last_take_wins(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    log = [
        {"id": "p1", "audio_path": good(root, "clips/p1-a.wav", seed=1), "text": "take one",
         "language": "sv"},
        {"id": "p2", "audio_path": good(root, "clips/p2.wav", seed=2), "text": "deleted later"},
        {"id": "p1", "audio_path": good(root, "clips/p1-b.wav", seed=3), "text": "take two",
         "language": "sv"},
        {"id": "p2", "deleted": True},
        {"id": "p3", "audio_path": good(root, "clips/p3.wav", seed=4), "text": "kept"},
    ]
    jsonl(root / "recordings.jsonl", log)
    prepare(DataSpec(sources=[f"recordings:{root}"]), tmp_path / "out", language="en")
    clips = read_manifest(tmp_path / "out")
    assert sorted((clip.text, clip.language) for clip in clips) == [("kept", "en"),
                                                                   ("take two", "sv")]


def hub_format_dataset(path: Path, count: int) -> Path:
    """A local dataset as the Hub stores it: parquet with an Audio column holding FLAC bytes."""
    from datasets import Audio, Dataset

    buffers = []
    for index in range(count):
        good(path / "raw", f"{index}.flac", rate=22_050, seed=index)
        buffers.append({"bytes": (path / "raw" / f"{index}.flac").read_bytes(),
                        "path": f"{index}.flac"})
    buffers[-1] = {"bytes": b"garbage", "path": "bad.flac"}
    dataset = Dataset.from_dict({"audio": buffers,
                                 "sentence": [f"row {i}" for i in range(count)]})
    dataset = dataset.cast_column("audio", Audio(decode=False))
    (path / "hub" / "data").mkdir(parents=True)
    dataset.to_parquet(path / "hub" / "data" / "train-00000-of-00001.parquet")
    return path / "hub"


@pytest.mark.parametrize("streaming", [False, True], ids=["download", "streaming"])
def test_hub_dataset_in_hub_format(tmp_path: Path, streaming: bool) -> None:
    local = hub_format_dataset(tmp_path, 6)
    out = tmp_path / "out"
    source = {"kind": "hub", "dataset": str(local), "split": "train",
              "text_column": "sentence", "streaming": streaming, "max_samples": 6}
    prepare(DataSpec(sources=[source]), out, language="de")
    assert sorted(clip.text for clip in read_manifest(out)) == [f"row {i}" for i in range(5)]
    assert [row["reason"] for row in read_jsonl(out / "rejected.jsonl")] == ["not_audio"]
    limited = DataSpec(sources=[{**source, "max_samples": 2}])
    assert prepare(limited, tmp_path / "two").kept == 2


def test_hub_dataset_wrong_column_is_a_clear_error(tmp_path: Path) -> None:
    from voxtune.errors import UserError

    local = hub_format_dataset(tmp_path, 2)
    with pytest.raises(UserError, match="no column transcript; columns are"):
        prepare(DataSpec(sources=[{"kind": "hub", "dataset": str(local),
                                   "text_column": "transcript"}]), tmp_path / "out")


def test_granary_layout_joined_with_audio_root(tmp_path: Path) -> None:
    manifests = tmp_path / "granary"
    (manifests / "sv" / "voxpopuli").mkdir(parents=True)
    (manifests / "README.md").write_text(
        "---\nconfigs:\n- config_name: sv_voxpopuli\n  data_files:\n"
        "  - split: asr\n    path: sv/voxpopuli/sv_voxpopuli_asr.jsonl\n"
        "  - split: ast\n    path: sv/voxpopuli/sv_voxpopuli_ast.jsonl\n---\n")
    audio = tmp_path / "voxpopuli-audio"
    entries = []
    for index in range(4):
        relative = f"2019/2019_{index:04d}.wav"
        if index < 3:
            good(audio, relative, seed=index)
        entries.append({"audio_filepath": relative, "text": f"hej {index}", "duration": 1.0,
                        "utt_id": f"u{index}"})
    entries.append({"audio_filepath": "../../etc/passwd", "text": "x", "duration": 1.0,
                    "utt_id": "evil"})
    for split in ("asr", "ast"):
        jsonl(manifests / "sv" / "voxpopuli" / f"sv_voxpopuli_{split}.jsonl", entries)
    out = tmp_path / "out"
    source = f"granary:sv_voxpopuli?split=asr&audio_root={audio}&dataset={manifests}"
    prepare(DataSpec(sources=[source]), out)
    clips = read_manifest(out)
    assert sorted(clip.text for clip in clips) == ["hej 0", "hej 1", "hej 2"]
    assert {clip.language for clip in clips} == {"sv"}
    assert sorted(row["reason"] for row in read_jsonl(out / "rejected.jsonl")) == [
        "escapes_root", "missing_audio"]


# --- the command line -------------------------------------------------------------------------


def voxtune(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxtune", *args], capture_output=True,
                          text=True, **kwargs)


def test_cli_summary_and_exit_codes(mixed_batch: Path, tmp_path: Path) -> None:
    done = voxtune("prepare", "--source", str(mixed_batch), "--output", str(tmp_path / "ok"),
                   "--language", "en")
    assert done.returncode == 0, done.stderr
    assert "kept 4 clips" in done.stdout and "rejected 21:" in done.stdout

    empty = jsonl(tmp_path / "empty.jsonl", [{"audio_path": "missing.wav", "text": "x"}])
    nothing = voxtune("prepare", "--source", str(empty), "--output", str(tmp_path / "none"))
    assert nothing.returncode == 2
    assert "no usable clips" in nothing.stderr and "Traceback" not in nothing.stderr

    for bad in (["--source", str(empty), "--output", str(tmp_path), "--language", "english"],
                ["--source", "hub:x?split=a&colour=red", "--output", str(tmp_path)],
                ["--source", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o")]):
        failed = voxtune("prepare", *bad)
        assert failed.returncode == 2, failed.stderr
        assert failed.stderr.startswith("error:") and "Traceback" not in failed.stderr


def test_killed_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    """SIGKILL mid-decoding, run again: the result equals an uninterrupted run's."""
    root = tmp_path / "clips"
    rows = [{"audio_path": good(root, f"{i}.wav", seconds=8.0, rate=48_000, seed=i),
             "text": f"clip {i}"} for i in range(60)]
    source = str(jsonl(root / "data.jsonl", rows))
    out = tmp_path / "killed"
    args = ["prepare", "--source", source, "--output", str(out), "--workers", "1"]
    process = subprocess.Popen([sys.executable, "-m", "voxtune", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = out / CACHE
    while process.poll() is None and not (cache.exists() and len(read_jsonl(cache)) >= 5):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.jsonl").exists(), "finished before it could be killed"
    assert voxtune(*args).returncode == 0
    assert voxtune("prepare", "--source", source, "--output", str(tmp_path / "clean"),
                   "--workers", "1").returncode == 0
    assert (out / "manifest.jsonl").read_bytes() == (tmp_path / "clean" /
                                                     "manifest.jsonl").read_bytes()
    assert not list(out.rglob("*.tmp"))


# --- a full disk (issue 10, item 11) ----------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs), for prepare to fill; needs root, as CI has."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)


@pytest.mark.parametrize("workers", ["1", "2"], ids=["in-process", "worker-processes"])
def test_full_disk_is_one_line_and_a_rerun_recovers(small_disk: Path, tmp_path: Path,
                                                    workers: str) -> None:
    root = tmp_path / "clips"
    rows = [{"audio_path": good(root, f"{i}.wav", seconds=3.0, seed=i), "text": f"clip {i}"}
            for i in range(40)]  # ~4 MB of FLAC for a 1 MiB disk
    source = str(jsonl(root / "data.jsonl", rows))
    out = small_disk / "prepared"
    args = ["prepare", "--source", source, "--output", str(out), "--workers", workers]

    full = voxtune(*args)
    assert full.returncode == 74, full.stderr
    assert full.stderr.startswith(f"error: no space left on {out}")
    assert full.stderr.count("\n") == 1 and "Traceback" not in full.stderr
    assert not (out / "manifest.jsonl").exists()

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    assert voxtune(*args).returncode == 0
    clean = tmp_path / "clean"
    assert voxtune("prepare", "--source", source, "--output", str(clean)).returncode == 0
    assert (out / "manifest.jsonl").read_bytes() == (clean / "manifest.jsonl").read_bytes()
    for clip in read_manifest(out):  # every stored clip is whole, none half-written
        assert soundfile.info(out / clip.audio_path).frames == round(clip.duration * 16_000)
    assert not list(out.rglob("*.tmp"))


# --- workers die with prepare (item 12) -------------------------------------------------------


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue  # not a process, or it exited meanwhile
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for a reaper (this may be a container
    whose init does not reap)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_prepare_takes_its_workers_with_it(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    rows = [{"audio_path": good(root, f"{i}.wav", seconds=8.0, rate=48_000, seed=i),
             "text": f"clip {i}"} for i in range(60)]
    source = str(jsonl(root / "data.jsonl", rows))
    process = subprocess.Popen([sys.executable, "-m", "voxtune", "prepare", "--source", source,
                                "--output", str(tmp_path / "out"), "--workers", "3"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    while process.poll() is None and len(workers) < 3:
        workers = children(process.pid)
        time.sleep(0.01)
    assert process.poll() is None, "finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 60  # a bounded wait for the condition, not a speed limit
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [pid for pid in workers if alive(pid)]
    for pid in survivors:  # never leave orphans behind, even when failing
        os.kill(pid, signal.SIGKILL)
    assert not survivors, "workers outlived prepare"
