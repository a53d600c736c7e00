"""Fixtures every test gets: an isolated VOXTUNE_HOME and no stray spec overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def voxtune_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own VOXTUNE_HOME, so nothing touches the user's runs."""
    home = tmp_path_factory.mktemp("voxtune-home")
    monkeypatch.setenv("VOXTUNE_HOME", str(home))
    for name in [n for n in os.environ if n.startswith("VOXTUNE_SPEC__")]:
        monkeypatch.delenv(name)
    return home
