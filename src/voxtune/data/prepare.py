"""Prepare step: speech sources → validated 16 kHz clips + manifest.jsonl + rejected.jsonl.

Runbook:
    voxtune prepare --source data.jsonl --source recordings:./rec --output ./prepared
    voxtune prepare --run-dir $VOXTUNE_HOME/runs/my-run          # sources from spec.yaml
    kubectl apply -f jobs/prepare-job.yaml                        # same, as a Job

Exit 0 when at least one clip was kept, 2 when nothing usable was found or the input is invalid.
Re-running reuses finished clips (content-addressed audio + a cache of decoded inputs) and
rewrites the manifest whole, so a killed run is simply run again. A `prepared` source (a folder
this step wrote before) is not decoded at all: its audio files are hard-linked (copied across
filesystems) and its rows keep their ids and split.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

from tqdm import tqdm

from voxtune.data.audio import (
    SAMPLE_RATE,
    AudioRejected,
    ClipLimits,
    flac_bytes,
    load_clip,
    to_pcm16,
)
from voxtune.data.manifest import (
    AUDIO_DIR,
    MANIFEST,
    REJECTED,
    SUMMARY,
    Clip,
    Rejection,
    assign_splits,
    clip_id,
    jsonl_bytes,
    read_jsonl,
)
from voxtune.data.sources import Candidate, describe, read_source
from voxtune.errors import NoSpaceError, UserError
from voxtune.files import write_atomic
from voxtune.processes import die_with_parent
from voxtune.spec import LANGUAGE_CODE, DataSpec

CACHE = ".prepare-cache.jsonl"
BATCH = 256  # candidates decoded per round; bounds memory when streaming large datasets
TEXT_SLACK = 10  # characters allowed on top of max_chars_per_second, so a 0.5-s "OK." fits


@dataclass
class Summary:
    output: str
    kept: int = 0
    minutes: float = 0.0
    splits: dict[str, dict[str, float]] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    warnings: list[dict[str, str]] = field(default_factory=list)  # kept clips worth a look

    def lines(self) -> list[str]:
        out = [f"kept {self.kept} clips ({self.minutes:.1f} min) in {self.output}"]
        out += [f"  {name}: {part['clips']:.0f} clips, {part['minutes']:.1f} min"
                for name, part in self.splits.items()]
        if self.rejected:
            reasons = ", ".join(f"{reason} {count}" for reason, count in
                                sorted(self.rejected.items(), key=lambda kv: -kv[1]))
            out.append(f"rejected {sum(self.rejected.values())}: {reasons} "
                       f"(each with its reason in {Path(self.output) / REJECTED})")
        clipped = sum(warning["reason"] == "clipped" for warning in self.warnings)
        if clipped:
            out.append(f"{clipped} clip{'s are' if clipped > 1 else ' is'} clipped (flat at full "
                       "scale in places; recognition may suffer): listed in warnings in "
                       f"{Path(self.output) / SUMMARY}")
        return out


@dataclass(frozen=True)
class _Decoded:
    """What decoding one candidate produced: the stored clip's hash + length, or a rejection."""

    sha256: str | None = None
    duration: float = 0.0
    clipped: float = 0.0  # audio.clipped_fraction of the source
    reason: str | None = None
    detail: str | None = None


def prepare(data: DataSpec, output: Path, language: str | None = None,
            workers: int | None = None) -> Summary:
    """Run the whole step and return its summary (also written to summary.json).

    Raises NoSpaceError when the disk under `output` fills up; rerunning after freeing space
    continues from the clips already stored."""
    with _full_disk_as_no_space(output):
        return _prepare(data, output, language, workers)


@contextmanager
def _full_disk_as_no_space(output: Path) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        raise NoSpaceError(output) from None


