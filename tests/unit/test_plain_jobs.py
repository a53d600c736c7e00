"""jobs/<step>-job.yaml: the Jobs a user without the controller applies in order. Below their
header comment they are exactly what the builders render for jobs/finetunerun.yaml (with the
command the header names), carry no ownerReferences (a Job owned by a FineTuneRun that does not
exist would be garbage-collected), and validate for the oldest and newest Kubernetes minors."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from voxtune.cli import main
from voxtune.controller.jobs import JobSettings, job_name
from voxtune.spec import load_user_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "jobs" / "finetunerun.yaml"
STEPS = ("prepare", "train", "publish")
KUBERNETES_MINORS = ("1.29", "1.37")


def split(step: str) -> tuple[str, str]:
    """(header comment, the YAML below it)."""
    text = (ROOT / "jobs" / f"{step}-job.yaml").read_text()
    body = re.search(r"^[^#\n]", text, re.MULTILINE)
    assert body, f"jobs/{step}-job.yaml has no Job below its header"
    return text[:body.start()], text[body.start():]


def job(step: str) -> dict:
    return yaml.safe_load(split(step)[1])


def test_the_example_run_has_these_steps() -> None:
    assert tuple(load_user_spec(EXAMPLE, resolve_paths=False).steps) == STEPS


@pytest.mark.parametrize("step", STEPS)
def test_identical_to_what_the_header_command_renders(
        step: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    header, body = split(step)
    command = re.search(r"^#\s+((?:\w+=\S+ )*)voxtune (render .*)$", header, re.MULTILINE)
    assert command, "the header names the command that generates the file"
    for variable in command[1].split():
        monkeypatch.setenv(*variable.split("=", 1))
    assert shlex.split(command[2]) == ["render", "jobs/finetunerun.yaml", "--step", step]
    monkeypatch.chdir(ROOT)
    assert main(shlex.split(command[2])) == 0
    assert body == capsys.readouterr().out, "stale: run `make jobs`"


@pytest.mark.parametrize("step", STEPS)
def test_applicable_without_the_controller(step: str) -> None:
    document = job(step)
    assert "ownerReferences" not in document["metadata"]
    assert document["metadata"]["name"] == job_name("my-voice", step)
    for minor in KUBERNETES_MINORS:
        assert kubernetes_validate.validate(document, minor, strict=True) == minor


@pytest.mark.parametrize("step", STEPS)
def test_header_is_a_runbook(step: str) -> None:
    header = " ".join(split(step)[0].replace("#", " ").split())  # the prose, unwrapped
    pod = job(step)["spec"]["template"]["spec"]
    name = job_name("my-voice", step)
    assert f"kubectl apply -f jobs/{step}-job.yaml" in header
    assert f"kubectl wait --for=condition=complete job/{name}" in header
    claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == JobSettings().pvc and f"PersistentVolumeClaim {claim}" in header
    token = next(e for e in pod["containers"][0]["env"] if e["name"] == "HF_TOKEN")
    secret = token["valueFrom"]["secretKeyRef"]
    assert f"Secret {secret['name']}" in header and f"key `{secret['key']}`" in header
    for variable in pod["containers"][0]["env"]:
        if variable["name"] == "HF_SPACE_TOKEN":  # the runbook says what the Space gets
            assert f"key `{variable['valueFrom']['secretKeyRef']['key']}`, a read-only" in header
    gpus = pod["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
    assert ("GPU" in header.split("Needs")[0]) == bool(gpus)
    previous = STEPS[STEPS.index(step) - 1] if step != "prepare" else None
    assert previous is None or f"jobs/{previous}-job.yaml completed" in header


@pytest.mark.parametrize("step", STEPS)
def test_finished_jobs_expire_on_their_own(step: str) -> None:
    # the controller sets the TTL after recording a result; no controller runs these
    ttl = job(step)["spec"]["ttlSecondsAfterFinished"]
    assert ttl == JobSettings().ttl_seconds_after_finished
    header = " ".join(split(step)[0].replace("#", " ").split())
    assert f"after {ttl // 86400} days (ttlSecondsAfterFinished" in header
