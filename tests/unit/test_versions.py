"""One tested set of versions: constraints.txt pins what the suite runs with, and `make install`
and every image install through it (issue 12 §3)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints.txt"
DOCKERFILES = sorted(ROOT.glob("images/*/Dockerfile"))


def pins() -> dict[str, str]:
    """constraints.txt as {canonical name: exact version}."""
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[\w.]+", version), f"not an exact pin: {line}"
            found[canonicalize_name(name)] = version
    return found


def test_the_installed_versions_are_the_pinned_ones() -> None:
    installed = {canonicalize_name(d.metadata["Name"]): d.version
                 for d in metadata.distributions()}
    # a local label (torch's "+cpu") is the build, not another version
    wrong = {name: (version, installed.get(name)) for name, version in pins().items()
             if Version(installed.get(name, "0")).public != version}
    assert not wrong, f"pinned vs installed: {wrong}; run `make install`"


def test_pyproject_ranges_admit_the_pinned_versions() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(text) for group in project["optional-dependencies"].values()
                    for text in group] + [Requirement(t) for t in project["dependencies"]]
    pinned = pins()
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name != "voxtune":
            assert name in pinned, f"{name} is not in constraints.txt"
            assert requirement.specifier.contains(pinned[name]), (requirement, pinned[name])


def test_torch_and_bitsandbytes_are_pinned_to_the_tested_builds() -> None:
    assert pins()["torch"] == "2.13.0"
    assert "bitsandbytes" in pins()


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_image_installs_through_the_constraints(path: Path) -> None:
    text = path.read_text()
    assert re.search(r"^COPY pyproject.toml README.md constraints.txt /src/$", text, re.M)
    extra = path.parent.name
    installs = re.findall(r'pip install (.*"/src\[\w+\]")', text)
    assert installs and all("-c /src/constraints.txt" in line for line in installs), installs
    assert f'"/src[{extra}]"' in installs[0]
    torch = re.search(r"^ARG TORCH_VERSION=(\S+)$", text, re.M)
    if torch:  # train (CUDA wheel) and publish (CPU wheel) name torch's version themselves
        assert torch[1] == pins()["torch"]


def test_make_install_uses_the_constraints() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^CONSTRAINTS := constraints.txt$", makefile, re.M)
    assert "TORCH_VERSION ?= $(shell sed -n 's/^torch==//p' $(CONSTRAINTS))" in makefile
    # one install macro, used by `make install` (dev: every extra) and `make demo` (fewer)
    assert re.search(r"^\t\$\(BIN\)/pip install -q -c \$\(CONSTRAINTS\) .*-e '\.\[\$\(1\)\]'$",
                     makefile, re.M)
    assert re.search(r"^\$\(STAMP\): pyproject.toml \$\(CONSTRAINTS\)\n\t\$\(call install,dev\)$",
                     makefile, re.M)
    assert re.search(r"^\$\(DEMO_STAMP\): pyproject.toml \$\(CONSTRAINTS\)\n"
                     r"\t\$\(call install,\$\(DEMO_EXTRAS\)\)$", makefile, re.M)