def _prepare(data: DataSpec, output: Path, language: str | None, workers: int | None) -> Summary:
    output.mkdir(parents=True, exist_ok=True)
    (output / AUDIO_DIR).mkdir(exist_ok=True)
    for leftover in (output / AUDIO_DIR).glob(".*.tmp"):  # half-written by a killed run
        leftover.unlink(missing_ok=True)
    limits = ClipLimits(data.min_duration, data.max_duration, data.silence_dbfs,
                        data.max_clipped_fraction)
    if not data.sources:
        raise UserError("no data sources: pass --source (or set data.sources in the spec)")

    # 1. list every source; listing problems become rejections right away
    rejections: list[Rejection] = []
    candidates: list[Candidate] = []
    for source in data.sources:
        for item in tqdm(read_source(source), desc=f"listing {describe(source)}", unit=" items",
                         disable=None, leave=False):
            (rejections if isinstance(item, Rejection) else candidates).append(item)

    # 2. validate transcripts and languages before paying for audio decoding
    candidates = [c for c in candidates if _text_ok(c, language, rejections)]

    # 3. decode, resample, check and store the audio (in parallel, reusing earlier work)
    decoded = _decode_all(candidates, output, limits, workers)

    # 4. keep the first clip of each audio, split by id hash (a prepared row keeps its split),
    #    write atomically
    clips: list[Clip] = []
    kept_splits: dict[str, str] = {}  # clip id → the split a prepared source gave it
    warnings: list[dict[str, str]] = []
    first_seen: dict[str, Candidate] = {}  # by audio hash
    for candidate, result in zip(candidates, decoded, strict=True):
        if result.sha256 is None:
            rejections.append(Rejection(candidate.source, result.reason or "unreadable",
                                        result.detail or ""))
            continue
        problem = _clip_problem(candidate, result.duration, first_seen.get(result.sha256),
                                data.max_chars_per_second)
        if problem:
            rejections.append(Rejection(candidate.source, *problem))
            continue
        first_seen[result.sha256] = candidate
        origin = candidate.prepared.source if candidate.prepared else candidate.source
        clip = Clip(clip_id(result.sha256, candidate.text), f"{AUDIO_DIR}/{result.sha256}.flac",
                    candidate.text, round(result.duration, 3), candidate.language or language,
                    "", origin)
        clips.append(clip)
        if candidate.prepared:
            kept_splits[clip.id] = candidate.prepared.split
        if result.clipped:
            warnings.append({"source": clip.source, "clip": clip.id, "reason": "clipped",
                             "detail": f"a share of {result.clipped:.2g} of its samples "
                             "is flat at full scale"})
    splits = {**assign_splits([clip.id for clip in clips if clip.id not in kept_splits],
                              data.eval_fraction), **kept_splits}
    clips = [Clip(**{**asdict(clip), "split": splits[clip.id]}) for clip in clips]
    write_atomic(output / MANIFEST, jsonl_bytes(clips))
    write_atomic(output / REJECTED, jsonl_bytes(rejections))
    summary = _summarise(output, clips, rejections, warnings)
    write_atomic(output / SUMMARY, json.dumps(asdict(summary), indent=2).encode())
    return summary


def _text_ok(candidate: Candidate, language: str | None, rejections: list[Rejection]) -> bool:
    def reject(reason: str, detail: str) -> bool:
        rejections.append(Rejection(candidate.source, reason, detail))
        return False

    text = candidate.text
    if not isinstance(text, str):
        return reject("empty_text", "transcript is missing or not a string")
    if not text.strip():
        return reject("empty_text", "transcript is empty or only whitespace")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return reject("bad_utf8", "transcript is not valid UTF-8")
    code = candidate.language
    if code is not None and not (isinstance(code, str) and len(code) == 2 and code.islower()):
        return reject("bad_language", f"language {code!r} is not an ISO-639-1 code "
                      f"({LANGUAGE_CODE})")
    return True


def _clip_problem(candidate: Candidate, duration: float, first: Candidate | None,
                  max_chars_per_second: float) -> tuple[str, str] | None:
    """(reason, detail) when a decoded candidate cannot be kept, else None; `first` is the kept
    candidate with the same audio, if any."""
    room = int(max_chars_per_second * duration) + TEXT_SLACK
    if len(candidate.text) > room:
        return "text_too_long", (
            f"transcript has {len(candidate.text)} characters; a {duration:.2f}-s clip holds at "
            f"most {room} (data.max_chars_per_second={max_chars_per_second:g}, plus "
            f"{TEXT_SLACK}): is it the transcript of this clip?")
    if first is None:
        return None
    if first.text == candidate.text:
        return "duplicate", f"same audio and transcript as {first.source}"
    return "conflicting_transcript", (
        f"same audio as {first.source}, which is kept with another transcript "
        f"({first.text[:60]!r}); fix whichever is wrong")


def _cache_key(candidate: Candidate, limits: ClipLimits) -> str:
    """Identity of the input bytes + the checks applied; unchanged inputs are not decoded again."""
    if isinstance(candidate.audio, bytes):
        origin = hashlib.sha256(candidate.audio).hexdigest()
    else:
        try:
            stat = candidate.audio.stat()
        except OSError:
            return ""  # missing/unreadable: cheap to re-check, never cached
        origin = f"{candidate.audio.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return f"{origin}|{limits}"


