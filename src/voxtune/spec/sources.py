"""The speech sources a run reads (`data.sources`), and StrictModel, the base of every spec
section; the lowest module of the spec, so its sections and the source readers can share them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class StrictModel(BaseModel):
    """Unknown keys are errors, values are immutable: every spec and settings section."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class JsonlSource(StrictModel):
    """Upstream (VoxFactory) format: one `{"audio_path", "text"}` object per line."""

    kind: Literal["jsonl"] = "jsonl"
    path: Path = Field(description="The .jsonl file; audio paths in it are relative to its folder.")


class FolderSource(StrictModel):
    """Audio files with `metadata.csv`/`metadata.jsonl` (audiofolder) or `name.txt` sidecars."""

    kind: Literal["folder"] = "folder"
    path: Path = Field(description="Folder scanned recursively for audio files.")
    text_column: str | None = Field(
        None, description="Transcript column in metadata files; default: the first of "
        "text, transcription, sentence, transcript that exists.",
    )


class RecordingsSource(StrictModel):
    """A folder written by the UI: `recordings.jsonl` (append-only log) + `clips/`."""

    kind: Literal["recordings"] = "recordings"
    path: Path = Field(description="The recordings folder (contains recordings.jsonl).")


class PreparedSource(StrictModel):
    """A folder the prepare step already wrote (`manifest.jsonl` + `audio/`), taken as it is:
    its clips keep their audio, ids and split, nothing is decoded again."""

    kind: Literal["prepared"] = "prepared"
    path: Path = Field(description="The prepared folder (a run's prepared/, or the UI's "
                       "dataset/); use it to train again on clips prepared once.")


class HubSource(StrictModel):
    """A Hugging Face dataset by Hub id or local path (parquet/arrow with an Audio column)."""

    kind: Literal["hub"] = "hub"
    dataset: str = Field(description="Hub id like 'org/name' or a local folder in Hub format.")
    config: str | None = Field(None, description="Dataset configuration (subset) name.")
    split: str = Field("train", description="Split to read, e.g. train, validation, test.")
    revision: str | None = Field(None, description="Hub git revision; pin it to reproduce.")
    audio_column: str = Field("audio", description="Column holding the audio.")
    text_column: str = Field("text", description="Column holding the transcript.")
    streaming: bool = Field(False, description="Stream instead of downloading the whole split; "
                            "use for large datasets together with max_samples.")
    max_samples: int | None = Field(None, ge=1, description="Read at most this many rows.")


class GranarySource(StrictModel):
    """NVIDIA Granary: transcripts + paths into the source corpora, joined to `audio_root`."""

    kind: Literal["granary"] = "granary"
    subset: str = Field(pattern=r"^[a-z]{2}_[a-z0-9]+$",
                        description="`<lang>_<corpus>`, e.g. sv_voxpopuli, en_yodas, it_ytc.")
    split: Literal["asr", "ast"] = Field(
        "asr", description="asr = transcripts; ast = translations into English.")
    audio_root: Path = Field(description="Folder where the source corpus audio was downloaded; "
                             "each entry's audio_filepath is resolved inside it.")
    dataset: str = Field("nvidia/Granary", description="Hub id or local copy of the manifests "
                         "(also nvidia/Granary-v2 style layouts).")
    streaming: bool = Field(False, description="Stream the manifest instead of downloading it.")
    max_samples: int | None = Field(None, ge=1, description="Read at most this many entries.")

    @property
    def language(self) -> str:
        return self.subset.split("_", 1)[0]


def parse_source(text: str) -> dict[str, Any]:
    """Turn the CLI form of a source into its fields.

    `data.jsonl` | `some/folder` | `jsonl:PATH` | `folder:PATH` | `recordings:PATH` |
    `prepared:PATH` | `hub:ID_OR_PATH?split=test&text_column=sentence` |
    `granary:sv_voxpopuli?audio_root=/data/vp`
    """
    kind, sep, rest = text.partition(":")
    if not sep or kind not in {"jsonl", "folder", "recordings", "prepared", "hub",
                                  "granary"}:
        path = Path(text)
        return {"kind": "jsonl" if path.suffix == ".jsonl" else "folder", "path": text}
    target, _, query = rest.partition("?")
    options: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    key = {"hub": "dataset", "granary": "subset"}.get(kind, "path")
    return {"kind": kind, key: target, **options}


Source = Annotated[
    JsonlSource | FolderSource | RecordingsSource | PreparedSource | HubSource | GranarySource,
    Field(discriminator="kind"),
    BeforeValidator(lambda v: parse_source(v) if isinstance(v, str) else v),
]
