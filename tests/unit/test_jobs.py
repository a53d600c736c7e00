"""Job builders: golden YAML, kubernetes-validate --strict on 1.29 and 1.37, the rules of
DESIGN §4 on every Job, settings from the chart's ConfigMap, `voxtune render`, and the step
wrapper every Job runs.

Golden files: see tests/golden.py (VOXTUNE_UPDATE_GOLDEN=1 rewrites them, never silently).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes.client import ApiClient

from tests.golden import GOLDEN, check_golden
from voxtune.cli.cluster import add_parsers
from voxtune.controller.engines import render
from voxtune.controller.jobs import (
    JobSettings,
    build_jobs,
    owner_reference,
    placement_for,
)
from voxtune.errors import UserError
from voxtune.run.layout import RunFolder
from voxtune.run.status import Publication
from voxtune.spec import RunSpec, load_user_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "jobs" / "finetunerun.yaml"
KUBERNETES_MINORS = ("1.29", "1.37")  # oldest and newest supported
OWNER = {"metadata": {"name": "big", "uid": "6f1c7c5e-0000-4000-8000-000000000001"}}


def big_settings() -> JobSettings:
    return JobSettings.model_validate({
        "images": {"train": {"registry": "mirror.example.com:5000", "repository": "ml/train",
                             "digest": "sha256:" + "ab" * 32}},
        "image_pull_secrets": ["mirror-pull"], "pvc": "team-data", "service_account": "steps",
        "hf_token_secret": "hf-token", "hf_token_key": "HF_TOKEN", "queue": "gpu-queue",
        "node_selector": {"kubernetes.io/arch": "amd64"},
        "gpu_node_selector": {"cloud.google.com/gke-nodepool": "gpu"},
        "tolerations": [{"key": "team", "operator": "Equal", "value": "ml",
                         "effect": "NoSchedule"}],
        "priority_class": "batch-high", "backoff_limit": 1,
    })


def big_spec() -> RunSpec:
    return RunSpec(
        name="big", mode="full", steps=["prepare", "train"],
        data={"sources": [{"kind": "hub", "dataset": "org/speech", "max_samples": 500}]},
        resources={"gpus": 4, "gpu_profile": "80gb", "cpu": "32", "memory": "300Gi"})


CASES = {
    # the example FineTuneRun with the chart's defaults: what the controller creates (and
    # `voxtune render` prints, with a TTL)
    "finetunerun": lambda: build_jobs(load_user_spec(EXAMPLE, resolve_paths=False), JobSettings()),
    # full fine-tuning on 4 × 80 GB (torchrun; FSDP and 8-bit AdamW, as resolved), every
    # scheduling knob, owned by its run
    "full-4gpu-kueue": lambda: build_jobs(big_spec(), big_settings(), owner_reference(OWNER)),
    # CPU-only training; a relative source path lands on the shared volume
    "cpu-relative": lambda: build_jobs(RunSpec(
        name="cpu", base_model="tiny-random", steps=["prepare", "train"],
        data={"sources": ["recordings/alice"]}, resources={"gpus": 0}), JobSettings()),
}


def documents(case: str) -> list[dict]:
    return [ApiClient().sanitize_for_serialization(job) for job in CASES[case]()]


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    check_golden(f"{case}.yaml", yaml.safe_dump_all(documents(case), sort_keys=False,
                                                    allow_unicode=True, width=100))


@pytest.mark.parametrize("minor", KUBERNETES_MINORS)
@pytest.mark.parametrize("case", CASES)
def test_every_job_validates_strictly(case: str, minor: str) -> None:
    for job in documents(case):
        # raises ValidationError, or SchemaNotFoundError (a failure too, never a warning)
        assert kubernetes_validate.validate(job, minor, strict=True) == minor


def test_validator_catches_mistakes() -> None:
    job = documents("finetunerun")[0]
    job["spec"]["template"]["spec"]["restartPolicyy"] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, "1.37", strict=True)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate({**job, "apiVersion": "batch/v9"}, "1.37", strict=True)


@pytest.mark.parametrize("minor", KUBERNETES_MINORS)
def test_golden_files_pass_the_cli(minor: str) -> None:
    """The command line as CI would run it: no ERROR and no WARN (schema not found)."""
    cli = Path(sys.executable).with_name("kubernetes-validate")
    files = sorted(str(p) for p in GOLDEN.glob("*.yaml"))
    done = subprocess.run([str(cli), "--strict", "-k", minor, *files], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "WARN" not in done.stdout, done.stdout + done.stderr
    assert done.stdout.count("passed") == sum(
        len([d for d in yaml.safe_load_all(Path(f).read_text()) if d]) for f in files)


@pytest.mark.parametrize("case", CASES)
def test_design_rules_hold_for_every_job(case: str) -> None:
    for job in documents(case):
        name, spec, pod = job["metadata"]["name"], job["spec"], job["spec"]["template"]["spec"]
        run, step = name.rsplit("-", 1)
        labels = job["metadata"]["labels"]
        assert labels["voxtune.io/run"] == labels["app.kubernetes.io/instance"] == run
        assert labels["app.kubernetes.io/component"] == step
        assert {"app.kubernetes.io/name", "app.kubernetes.io/part-of",
                "app.kubernetes.io/managed-by"} <= set(labels)
        assert pod["restartPolicy"] == "Never" and spec["backoffLimit"] <= 2
        assert spec["podReplacementPolicy"] == "Failed"
        ignore, fail = spec["podFailurePolicy"]["rules"]
        assert ignore == {"action": "Ignore", "onPodConditions": [
            {"type": "DisruptionTarget", "status": "True"}]}
        # bad input (2) and a full volume (74): retrying cannot help until someone acts
        assert fail["action"] == "FailJob" and fail["onExitCodes"]["values"] == [2, 74]
        assert spec["activeDeadlineSeconds"] > 0
        assert "ttlSecondsAfterFinished" not in spec  # set by the controller after recording
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = pod["containers"]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True, "runAsNonRoot": True}
        env = {e["name"]: e for e in container["env"]}
        assert env["VOXTUNE_HOME"]["value"] == "/data"
        assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
        assert container["command"][:3] == ["python", "-m", "voxtune.run.harness"]
        assert f"/data/runs/{run}" in container["command"]
        for variable in env.values():  # secrets only by reference
            if "TOKEN" in variable["name"]:
                assert set(variable) == {"name", "valueFrom"}
        gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
        assert (gpus is not None) == (step == "train" and case != "cpu-relative")


def test_the_full_fine_tuning_example_is_a_setup_that_fits() -> None:
    """D6: it was fp32 AdamW with DDP on 4 × 80 GB, an OOM on every card."""
    plan = placement_for(big_spec(), big_settings()).plan
    assert plan is not None and plan.fits and plan.profile.name == "80gb"
    assert (plan.setup.strategy, plan.setup.optimizer) == ("fsdp", "adamw_8bit")
    assert plan.gpu_memory_gib < 40


def test_multi_gpu_training_uses_torchrun_and_scheduling_knobs() -> None:
    prepare, train = documents("full-4gpu-kueue")
    command = train["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--") + 1:] == [
        "python", "-m", "voxtune.train.launch", "--nproc-per-node=4", "-m", "voxtune",
        "train", "--run-dir", "/data/runs/big"]
    pod = train["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {  # the run's memory: more than the plan's
        "limits": {"memory": "300Gi", "nvidia.com/gpu": "4"},
        "requests": {"cpu": "32", "memory": "300Gi", "ephemeral-storage": "16Gi"}}
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "amd64",
                                   "cloud.google.com/gke-nodepool": "gpu",
                                   "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    # FSDP's sharded fp32 checkpoint with 8-bit states (≈25 GiB) at 500 MB/s, × 1.25 + 30 s
    assert 90 < pod["terminationGracePeriodSeconds"] < 110
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        pod["tolerations"]
    assert pod["containers"][0]["image"].startswith("mirror.example.com:5000/ml/train@sha256:")
    assert "nvidia.com/gpu.product" not in prepare["spec"]["template"]["spec"]["nodeSelector"]
    for job in (prepare, train):
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
        assert job["spec"]["suspend"] is True
        assert job["metadata"]["ownerReferences"] == [{
            "apiVersion": "voxtune.io/v1alpha1", "kind": "FineTuneRun", "name": "big",
            "uid": OWNER["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
        token = [e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
                 if e["name"] == "HF_TOKEN"]
        assert token == [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": "hf-token", "key": "HF_TOKEN"}}}]


def train_pod(spec: RunSpec, settings: JobSettings | None = None) -> dict:
    (job,) = [job for job in build_jobs(spec, settings or JobSettings())
              if job.metadata.name.endswith("-train")]
    return ApiClient().sanitize_for_serialization(job)["spec"]["template"]["spec"]


def test_train_pod_memory_comes_from_the_plan_and_grows_with_its_gpus() -> None:
    """D5: the pod's memory was 48Gi whatever the GPU count; each rank needs its own share."""
    memory = {}
    for gpus in (1, 2, 8):
        pod = train_pod(RunSpec(name="r", resources={"gpus": gpus}))
        resources = pod["containers"][0]["resources"]
        assert resources["requests"]["memory"] == resources["limits"]["memory"]
        memory[gpus] = int(resources["limits"]["memory"].removesuffix("Gi"))
    assert memory[1] < memory[2] < memory[8] and memory[8] > 48
    assert memory[8] >= 8 * (memory[1] - 2)


