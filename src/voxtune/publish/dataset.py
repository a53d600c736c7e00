"""A prepared folder as a Hugging Face dataset: parquet files with an Audio column, and a summary.

The parquet files carry `datasets`' feature metadata, so `load_dataset(repo_or_folder)` gives
an `Audio(sampling_rate=16000)` column; the audio stays the FLAC bytes the prepare step wrote
(no re-encoding, no torchcodec needed). `DATA_DIR/<split>-00000-of-00001.parquet` is the Hub's
own naming, and the card's `configs` list the splits explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from voxtune.data.manifest import Clip, read_manifest
from voxtune.errors import UserError

DATA_DIR = "data"
SAMPLING_RATE = 16_000
SPLITS = ("train", "eval")


@dataclass(frozen=True)
class DataSummary:
    """What the model was trained and evaluated on, for the cards."""

    clips: dict[str, int] = field(default_factory=dict)  # split → clips
    minutes: dict[str, float] = field(default_factory=dict)  # split → minutes of audio
    languages: tuple[str, ...] = ()

    @property
    def total_clips(self) -> int:
        return sum(self.clips.values())

    @property
    def total_minutes(self) -> float:
        return sum(self.minutes.values())


def summarize(clips: list[Clip]) -> DataSummary:
    splits = [split for split in SPLITS if any(clip.split == split for clip in clips)]
    return DataSummary(
        clips={split: sum(clip.split == split for clip in clips) for split in splits},
        minutes={split: round(sum(c.duration for c in clips if c.split == split) / 60, 2)
                 for split in splits},
        languages=tuple(sorted({clip.language for clip in clips if clip.language})),
    )


def read_prepared(prepared: Path) -> list[Clip]:
    if not (prepared / "manifest.jsonl").is_file():
        raise UserError(f"{prepared}: no manifest.jsonl; give a folder written by "
                        "`voxtune prepare`")
    clips = read_manifest(prepared)
    if not clips:
        raise UserError(f"{prepared}: the manifest lists no clips")
    return clips


def parquet_name(split: str) -> str:
    return f"{DATA_DIR}/{split}-00000-of-00001.parquet"


def write_parquet(prepared: Path, clips: list[Clip], output: Path) -> list[str]:
    """One parquet file per split under `output/data/`; returns the splits written."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Audio, Features, Value

    features = Features({"audio": Audio(sampling_rate=SAMPLING_RATE), "text": Value("string"),
                         "language": Value("string"), "duration": Value("float64"),
                         "id": Value("string")})
    written = []
    for split in SPLITS:
        rows = [{"audio": {"bytes": (prepared / clip.audio_path).read_bytes(),
                           "path": Path(clip.audio_path).name},
                 "text": clip.text, "language": clip.language, "duration": clip.duration,
                 "id": clip.id} for clip in clips if clip.split == split]
        if not rows:
            continue
        target = output / parquet_name(split)
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=features.arrow_schema), target)
        written.append(split)
    return written
