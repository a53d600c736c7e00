"""The controller's list+watch cache over real HTTP against the API emulator: what the
controller writes is seen at once, and never hides a later version the watch brought."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.emulators import kube
from tests.emulators.kube import KubeEmulator
from tests.integration.test_controller import eventually
from voxtune.controller.kubeapi import Informer, raw

kube_emulator = kube.kube_emulator
NS = "default"


def a_job(name: str) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "labels": {"voxtune.io/run": "r"}},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "step", "image": "busybox"}]}}}}


def version(obj: dict | None) -> str | None:
    return obj["metadata"]["resourceVersion"] if obj else None


@pytest.fixture
def batch(kube_emulator: KubeEmulator) -> client.BatchV1Api:
    return client.BatchV1Api(kube_emulator.api_client())


@pytest.fixture
def jobs(batch: client.BatchV1Api) -> Iterator[Informer]:
    stop = threading.Event()
    informer = Informer("jobs", lambda **kw: batch.list_namespaced_job(
        NS, label_selector="voxtune.io/run", **kw),
        lambda obj: obj["metadata"]["labels"]["voxtune.io/run"], lambda obj: None, stop,
        lambda kind: None, watch_timeout_s=5)
    informer.thread.start()
    assert informer.synced.wait(10)
    yield informer
    stop.set()
    informer.close()
    informer.thread.join(10)


def test_a_job_that_finished_while_its_create_was_answered_stays_finished_in_the_cache(
        kube_emulator: KubeEmulator, batch: client.BatchV1Api, jobs: Informer) -> None:
    # the create's answer holds the first version; the Job controller has moved the Job on
    # before the controller stores that answer, and the watch has brought the newer version
    created = raw(batch.create_namespaced_job, NS, a_job("r-publish"))
    done = kube_emulator.complete_job(NS, "r-publish")
    eventually(lambda: version(jobs.get("r-publish")) == version(done),
               what="the watch to bring the completed Job")

    jobs.put(created, None)  # the create started from "absent"

    assert version(jobs.get("r-publish")) == version(done)
    assert [c["type"] for c in jobs.get("r-publish")["status"]["conditions"]] == [
        "SuccessCriteriaMet", "Complete"]
    assert [version(j) for j in jobs.of_run("r")] == [version(done)]


def test_what_the_controller_wrote_is_seen_before_the_watch_brings_it(
        kube_emulator: KubeEmulator, batch: client.BatchV1Api) -> None:
    # an informer that is not watching: only put() can change it
    informer = Informer("jobs", lambda **kw: None, lambda obj: "r", lambda obj: None,
                        threading.Event(), lambda kind: None, watch_timeout_s=5)
    first = raw(batch.create_namespaced_job, NS, a_job("r-train"))
    informer.put(first, None)
    assert version(informer.get("r-train")) == version(first)

    second = raw(batch.patch_namespaced_job, "r-train", NS, {"metadata": {"labels": {"a": "b"}}})
    informer.put(second, version(first))  # written from the cached version: stored
    assert version(informer.get("r-train")) == version(second)

    informer.put(first, None)  # an answer older than what the cache holds: ignored
    informer.put(first, version(first))
    assert version(informer.get("r-train")) == version(second)
