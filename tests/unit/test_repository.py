"""Repository-level checks: example specs load, Dockerfiles follow the house rules and lint.

No image is built here: a real build pip-installs the image's dependencies into a base image;
tests/integration/test_image_build.py builds the prepare image where buildah and a base are
present (docs/operations.md, "Images")."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from voxtune.spec import load_user_spec

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted(ROOT.glob("images/*/Dockerfile"))
IMAGES = ("prepare", "train", "publish", "ui")  # ui also runs the controller
# Run files (FineTuneRun, or a plain RunSpec without `kind`); the plain step Jobs beside them
# are checked in test_plain_jobs.py.
EXAMPLES = sorted(path for path in ROOT.glob("jobs/*.yaml")
                  if yaml.safe_load(path.read_text()).get("kind") in (None, "FineTuneRun"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_spec_loads(path: Path) -> None:
    spec = load_user_spec(path)
    assert spec.name and spec.data.sources


def test_one_image_per_step_and_the_ui() -> None:
    assert sorted(path.parent.name for path in DOCKERFILES) == sorted(IMAGES)
    assert len(EXAMPLES) >= 1


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_house_rules(path: Path) -> None:
    name, text = path.parent.name, path.read_text()
    assert text.startswith(f"# voxtune {name}")  # the header says what the image is for
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base and base[1].startswith("nvidia/cuda:" if name == "train" else "python:")
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)  # numeric, non-root
    assert "HF_HOME=/data/hf-cache" in text
    assert re.search(rf'^ENTRYPOINT \["voxtune", "{name}"\]$', text, re.MULTILINE)
    assert f'org.opencontainers.image.title="voxtune-{name}"' in text
    assert "org.opencontainers.image.description=" in text
    extra = re.findall(r'"/src\[(\w+)\]"', text)
    assert extra == [name]  # only its own pyproject extra
    # dependencies in a layer of their own, before the source
    assert text.index(f'"/src[{name}]"') < text.index("COPY src ")
    # torch's CUDA build only in train; publish takes the CPU wheel from PyTorch's index
    if name == "publish":
        assert re.search(r"^ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu$", text,
                         re.MULTILINE)
        assert '--index-url "${TORCH_INDEX_URL}" "torch==' in text
    elif name != "train":
        instructions = [line for line in text.splitlines() if not line.startswith("#")]
        assert "torch" not in "\n".join(instructions).lower()


def test_dockerfiles_lint_clean_at_error_level() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    done = subprocess.run([str(hadolint), "--failure-threshold", "error", *map(str, DOCKERFILES)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
