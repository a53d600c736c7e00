"""Repository-level checks: example specs load, Dockerfiles follow the house rules and lint."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from voxtune.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted(ROOT.glob("images/*/Dockerfile"))
EXAMPLES = sorted(ROOT.glob("jobs/*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_spec_loads(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name and spec.data.sources


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_house_rules(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("# voxtune ")  # the header says what the image is for
    assert re.search(r"^ARG BASE_IMAGE=", text, re.MULTILINE)
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)  # numeric, non-root
    assert "HF_HOME=/data/hf-cache" in text
    assert f'"voxtune", "{path.parent.name}"' in text  # entrypoint = the step command
    extra = re.search(r'"/src\[(\w+)\]"', text)
    assert extra and extra.group(1) == path.parent.name  # only its own pyproject extra


def test_dockerfiles_lint_clean_at_error_level() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    done = subprocess.run([str(hadolint), "--failure-threshold", "error", *map(str, DOCKERFILES)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
