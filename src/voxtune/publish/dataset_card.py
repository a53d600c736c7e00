"""The README.md of a published prepared dataset: front matter the Hub reads (languages, task,
size, the parquet splits) and what a user needs to load it and to handle it with consent."""

from __future__ import annotations

from typing import Any

from voxtune.publish.card import with_front_matter
from voxtune.publish.dataset import DataSummary, parquet_name


def size_category(count: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if count < limit:
            return name
    return "100K<n<1M"


def render_dataset_card(name: str, data: DataSummary, splits: list[str], dataset_ref: str,
                        private: bool, on_hub: bool, smoke: bool = False) -> str:
    """The README.md of a published prepared dataset (parquet + Audio column)."""
    matter: dict[str, Any] = {"pretty_name": f"{name} speech"}
    if data.languages:
        matter["language"] = list(data.languages)
    matter |= {"task_categories": ["automatic-speech-recognition"],
               "tags": ["voxtune", "speech", "audio"],
               "size_categories": [size_category(data.total_clips)],
               "configs": [{"config_name": "default", "data_files": [
                   {"split": split, "path": parquet_name(split)} for split in splits]}]}
    where = ("This dataset is **private**." if private else
             "This dataset is **public**: make sure every speaker agreed to that.") if on_hub \
        else "This copy lives in a local registry."
    rows = "\n".join(f"| {split} | {data.clips.get(split, 0)} | "
                     f"{data.minutes.get(split, 0):.1f} |" for split in splits)
    body = f"""
# {name} speech

Speech clips with transcripts, prepared by voxtune for fine-tuning Voxtral
speech recognition: 16 kHz mono FLAC, validated (length, silence, decodability, duplicates), split
into train and eval by a hash of each clip's id.{" The matching model is a smoke test." if smoke
else ""}

| split | clips | minutes |
|---|---:|---:|
{rows}

Columns: `audio` (Audio, 16 kHz), `text` (the transcript exactly as given), `language`
(ISO-639-1 or empty), `duration` (seconds), `id` (hash of audio and text).

```python
from datasets import Audio, load_dataset

clips = load_dataset({dataset_ref!r}, split={splits[0]!r})
clips = clips.cast_column("audio", Audio(decode=False))  # raw FLAC bytes: decode with soundfile
```

## License

Not set by voxtune: add the license the speakers agreed to before sharing this dataset.

## Privacy

Voice recordings are biometric personal data. {where} Share it only with the speakers' informed
consent, and delete it when consent is withdrawn.
"""
    return with_front_matter(matter, body)
