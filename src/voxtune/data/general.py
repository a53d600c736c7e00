"""eval.general's clips: a second, general-speech evaluation set prepared like the run's own.

The prepare step prepares it into the run folder (RUN/general/) next to prepared/, so a
multi-GPU train step finds it ready; a train step started by hand prepares it itself. Every
clip is held out: prepare's train/eval split means nothing here, so both are read.
"""

from __future__ import annotations

from pathlib import Path

from voxtune.data.manifest import MANIFEST, Clip, read_manifest
from voxtune.data.prepare import Summary, prepare
from voxtune.errors import UserError
from voxtune.spec import DataSpec, HubSource


def prepare_general(source: HubSource, folder: Path, language: str | None,
                    workers: int | None = None) -> Summary | None:
    """Prepare `source` into `folder` unless that was done; None when it was."""
    if (folder / MANIFEST).is_file():
        return None
    print(f"preparing the general evaluation set {source.dataset}", flush=True)
    return prepare(DataSpec(sources=[source], eval_fraction=0.5), folder, language, workers)


def general_clips(source: HubSource, folder: Path) -> list[Clip]:
    """Every clip prepared from `source` into `folder`; a UserError when none is usable."""
    clips = read_manifest(folder) if (folder / MANIFEST).is_file() else []
    if not clips:
        raise UserError(f"eval.general {source.dataset}: no usable clips (see "
                        f"{folder / 'rejected.jsonl'})")
    return clips