def test_train_pod_selects_the_planned_gpu_product() -> None:
    lora, full = (train_pod(RunSpec(name="r", mode=mode)) for mode in ("lora", "full"))
    assert lora["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert full["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    own = JobSettings.model_validate({"gpu_profiles": [
        {"name": "a100", "memory_gib": 79, "product": "NVIDIA-A100-SXM4-80GB"}]})
    assert train_pod(RunSpec(name="r", mode="full"), own)["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert "nodeSelector" not in train_pod(RunSpec(name="r", resources={"gpus": 0}))


def test_a_run_that_cannot_fit_gets_no_jobs() -> None:
    from voxtune.plan.placement import DoesNotFit

    small_full = RunSpec(name="r", base_model="mistralai/Voxtral-Small-24B-2507", mode="full",
                         resources={"gpu_profile": "80gb"})
    with pytest.raises(DoesNotFit, match=r"FSDP: resources\.gpus: 4"):
        build_jobs(small_full, JobSettings())
    with pytest.raises(DoesNotFit, match="at least 68 GiB"):
        build_jobs(RunSpec(name="r", resources={"gpus": 8, "memory": "48Gi"}), JobSettings())


def test_publish_pod_is_sized_to_merge_and_unplanned_models_get_the_defaults() -> None:
    merged = build_jobs(RunSpec(name="r", publish={"merge": True}), JobSettings())
    publish = ApiClient().sanitize_for_serialization(merged[-1])["spec"]["template"]["spec"]
    assert publish["containers"][0]["resources"]["limits"] == {"memory": "13Gi"}
    assert "terminationGracePeriodSeconds" not in publish
    unplanned = train_pod(RunSpec(name="r", base_model="/data/models/mine"))
    assert unplanned["containers"][0]["resources"]["limits"]["memory"] == "48Gi"
    assert "terminationGracePeriodSeconds" not in unplanned


@pytest.mark.parametrize(("settings", "reference"), [
    ({}, None),
    ({"hf_token_secret": "hf"}, {"name": "hf", "key": "space-token", "optional": True}),
    ({"hf_token_secret": "hf", "hf_space_token_secret": "hf-read", "hf_space_token_key": "t"},
     {"name": "hf-read", "key": "t", "optional": True}),
    ({"hf_space_token_secret": "hf-read"},
     {"name": "hf-read", "key": "space-token", "optional": True}),
], ids=["no secret", "key of the token Secret", "own Secret", "only a Space token"])
def test_only_publish_gets_the_space_token_and_only_by_optional_reference(
        settings: dict, reference: dict | None) -> None:
    jobs = build_jobs(RunSpec(name="r"), JobSettings.model_validate(settings))
    for job in jobs:
        env = ApiClient().sanitize_for_serialization(job)["spec"]["template"]["spec"][
            "containers"][0]["env"]
        found = [e["valueFrom"]["secretKeyRef"] for e in env if e["name"] == "HF_SPACE_TOKEN"]
        step = job.metadata.labels["voxtune.io/step"]
        assert found == ([reference] if reference and step == "publish" else []), step


def test_relative_paths_are_on_the_volume_and_the_spec_travels_with_the_job() -> None:
    prepare = documents("cpu-relative")[0]
    env = {e["name"]: e.get("value") for e in prepare["spec"]["template"]["spec"]
           ["containers"][0]["env"]}
    spec = RunSpec.model_validate_json(env["VOXTUNE_RUN_SPEC"])
    assert str(spec.data.sources[0].path) == "/data/recordings/alice"


# --- settings -----------------------------------------------------------------------------


def test_settings_from_configmap_yaml_and_environment(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "controller.yaml"
    config.write_text(yaml.safe_dump({
        "pvc": "from-file", "queue": "q", "images": {"train": {"repository": "x/train",
                                                              "tag": "1.0"}},
        "resources": {"train_lora": {"memory": "64Gi"}}}))
    monkeypatch.setenv("VOXTUNE_CONTROLLER_QUEUE", "from-env")
    monkeypatch.setenv("VOXTUNE_CONTROLLER_IMAGES__PREPARE__TAG", "2.0")
    settings = JobSettings.load(config)
    assert settings.pvc == "from-file" and settings.queue == "from-env"
    assert settings.images.train.reference == "x/train:1.0"
    assert settings.images.prepare.reference == "voxtune/prepare:2.0"
    assert settings.resources.train_lora.memory == "64Gi"
    assert settings.resources.train_lora.cpu == "8"  # the rest of a section keeps defaults
    monkeypatch.setenv("VOXTUNE_CONTROLLER_CONFIG", str(config))
    assert JobSettings.load().pvc == "from-file"


@pytest.mark.parametrize(("content", "problem"), [
    ({"pvcc": "x"}, "pvcc"),
    ({"backoff_limit": 99}, "backoff_limit"),
    ({"image_pull_policy": "Sometimes"}, "image_pull_policy"),
], ids=["unknown key", "out of range", "bad enum"])
def test_settings_mistakes_name_the_key(tmp_path: Path, content: dict, problem: str) -> None:
    config = tmp_path / "controller.yaml"
    config.write_text(yaml.safe_dump(content))
    with pytest.raises(UserError, match=problem):
        JobSettings.load(config)
    with pytest.raises(UserError, match="no such controller config"):
        JobSettings.load(tmp_path / "missing.yaml")


# --- voxtune render -------------------------------------------------------------------------


def run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="voxtune")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_render_prints_the_jobs_of_every_step(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_command(["render", str(EXAMPLE)]) == 0
    jobs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [job["metadata"]["name"] for job in jobs] == [
        "my-voice-prepare", "my-voice-train", "my-voice-publish"]
    # applied without the controller, nobody would add the TTL later: render sets it at once
    ttl = JobSettings().ttl_seconds_after_finished
    assert [job["spec"].pop("ttlSecondsAfterFinished") for job in jobs] == [ttl] * 3
    assert jobs == list(yaml.safe_load_all((GOLDEN / "finetunerun.yaml").read_text()))
    assert run_command(["render", "--crd"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["kind"] == "CustomResourceDefinition"
    with pytest.raises(UserError, match="no such spec file"):
        run_command(["render", str(EXAMPLE.parent / "does-not-exist.yaml")])


def test_render_of_a_plain_runspec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("name: mine\nsteps: [train]\nresources: {gpus: 2}\n")
    run_command(["render", str(path)])
    (job,) = yaml.safe_load_all(capsys.readouterr().out)
    assert job["metadata"]["name"] == "mine-train"
    assert "--nproc-per-node=2" in job["spec"]["template"]["spec"]["containers"][0]["command"]


def test_render_matches_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    run_command(["render", str(EXAMPLE)])
    spec = load_user_spec(EXAMPLE, resolve_paths=False)
    assert capsys.readouterr().out == render(spec, JobSettings())


# --- the step wrapper (python -m voxtune.run.harness) ------------------------------------


def wrapper(tmp_path: Path, command: list[str], spec: RunSpec | None = None,
            **popen: object) -> subprocess.Popen:
    env = {**os.environ, "VOXTUNE_RUN_SPEC": (spec or RunSpec(name="w")).model_dump_json(),
           "VOXTUNE_TERMINATION_LOG": str(tmp_path / "termination-log")}
    return subprocess.Popen([sys.executable, "-m", "voxtune.run.harness", "--run-dir",
                             str(tmp_path / "run"), "--step", "prepare", "--", *command],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **popen)


def test_step_wrapper_keeps_log_spec_and_result(tmp_path: Path) -> None:
    failing = [sys.executable, "-c", "print('reading sources'); print('error: nothing usable');"
               "raise SystemExit(2)"]
    process = wrapper(tmp_path, failing)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 2 and "error: nothing usable" in out
    run = tmp_path / "run"
    assert RunSpec.model_validate(yaml.safe_load((run / "spec.yaml").read_text())).name == "w"
    assert "reading sources" in (run / "logs" / "prepare.log").read_text()
    message = json.loads((tmp_path / "termination-log").read_text())
    assert message == {"exit_code": 2, "metrics": {}, "trained": False,
                       "log_tail": "reading sources\nerror: nothing usable"}

    (run / "metrics.json").write_text(json.dumps({"wer": 0.1, "base_wer": 0.3, "other": "x"}))
    (run / "final").mkdir()
    record = Publication(name="w", model="https://hub/w/commit/1", layout="adapter",
                         commits={"alice/w": "https://hub/w/commit/1"})
    RunFolder(run).write_published(record)
    process = wrapper(tmp_path, [sys.executable, "-c", "print('again')"])
    process.communicate(timeout=60)
    assert process.returncode == 0
    assert json.loads((tmp_path / "termination-log").read_text()) == {
        "exit_code": 0, "metrics": {"wer": 0.1, "base_wer": 0.3}, "trained": True,
        "published": record.model_dump(mode="json")}
    log = (run / "logs" / "prepare.log").read_text()
    assert "reading sources" in log and "again" in log  # a retry appends, nothing is lost

    process = wrapper(tmp_path, [sys.executable, "-c", "pass"],
                      spec=RunSpec(name="w", language="sv"))
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 2 and "different spec" in out


def test_step_wrapper_passes_sigterm_on(tmp_path: Path) -> None:
    """The kubelet signals PID 1 only: the step must get the SIGTERM to save a checkpoint."""
    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: (print('checkpoint saved', flush=True),"
             " sys.exit(75)))\n"
             "print('training', flush=True)\n"
             "time.sleep(60)\n")
    process = wrapper(tmp_path, [sys.executable, "-c", child])
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "training"
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 75 and "checkpoint saved" in out


def test_termination_message_fits_the_kubelet_limit() -> None:
    from voxtune.run.harness import termination_message

    text = termination_message(1, {"wer": 0.5}, "\n".join("x" * 100 for _ in range(200)))
    assert len(text.encode()) <= 4000
    assert json.loads(text)["log_tail"].endswith("x" * 100)
    # a publish record with long commit URLs loses them, a huge one goes, the rest stays
    commits = {f"alice/repo-{n}": "https://h/" + "c" * 900 for n in range(6)}
    record = Publication(name="m", model="/registry/m/1", layout="adapter", commits=commits)
    short = json.loads(termination_message(0, {}, "", True, record))
    assert short["published"] == record.model_dump(mode="json", exclude={"commits"})
    huge = record.model_copy(update={"model": "/" + "d" * 5000})
    assert json.loads(termination_message(0, {"wer": 0.5}, "", True, huge)) == {
        "exit_code": 0, "metrics": {"wer": 0.5}, "trained": True}