def _decode_all(candidates: list[Candidate], output: Path, limits: ClipLimits,
                workers: int | None) -> list[_Decoded]:
    cache_path = output / CACHE
    cached = {row["key"]: _Decoded(**row["result"]) for row in
              (read_jsonl(cache_path) if cache_path.exists() else [])}
    keys = [_cache_key(candidate, limits) for candidate in candidates]
    results: dict[int, _Decoded] = {}
    todo: list[int] = []
    for index, key in enumerate(keys):
        if candidates[index].prepared is not None:
            results[index] = _reuse_prepared(candidates[index], output / AUDIO_DIR)
            continue
        hit = cached.get(key) if key else None
        if hit and (hit.sha256 is None or (output / AUDIO_DIR / f"{hit.sha256}.flac").exists()):
            results[index] = hit
        else:
            todo.append(index)
    workers = workers or len(os.sched_getaffinity(0))
    with open(cache_path, "a", encoding="utf-8") as cache, tqdm(
            total=len(candidates), initial=len(results), desc="decoding", unit=" clips",
            disable=None) as progress:
        jobs = [(candidates[i].audio, limits, output / AUDIO_DIR) for i in todo]
        for index, result in zip(todo, _map(_decode_one, jobs, workers), strict=True):
            results[index] = result
            if keys[index]:  # append as we go: a killed run keeps what it finished
                cache.write(json.dumps({"key": keys[index], "result": asdict(result)}) + "\n")
                cache.flush()
            progress.update()
    return [results[index] for index in range(len(candidates))]


def _map(function, jobs: list[tuple], workers: int) -> Iterator[_Decoded]:
    """Map in order; processes only when there is enough work to pay for starting them."""
    if workers <= 1 or len(jobs) < 16:
        yield from (function(*job) for job in jobs)
        return
    # SIGKILL: a worker of a prepare that was killed outright has nothing worth finishing
    with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent,
                             initargs=(signal.SIGKILL, os.getpid())) as pool:
        iterator = iter(jobs)
        while batch := list(islice(iterator, BATCH)):
            yield from pool.map(function, *zip(*batch, strict=True), chunksize=8)


def _reuse_prepared(candidate: Candidate, audio_dir: Path) -> _Decoded:
    """A prepared source's clip: its stored audio is linked in under the same name (its content
    hash), its length taken from its row; nothing is decoded."""
    assert candidate.prepared is not None and isinstance(candidate.audio, Path)
    target = audio_dir / Path(candidate.prepared.audio_path).name
    if not target.exists():
        temporary = audio_dir / f".{target.name}.tmp"  # removed at the start if left behind
        temporary.unlink(missing_ok=True)
        try:
            os.link(candidate.audio, temporary)
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise
            shutil.copyfile(candidate.audio, temporary)  # another filesystem: no hard links
        os.replace(temporary, target)
    return _Decoded(sha256=target.stem, duration=float(candidate.prepared.duration))


def _decode_one(audio: Path | bytes, limits: ClipLimits, audio_dir: Path) -> _Decoded:
    try:
        samples, clipped = load_clip(audio, limits)
    except AudioRejected as rejected:
        return _Decoded(reason=rejected.reason, detail=str(rejected))
    pcm = to_pcm16(samples)
    sha256 = hashlib.sha256(pcm.tobytes()).hexdigest()[:32]
    target = audio_dir / f"{sha256}.flac"
    if not target.exists():
        write_atomic(target, flac_bytes(pcm))  # a full disk raises OSError(ENOSPC) here
    return _Decoded(sha256=sha256, duration=len(pcm) / SAMPLE_RATE, clipped=round(clipped, 6))


def _summarise(output: Path, clips: Iterable[Clip], rejections: list[Rejection],
               warnings: list[dict[str, str]]) -> Summary:
    clips = list(clips)
    summary = Summary(str(output), kept=len(clips),
                      minutes=sum(clip.duration for clip in clips) / 60,
                      rejected=dict(Counter(rejection.reason for rejection in rejections)),
                      warnings=warnings)
    for name in ("train", "eval"):
        part = [clip for clip in clips if clip.split == name]
        summary.splits[name] = {"clips": len(part),
                                "minutes": sum(clip.duration for clip in part) / 60}
    return summary
