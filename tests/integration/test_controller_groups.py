"""The controller with multi-node runs against the API emulator over real HTTP: it asks the
API's discovery which engines are served (TrainJob, JobSet, neither), creates one group per
run, and keeps the right phase through a node's preemption (the group restarts), a controller
restart mid-run and a user's failure; the tests play the JobSet/Trainer controllers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulators.kube import FINETUNERUN, JOBSET, TRAINJOB, KubeEmulator
from tests.integration.test_controller import eventually, status_where
from voxtune.client import Client
from voxtune.controller.crd import custom_resource_definition
from voxtune.controller.jobs import JobSettings
from voxtune.controller.operator import Controller
from voxtune.errors import UserError
from voxtune.executors.kubernetes import KubernetesExecutor
from voxtune.spec import RunSpec, Settings

NS = "default"


def two_nodes(name: str = "r") -> RunSpec:
    return RunSpec(name=name, steps=["train"], base_model="tiny-random",
                   resources={"nodes": 2, "gpus": 1})


def emulator(*engines: object) -> KubeEmulator:
    kube = KubeEmulator(custom_resources=(FINETUNERUN, *engines))
    kube.start()
    kube.register_crd(custom_resource_definition())
    return kube


@pytest.fixture
def jobset_only() -> Iterator[KubeEmulator]:
    kube = emulator(JOBSET)
    yield kube
    kube.stop()


def start(cluster: KubeEmulator) -> Controller:
    return Controller(cluster.api_client(), NS, JobSettings(), resync_s=0.5,
                      watch_timeout_s=5).start()


def executor(cluster: KubeEmulator, tmp_path: Path) -> KubernetesExecutor:
    return KubernetesExecutor(api_client=cluster.api_client(), namespace=NS,
                              settings=Settings(home=tmp_path / "volume"))


def created(cluster: KubeEmulator, plural: str) -> list[str]:
    """Names created (201), in order: a duplicate would show twice."""
    return [json.loads(r.body)["metadata"]["name"]
            for r in cluster.requests_matching("POST", rf"/{plural}$") if r.code == 201]


def test_jobset_group_survives_preemption_node_failure_and_a_controller_restart(
        jobset_only: KubeEmulator, tmp_path: Path) -> None:
    cluster, runs = jobset_only, executor(jobset_only, tmp_path)
    first = start(cluster)
    runs.submit(two_nodes())
    eventually(lambda: cluster.get("jobsets", NS, "r-train"), what="the JobSet")
    cluster.add_group_pods(NS, "jobsets", "r-train", phase="Pending")
    status_where(runs, "r", reason="Starting", phase="Pending")  # created, not yet scheduled
    for pod in cluster.list("pods", NS, "jobset.sigs.k8s.io/jobset-name=r-train"):
        cluster.set_pod_phase(NS, pod["metadata"]["name"], "Running")
    status = status_where(runs, "r", phase="Training")
    assert "on 2 nodes (JobSet r-train)" in status.message

    # node 1 is preempted: the JobSet restarts the whole group while no controller runs
    first.stop()
    node_1 = next(p for p in cluster.list("pods", NS, "jobset.sigs.k8s.io/jobset-name=r-train")
                  if p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == "1")
    cluster.disrupt_pod(NS, node_1["metadata"]["name"])
    cluster.restart_group(NS, "jobsets", "r-train")
    for pod in cluster.list("pods", NS, "jobset.sigs.k8s.io/jobset-name=r-train"):
        if pod["status"]["phase"] == "Pending":
            cluster.set_pod_phase(NS, pod["metadata"]["name"], "Running")
    second = start(cluster)
    try:
        status_where(runs, "r", phase="Training")
        eventually(lambda: "again after 1 restart of the group" in runs.status("r").message,
                   what="the restart in the status")
        # node 0 fails (exit code 1, not the user's): the group restarts again
        node_0 = next(p for p in cluster.list("pods", NS, "jobset.sigs.k8s.io/jobset-name="
                                              "r-train,jobset.sigs.k8s.io/restart-attempt=1")
                      if p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"]
                      == "0")
        cluster.set_pod_phase(NS, node_0["metadata"]["name"], "Failed", exit_code=1)
        cluster.restart_group(NS, "jobsets", "r-train")
        for pod in cluster.list("pods", NS, "jobset.sigs.k8s.io/restart-attempt=2"):
            cluster.set_pod_phase(NS, pod["metadata"]["name"], "Running")
        eventually(lambda: "again after 2 restarts of the group" in runs.status("r").message,
                   what="the second restart in the status")
        cluster.finish_group(NS, "jobsets", "r-train", "Completed", "AllJobsCompleted")
        assert runs.wait("r", timeout=10).phase == "Succeeded"
    finally:
        second.stop()
    assert created(cluster, "jobsets") == ["r-train"]  # one group, whatever happened
    assert created(cluster, "jobs") == []


def test_a_users_failure_fails_the_run_once(jobset_only: KubeEmulator, tmp_path: Path) -> None:
    cluster, runs = jobset_only, executor(jobset_only, tmp_path)
    controller = start(cluster)
    try:
        runs.submit(two_nodes())
        eventually(lambda: cluster.get("jobsets", NS, "r-train"), what="the JobSet")
        pods = cluster.add_group_pods(NS, "jobsets", "r-train")
        cluster.set_pod_log(NS, pods[1]["metadata"]["name"], "error: clip 7 is not audio\n")
        cluster.finish_group(NS, "jobsets", "r-train", "Failed", "FailedJobs",
                             pod_exit_codes={0: 1, 1: 2})
        status = status_where(runs, "r", phase="Failed")
        assert "train failed (bad input or config)" in status.message
        assert "clip 7 is not audio" in status.message
    finally:
        controller.stop()
    assert created(cluster, "jobsets") == ["r-train"]


@pytest.mark.parametrize(("engines", "plural", "kind"), [
    ((TRAINJOB, JOBSET), "trainjobs", "TrainJob"), ((TRAINJOB,), "trainjobs", "TrainJob")],
    ids=["both-prefer-trainer", "trainer-only"])
def test_auto_finds_the_trainer_through_discovery(engines: tuple, plural: str, kind: str,
                                                   tmp_path: Path) -> None:
    cluster = emulator(*engines)
    controller = start(cluster)
    try:
        runs = executor(cluster, tmp_path)
        runs.submit(two_nodes())
        group = eventually(lambda: cluster.get(plural, NS, "r-train"), what=kind)
        assert group["kind"] == kind and group["spec"]["trainer"]["numNodes"] == 2
        pods = cluster.add_group_pods(NS, plural, "r-train")
        assert "on 2 nodes (TrainJob r-train)" in status_where(runs, "r",
                                                               phase="Training").message
        # `voxtune logs r --node N`: rank 0's by default, another node's on request, from
        # the Trainer's `node` container
        for node, pod in enumerate(pods):
            cluster.set_pod_log(NS, pod["metadata"]["name"], f"node {node} says hello\n")
        client = Client("kubernetes", namespace=NS, api_client=cluster.api_client(),
                        home=tmp_path / "volume")
        assert "node 0 says hello" in client.logs("r", "train")
        assert "node 1 says hello" in client.logs("r", "train", node=1)
        with pytest.raises(UserError, match="trains on 2 nodes: --node is 0 to 1"):
            client.logs("r", "train", node=2)
    finally:
        controller.stop()
        cluster.stop()


def test_neither_engine_gives_a_clear_condition(tmp_path: Path) -> None:
    cluster = emulator()
    controller = start(cluster)
    try:
        runs = executor(cluster, tmp_path)
        runs.submit(two_nodes())
        status = status_where(runs, "r", reason="NoEngine")
        assert "multi-node needs Kubeflow Trainer or JobSet; install one, or set nodes: 1" \
            in status.message
        stored = cluster.get("finetuneruns", NS, "r")["status"]["conditions"]
        assert any(c["type"] == "Waiting" and c["reason"] == "NoEngine" for c in stored)
        assert cluster.requests_matching("POST", r"/jobs$") == []
    finally:
        controller.stop()
        cluster.stop()
