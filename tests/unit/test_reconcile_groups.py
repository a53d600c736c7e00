"""reconcile() of a multi-node train step: the engine from discovery (or the clear condition),
one TrainJob/JobSet per run, waiting words for the group, all nodes' progress, restarts of the
group, and a user's failure named once."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from tests.unit.test_reconcile import (
    EARLIER,
    NOW,
    RUN_UID,
    SETTINGS,
    event,
    pod,
    recorded,
    run,
)
from voxtune.controller.engines import JOBSET, TRAINJOB
from voxtune.controller.reconcile import (
    CreateJob,
    CreateObject,
    DeleteObject,
    Observed,
    reconcile,
    wanted_events,
    wanted_logs,
)

TWO_NODES = {"mode": "full", "base_model": "mistralai/Voxtral-Mini-3B-2507",
             "resources": {"nodes": 2, "gpus": 4, "gpu_profile": "80gb"}}
SERVED = frozenset({"batch/v1", JOBSET.api_version})


def two_node_run(status: Any = None, **extra: Any) -> dict:
    return run({**TWO_NODES, **extra}, status=status)


def group(kind: str = "JobSet", condition: str | None = None, reason: str = "",
          suspend: bool = False, restarts: int = 0, queue: str | None = None) -> dict:
    engine = JOBSET if kind == "JobSet" else TRAINJOB
    labels = {"voxtune.io/run": "r", "voxtune.io/step": "train"}
    if queue:
        labels["kueue.x-k8s.io/queue-name"] = queue
    conditions = [{"type": condition, "status": "True", "reason": reason, "message": "it did",
                   "lastTransitionTime": EARLIER}] if condition else []
    return {"apiVersion": engine.api_version, "kind": kind,
            "metadata": {"name": "r-train", "uid": "group-uid", "labels": labels,
                         "ownerReferences": [{"uid": RUN_UID, "kind": "FineTuneRun"}]},
            "spec": {"suspend": suspend},
            "status": {"conditions": conditions, "restarts": restarts}}


def node_pod(node: int, phase: str = "Running", **parts: Any) -> dict:
    made = pod("train", phase, name=f"r-train-node-0-{node}-x", **parts)
    made["metadata"]["labels"].update({"jobset.sigs.k8s.io/jobset-name": "r-train",
                                       "batch.kubernetes.io/job-completion-index": str(node)})
    made["metadata"]["ownerReferences"] = [{"uid": "child-job", "kind": "Job"}]
    return made


def decide(status: Any = None, served: frozenset[str] | None = SERVED, **observed: Any):
    return reconcile(two_node_run(status), Observed(served=served, **observed), SETTINGS, NOW)


ON_TRAIN = recorded("prepare", running="train")


def test_neither_engine_served_gives_the_clear_condition() -> None:
    decision = decide(recorded("prepare"), served=frozenset({"batch/v1"}))
    status = decision.status
    assert decision.actions == []
    assert (status.phase, status.reason) == ("Pending", "NoEngine")
    assert status.message.startswith("multi-node needs Kubeflow Trainer or JobSet; install "
                                     "one, or set nodes: 1")
    waiting = next(c for c in status.conditions if c.type == "Waiting")
    assert (waiting.status, waiting.reason) == ("True", "NoEngine")


@pytest.mark.parametrize(("served", "kind"), [
    (SERVED | {TRAINJOB.api_version}, "TrainJob"), (SERVED, "JobSet")])
def test_the_group_is_created_once_by_discovery(served: frozenset[str], kind: str) -> None:
    decision = decide(recorded("prepare"), served=served)
    (action,) = decision.actions
    assert isinstance(action, CreateObject) and action.document["kind"] == kind
    assert action.document["metadata"]["ownerReferences"][0]["uid"] == RUN_UID
    assert decision.status.steps["train"].engine == kind
    # the next pass sees it (or a restarted controller does): nothing is created again
    again = reconcile(two_node_run(decision.status.document()),
                      Observed(served=served, groups=[group(kind)]), SETTINGS, NOW)
    assert not [a for a in again.actions if isinstance(a, (CreateObject, CreateJob))]


def test_an_existing_group_keeps_its_engine_whatever_discovery_says() -> None:
    decision = decide(ON_TRAIN, served=frozenset(), groups=[group("TrainJob")],
                      pods=[node_pod(0), node_pod(1)])
    assert decision.actions == [] and decision.status.phase == "Training"


def test_waiting_for_kueue_admits_the_group_as_one() -> None:
    decision = decide(ON_TRAIN, groups=[group(suspend=True, queue="gpus")],
                      events=[event("r-train", "Pending", "insufficient quota for nvidia.com/gpu")])
    status = decision.status
    assert (status.phase, status.reason) == ("Pending", "QueueWaiting")
    assert "waiting for Kueue admission in queue gpus: insufficient quota" in status.message
    assert "(all 2 nodes are admitted together)" in status.message
    assert wanted_events(Observed(groups=[group(suspend=True)])) == ["r-train"]


def test_one_node_waiting_for_a_gpu_says_which() -> None:
    unschedulable = node_pod(1, "Pending", conditions=[{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}])
    decision = decide(ON_TRAIN, groups=[group()], pods=[node_pod(0), unschedulable])
    assert decision.status.reason == "Unschedulable"
    assert decision.status.message.startswith("node 1 of 2: no node with a free nvidia.com/gpu")
    assert decision.status.steps["train"].nodes == "1/2"


def test_all_nodes_running_show_progress_from_node_zero() -> None:
    pods = [node_pod(0), node_pod(1)]
    tails = {"r-train-node-0-0-x": "progress 40/100 steps\n"}
    assert wanted_logs(two_node_run(ON_TRAIN), Observed(pods=pods)) == ["r-train-node-0-0-x"]
    decision = decide(ON_TRAIN, groups=[group(restarts=1)], pods=pods, log_tails=tails)
    status = decision.status
    assert status.phase == "Training" and status.steps["train"].nodes == "2/2"
    assert "on 2 nodes (JobSet r-train)" in status.message
    assert "again after 1 restart of the group" in status.message
    assert status.steps["train"].restarts == 1


def test_a_finished_group_moves_on_to_publish() -> None:
    done = node_pod(0, "Succeeded", exit_code=0, message=json.dumps(
        {"exit_code": 0, "metrics": {"wer": 0.25}, "trained": True}))
    decision = decide(ON_TRAIN, groups=[group(condition="Completed")],
                      pods=[done, node_pod(1, "Succeeded", exit_code=0)])
    assert decision.status.steps["train"].state == "succeeded"
    assert decision.status.metrics["wer"] == 0.25 and decision.status.trained
    (action,) = decision.actions
    assert isinstance(action, CreateJob) and action.name == "r-publish"


def test_a_users_failure_on_any_node_fails_the_run_once_with_its_reason() -> None:
    """Node 1 hit bad input (exit code 2); node 0 then failed only because its peer left."""
    bad = node_pod(1, "Failed", exit_code=2, message=json.dumps(
        {"exit_code": 2, "metrics": {}, "log_tail": "error: clip 7 is not audio"}))
    peer = node_pod(0, "Failed", exit_code=1)
    decision = decide(ON_TRAIN, groups=[group(condition="Failed", reason="FailedJobs")],
                      pods=[peer, bad])
    status = decision.status
    assert (status.phase, status.reason) == ("Failed", "StepFailed")
    assert "train failed (bad input or config)" in status.message
    assert "clip 7 is not audio" in status.message
    assert decision.actions == []


def test_cancel_deletes_the_group() -> None:
    cancelled = run(TWO_NODES, status=ON_TRAIN, cancel=True)
    decision = reconcile(cancelled, Observed(served=SERVED, groups=[group()]), SETTINGS, NOW)
    (action,) = decision.actions
    assert isinstance(action, DeleteObject) and action.name == "r-train"
    assert action.engine is JOBSET
    assert decision.status.phase == "Cancelled"


def test_group_decisions_are_a_fixed_point() -> None:
    observed = Observed(served=SERVED, groups=[group()], pods=[node_pod(0), node_pod(1)])
    first = reconcile(two_node_run(ON_TRAIN), observed, SETTINGS, NOW)
    again = reconcile(two_node_run(first.status.document()), observed, SETTINGS,
                      NOW + timedelta(seconds=30))
    assert again.actions == []
    assert again.status.steps == first.status.steps


def test_a_volume_one_node_mounts_fails_the_run_before_anything_starts() -> None:
    settings = SETTINGS.model_copy(update={"volume_access_modes": ["ReadWriteOnce"]})
    decision = reconcile(two_node_run(recorded("prepare")), Observed(served=SERVED),
                         settings, NOW)
    assert (decision.status.phase, decision.status.reason) == ("Failed", "NotShared")
    assert "ReadWriteOnce, not ReadWriteMany" in decision.status.message
    assert decision.actions == []
