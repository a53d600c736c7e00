"""The chart under test, rendered by the real helm binary (`make helm` puts it in .venv/bin).

    helm_run("lint", "--strict", CHART)           # the CompletedProcess, whatever its exit code
    render(values_file, "--set", "ui.enabled=false")   # the manifests, as a list of documents
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "voxtune"
HELM = Path(sys.executable).with_name("helm")
RELEASE, NAMESPACE = "voxtune", "ml"
# Defaults and every example values file (the matrix of the chart tests), by short name.
VALUES = {"defaults": None, **{path.name.removesuffix("-values.yaml"): path
                               for path in sorted((CHART / "ci").glob("*-values.yaml"))}}


def helm_run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert HELM.is_file(), f"{HELM} is missing: run `make helm`"
    return subprocess.run([str(HELM), *map(str, args)], capture_output=True, text=True,
                          timeout=60)


def template_text(values: Path | None = None, *args: str) -> str:
    """`helm template` of the chart as release voxtune in namespace ml; fails the test on error."""
    done = helm_run("template", RELEASE, CHART, "--namespace", NAMESPACE,
                    *(["--values", str(values)] if values else []), *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def render(values: Path | None = None, *args: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(template_text(values, *args)) if doc]


def find(documents: list[dict], kind: str, name: str) -> dict:
    matches = [doc for doc in documents
               if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def container(documents: list[dict], deployment: str) -> dict:
    return find(documents, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]


def env(container_spec: dict) -> dict[str, object]:
    """name → value, or the valueFrom object."""
    return {item["name"]: item.get("value", item.get("valueFrom"))
            for item in container_spec.get("env", [])}
