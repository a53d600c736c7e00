"""A real build of the prepare image with buildah, where the machine can do one.

Skipped unless buildah and runc are installed, the tests run as root and the Python base is
already in buildah's storage (images/local-base.sh puts it there; see docs/operations.md,
"Images"). With buildah's layer cache warm the build takes seconds; cold it pip-installs the
prepare extra from PyPI (about 45 s on 2 cores)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE = "docker.io/library/python:3.11-slim-bookworm"
TAG = "localhost/voxtune/prepare:test"
# runc: Debian's crun refuses this sandbox's hybrid cgroups; --layers: reuse the pip layers
FLAGS = ["--runtime", "runc", "--layers", "--ulimit", "nofile=4096:4096"]


def _base_present() -> bool:
    if not (shutil.which("buildah") and shutil.which("runc") and os.geteuid() == 0):
        return False
    return subprocess.run(["buildah", "inspect", "--type", "image", BASE],
                          capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _base_present(),
                    reason="needs root, buildah, runc and the base image (images/local-base.sh)")
def test_prepare_image_builds_and_runs_as_user_10001() -> None:
    build = subprocess.run(["buildah", "build", *FLAGS, "-f", "images/prepare/Dockerfile",
                            "-t", TAG, "."], cwd=ROOT, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    ctr = subprocess.run(["buildah", "from", TAG], capture_output=True, text=True,
                         check=True).stdout.strip()
    try:
        def run(*argv: str) -> str:
            return subprocess.run(["buildah", "run", "--runtime", "runc", ctr, "--", *argv],
                                  capture_output=True, text=True, check=True).stdout

        assert "usage: voxtune prepare" in run("voxtune", "prepare", "--help")
        assert run("id", "-u").strip() == "10001"
        assert "torch" not in run("python", "-c", "import importlib.util as u; "
                                  "print('torch' if u.find_spec('torch') else '')")
    finally:
        subprocess.run(["buildah", "rm", ctr], capture_output=True)
