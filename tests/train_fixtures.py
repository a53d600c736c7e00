"""Helpers for the train tests: tiny checkpoints built once per process, prepared clips.

A plain module (not a conftest): the test files import what they use.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.helpers import speechlike, write_audio
from voxtune.data.manifest import AUDIO_DIR, Clip


@functools.cache
def shared_home() -> Path:
    """A VOXTUNE_HOME shared by the train tests of this process.

    conftest gives every test a fresh home; building the tiny checkpoints into each would
    repeat the same deterministic work, so tests that only need a model use this one.
    """
    home = Path(tempfile.mkdtemp(prefix="voxtune-train-tests-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    return home


def prepare_samples(folder: Path) -> Path:
    """voxtune's bundled sample clips prepared into `folder`/prepared (a quarter held out)."""
    from voxtune.data.prepare import prepare
    from voxtune.data.synth import copy_samples
    from voxtune.spec import DataSpec

    prepare(DataSpec(sources=[str(copy_samples(folder / "samples"))], eval_fraction=0.25),
            folder / "prepared", language="en")
    return folder / "prepared"


@pytest.fixture
def shared_tiny_home(monkeypatch: pytest.MonkeyPatch, voxtune_home: Path) -> Path:
    """Point VOXTUNE_HOME (set per test by conftest) at `shared_home()` instead."""
    monkeypatch.setenv("VOXTUNE_HOME", str(shared_home()))
    return shared_home()


def write_clip(prepared: Path, clip_id: str, seconds: float, text: str,
               language: str | None, seed: int = 0) -> Clip:
    """Store a clip the way the prepare step does (16 kHz mono 16-bit FLAC) and describe it."""
    relative = f"{AUDIO_DIR}/{clip_id}.flac"
    write_audio(prepared / relative, speechlike(seconds, seed=seed))
    return Clip(id=clip_id, audio_path=relative, text=text, duration=seconds,
                language=language, split="train", source=f"test:{clip_id}")
