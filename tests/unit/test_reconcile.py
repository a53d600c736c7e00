"""reconcile(): table-driven cases of (run, observed Jobs/pods/events) → actions + status."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from voxtune.controller.crd import CANCEL_ANNOTATION, FineTuneRunStatus
from voxtune.controller.jobs import JobSettings
from voxtune.controller.reconcile import (
    CreateJob,
    DeleteJob,
    ExpireJob,
    Observed,
    reconcile,
    wanted_events,
    wanted_logs,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
EARLIER = "2026-03-01T11:00:00Z"
RUN_UID = "run-uid"
SETTINGS = JobSettings()
SCHEDULER = ("0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes "
             "are available: 3 No preemption victims found for incoming pod.")


# --- builders of API objects (the JSON the API server returns) ------------------------------


def run(spec: dict | None = None, status: Any = None, cancel: bool = False,
        steps: list[str] | None = None) -> dict:
    spec = {"steps": steps or ["prepare", "train", "publish"], **(spec or {})}
    metadata: dict[str, Any] = {"name": "r", "namespace": "default", "uid": RUN_UID,
                                "generation": 1}
    if cancel:
        metadata["annotations"] = {CANCEL_ANNOTATION: "true"}
    return {"apiVersion": "voxtune.io/v1alpha1", "kind": "FineTuneRun", "metadata": metadata,
            "spec": spec, **({"status": status} if status is not None else {})}


def with_spec(spec: Any) -> dict:
    """A run whose `spec` is exactly `spec` (a CRD without schema lets anything through);
    `...` leaves the key out."""
    document = run()
    if spec is ...:
        del document["spec"]
    else:
        document["spec"] = spec
    return document


def broken(obj: dict, **sections: Any) -> dict:
    """`obj` with top-level sections replaced (None = null, as another client may write)."""
    return {**obj, **sections}


def recorded(*succeeded: str, running: str | None = None, phase: str = "Pending") -> dict:
    """A stored status in which `succeeded` steps are done and `running` has its Job."""
    steps = {step: {"state": "succeeded", "job": f"r-{step}", "exit_code": 0,
                    "started": EARLIER, "finished": EARLIER} for step in succeeded}
    if running:
        steps[running] = {"state": "running", "job": f"r-{running}", "started": EARLIER}
    return {"name": "r", "phase": phase, "steps": steps}


def job(step: str, outcome: str | None = None, reason: str = "", message: str = "",
        suspend: bool = False, queue: str | None = None, ttl: int | None = None,
        deleting: bool = False, owner: str = RUN_UID, finished: str = EARLIER) -> dict:
    conditions = [{"type": outcome, "status": "True", "reason": reason, "message": message,
                   "lastTransitionTime": finished}] if outcome else []
    labels = {"voxtune.io/run": "r", "voxtune.io/step": step}
    if queue:
        labels["kueue.x-k8s.io/queue-name"] = queue
    metadata: dict[str, Any] = {"name": f"r-{step}", "uid": f"job-{step}", "labels": labels,
                                "ownerReferences": [{"uid": owner, "kind": "FineTuneRun"}]}
    if deleting:
        metadata["deletionTimestamp"] = EARLIER
    status: dict[str, Any] = {"conditions": conditions, "startTime": EARLIER}
    if outcome == "Complete":
        status["completionTime"] = "2026-03-01T11:30:00Z"
    return {"metadata": metadata, "spec": {"suspend": suspend, "ttlSecondsAfterFinished": ttl},
            "status": status}


def pod(step: str, phase: str = "Running", name: str | None = None, created: str = EARLIER,
        conditions: list[dict] | None = None, waiting: str | None = None,
        exit_code: int | None = None, message: str | None = None) -> dict:
    state: dict[str, Any] = {"running": {}} if phase == "Running" else {}
    if waiting:
        state = {"waiting": {"reason": waiting, "message": f"{waiting} happened"}}
    if exit_code is not None:
        state = {"terminated": {"exitCode": exit_code, **({"message": message}
                                                          if message is not None else {})}}
    return {"metadata": {"name": name or f"r-{step}-abcde", "creationTimestamp": created,
                         "labels": {"voxtune.io/run": "r", "voxtune.io/step": step},
                         "ownerReferences": [{"uid": f"job-{step}", "kind": "Job"}]},
            "status": {"phase": phase, "conditions": conditions or [], "containerStatuses": [
                {"name": step, "image": f"voxtune/{step}:0.1.0", "state": state}]}}


def disrupted(step: str, name: str) -> dict:
    return pod(step, "Failed", name=name, exit_code=137, conditions=[
        {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}])


def unschedulable(step: str) -> dict:
    return pod(step, "Pending", conditions=[{"type": "PodScheduled", "status": "False",
                                             "reason": "Unschedulable", "message": SCHEDULER}])


def event(involved: str, reason: str, message: str) -> dict:
    return {"metadata": {"name": f"{involved}.1", "creationTimestamp": EARLIER},
            "involvedObject": {"name": involved}, "reason": reason, "message": message,
            "type": "Warning", "lastTimestamp": EARLIER}


def metrics_message(**metrics: float) -> str:
    return json.dumps({"exit_code": 0, "metrics": metrics})


# --- the table --------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    run: dict
    observed: Observed = field(default_factory=Observed)
    phase: str = "Pending"
    reason: str = ""
    message: str = ""  # a substring the message must contain
    actions: list[str] = field(default_factory=list)  # "create r-train", "delete r-prepare" …
    steps: dict[str, str] = field(default_factory=dict)  # step → state
    check: Any = None  # extra assertions on the status
    timeless: bool = True  # False: the status depends on the clock (an ETA)


CASES = [
    Case("new run creates the first step's Job", run(),
         reason="Starting", message="created Job r-prepare", actions=["create r-prepare"],
         steps={"prepare": "running", "train": "pending", "publish": "pending"}),
    Case("Job without pods yet", run(status=recorded(running="prepare")),
         Observed(jobs=[job("prepare")]), reason="Starting",
         message="waiting for the Job controller to create the prepare pod"),
    Case("running prepare pod", run(status=recorded(running="prepare")),
         Observed(jobs=[job("prepare")], pods=[pod("prepare")]), phase="Preparing",
         reason="Running", message="running prepare", steps={"prepare": "running"},
         check=lambda s: s.progress == "0/3" and s.step == "prepare"),
    Case("prepare done starts train", run(status=recorded(running="prepare")),
         Observed(jobs=[job("prepare", "Complete")],
                  pods=[pod("prepare", "Succeeded", exit_code=0)]),
         reason="Starting", actions=["create r-train"],
         steps={"prepare": "succeeded", "train": "running"},
         check=lambda s: s.steps["prepare"].finished == "2026-03-01T11:30:00Z"),
    Case("train done: metrics from the termination message, publish next",
         run(status=recorded("prepare", running="train")),
         Observed(jobs=[job("prepare", "Complete", ttl=60), job("train", "Complete")],
                  pods=[pod("train", "Succeeded", exit_code=0,
                            message=metrics_message(wer=0.12, base_wer=0.31))]),
         actions=["create r-publish"], steps={"train": "succeeded", "publish": "running"},
         check=lambda s: s.metrics == {"wer": 0.12, "base_wer": 0.31}),
    Case("train done: the run holds a trained model",
         run(status=recorded("prepare", running="train")),
         Observed(jobs=[job("train", "Complete")], pods=[pod(
             "train", "Succeeded", exit_code=0,
             message=json.dumps({"exit_code": 0, "metrics": {}, "trained": True}))]),
         actions=["create r-publish"],
         check=lambda s: s.trained and s.published is None),
    Case("publish done: where it went, from the termination message; bad shapes ignored",
         run(status={**recorded("prepare", "train", running="publish"), "trained": True}),
         Observed(jobs=[job("publish", "Complete")], pods=[pod(
             "publish", "Succeeded", exit_code=0, message=json.dumps(
                 {"exit_code": 0, "metrics": {}, "trained": "yes", "published": {
                     "name": "r", "model": "/data/registry/r/1", "layout": "adapter",
                     "version": 1}}))]),
         phase="Succeeded", reason="Completed", message="all steps succeeded",
         check=lambda s: s.trained and s.published is not None
         and (s.published.model, s.published.version) == ("/data/registry/r/1", 1)),
    Case("a publish record of the wrong shape is ignored",
         run(status=recorded("prepare", "train", running="publish")),
         Observed(jobs=[job("publish", "Complete")], pods=[pod(
             "publish", "Succeeded", exit_code=0, message=json.dumps(
                 {"exit_code": 0, "published": {"model": 3}, "trained": 1}))]),
         phase="Succeeded", check=lambda s: s.published is None and not s.trained),
    Case("every step done", run(status=recorded("prepare", "train", running="publish")),
         Observed(jobs=[job("publish", "Complete")]), phase="Succeeded", reason="Completed",
         message="all steps succeeded",
         check=lambda s: s.step is None and s.progress == "3/3"
         and _condition(s, "Complete") == "True"),
    Case("a one-step run", run(steps=["prepare"], status=recorded(running="prepare")),
         Observed(jobs=[job("prepare", "Complete")]), phase="Succeeded"),
    Case("exit code 2: bad input, with the log tail",
         run(status=recorded(running="prepare")),
         Observed(jobs=[job("prepare", "Failed", "PodFailurePolicy")], pods=[pod(
             "prepare", "Failed", exit_code=2, message=json.dumps(
                 {"exit_code": 2, "metrics": {}, "log_tail": "error: no usable clips"}))]),
         phase="Failed", reason="StepFailed",
         message="prepare failed (bad input or config):\nerror: no usable clips",
         steps={"prepare": "failed"},
         check=lambda s: s.steps["prepare"].exit_code == 2
         and _condition(s, "Failed") == "True"),
    Case("failure without a termination message uses the fetched log tail",
         run(status=recorded("prepare", running="train")),
         Observed(jobs=[job("train", "Failed", "BackoffLimitExceeded")],
                  pods=[pod("train", "Failed", exit_code=1)],
                  log_tails={"r-train-abcde": "Traceback …\nRuntimeError: boom"}),
         phase="Failed", reason="StepFailed",
         message="train failed (exit code 1):\nTraceback …\nRuntimeError: boom"),
    Case("the kubelet's log fallback as termination message",
         run(status=recorded(running="prepare")),
         Observed(jobs=[job("prepare", "Failed", "BackoffLimitExceeded")],
                  pods=[pod("prepare", "Failed", exit_code=137, message="last words")]),
         phase="Failed", message="prepare failed (exit code 137):\nlast words"),
    Case("deadline exceeded", run(status=recorded("prepare", running="train")),
         Observed(jobs=[job("train", "Failed", "DeadlineExceeded",
                            "Job was active longer than specified deadline")],
                  pods=[pod("train", "Failed", exit_code=143)]),
         phase="Failed", reason="DeadlineExceeded",
         message="train failed (DeadlineExceeded): Job was active longer than specified"),
    Case("a preempted pod is not a failure", run(status=recorded("prepare", running="train")),
         Observed(jobs=[job("train")], pods=[disrupted("train", "r-train-1")]),
         reason="Disrupted", message="preempted or evicted (PreemptionByScheduler; 1 so far)",
         steps={"train": "running"}, check=lambda s: s.steps["train"].disruptions == 1),
    Case("the replacement pod runs: training resumes",
         run(status=recorded("prepare", running="train")),
         Observed(jobs=[job("train")], pods=[
             disrupted("train", "r-train-1"),
             pod("train", name="r-train-2", created="2026-03-01T11:10:00Z")]),
         phase="Training", reason="Running",
         message="running train (again after 1 disruption; training resumes from its last "
                 "checkpoint)", check=lambda s: s.steps["train"].disruptions == 1),
    Case("unschedulable: no GPU", run(status=recorded("prepare", running="train")),
         Observed(jobs=[job("train")], pods=[unschedulable("train")],
                  events=[event("r-train-abcde", "FailedScheduling", SCHEDULER)]),
         reason="Unschedulable",
         message=f"no node with a free nvidia.com/gpu (the train step needs 1): {SCHEDULER}",
         check=lambda s: _condition(s, "Waiting") == "True"),
    Case("unschedulable without GPUs involved", run(status=recorded(running="prepare")),
         Observed(jobs=[job("prepare")], pods=[unschedulable("prepare")]),
         reason="Unschedulable", message="no node can run the prepare pod yet: 0/3 nodes"),
    Case("image pull failure", run(status=recorded(running="prepare")),
         Observed(jobs=[job("prepare")], pods=[pod("prepare", "Pending",
                                                   waiting="ImagePullBackOff")],
                  events=[event("r-prepare-abcde", "Failed", 'Failed to pull image "x": '
                                "not found")]),
         reason="ImagePullBackOff",
         message="image pull failed for voxtune/prepare:0.1.0 (ImagePullBackOff): "
                 'Failed to pull image "x": not found'),
    Case("missing Secret", run(status=recorded(running="prepare")),
         Observed(jobs=[job("prepare")], pods=[pod("prepare", "Pending",
                                                   waiting="CreateContainerConfigError")]),
         reason="ContainerConfigError",
         message="cannot start the prepare container (CreateContainerConfigError): "
                 "CreateContainerConfigError happened"),
    Case("container creating", run(status=recorded(running="prepare")),
         Observed(jobs=[job("prepare")], pods=[pod("prepare", "Pending",
                                                   waiting="ContainerCreating")]),
         reason="Starting", message="starting the prepare pod (ContainerCreating)"),
    Case("waiting for Kueue", run(status=recorded("prepare", running="train")),
         Observed(jobs=[job("train", suspend=True, queue="gpu")],
                  events=[event("r-train", "Pending", "couldn't assign flavors: insufficient "
                                "quota for nvidia.com/gpu")]),
         reason="QueueWaiting", message="waiting for Kueue admission in queue gpu: couldn't "
                                        "assign flavors"),
    Case("cancel deletes every Job", run(status=recorded("prepare", running="train"),
                                         cancel=True),
         Observed(jobs=[job("prepare", "Complete", ttl=60), job("train")],
                  pods=[pod("train")]),
         phase="Cancelled", reason="Cancelled", message="cancelled",
         actions=["delete r-prepare", "delete r-train"],
         steps={"prepare": "succeeded", "train": "failed"},
         check=lambda s: _condition(s, "Cancelled") == "True"),
    Case("a cancelled run deletes Jobs still there, nothing else",
         run(status=recorded("prepare", phase="Cancelled"), cancel=True),
         Observed(jobs=[job("train"), job("prepare", deleting=True)]), phase="Cancelled",
         actions=["delete r-train"]),
    Case("invalid spec", run(spec={"training": {"epochz": 3}}), phase="Failed",
         reason="InvalidSpec", message="training.epochz: unknown field"),
    Case("a run that cannot fit gets no Job, and the advice",
         run(spec={"base_model": "mistralai/Voxtral-Small-24B-2507", "mode": "full",
                   "resources": {"gpus": 1, "gpu_profile": "80gb"}}),
         phase="Failed", reason="DoesNotFit",
         message="FSDP: resources.gpus: 4 and resources.strategy: fsdp",
         check=lambda s: _condition(s, "Failed") == "True" and "voxtune delete r" in s.message),
    Case("a GPU profile the cluster does not have is a spec mistake",
         run(spec={"resources": {"gpu_profile": "a100"}}), phase="Failed",
         reason="InvalidSpec", message="GPU profile 'a100': use one of 24gb, 48gb, 80gb"),
    Case("a memory quantity Kubernetes would refuse too",
         run(spec={"resources": {"memory": "lots"}}), phase="Failed", reason="InvalidSpec",
         message="'lots' is not a memory quantity"),
    Case("pod memory it cannot fit is named with the figure",
         run(spec={"resources": {"gpus": 8, "memory": "48Gi"}}), phase="Failed",
         reason="DoesNotFit", message="give the pod at least 68 GiB of memory"),
    Case("finished Jobs get their TTL once the result is stored",
         run(status=recorded("prepare", "train", "publish", phase="Succeeded")),
         Observed(jobs=[job("prepare", "Complete"), job("train", "Complete", ttl=60),
                        job("publish", "Complete")]), phase="Succeeded",
         actions=["expire r-prepare", "expire r-publish"]),
    Case("no TTL before the status holds the result", run(status=recorded(running="prepare")),
         Observed(jobs=[job("prepare", "Complete")]),
         actions=["create r-train"]),
    Case("a succeeded step whose Job expired is not run again",
         run(status=recorded("prepare", running="train")),
         Observed(jobs=[job("train")], pods=[pod("train")]), phase="Training",
         check=lambda s: s.steps["prepare"].state == "succeeded"),
    Case("a Job just failed, its pod's failure not seen yet: wait for it",
         run(status=recorded(running="prepare")),
         Observed(jobs=[job("prepare", "Failed", "PodFailurePolicy",
                            finished="2026-03-01T11:59:55Z")], pods=[pod("prepare")]),
         phase="Pending", steps={"prepare": "running"}, timeless=False),
    Case("… but not forever", run(status=recorded(running="prepare")),
         Observed(jobs=[job("prepare", "Failed", "PodFailurePolicy", "Container prepare "
                            "failed with exit code 2")], pods=[pod("prepare")]),
         phase="Failed", reason="PodFailurePolicy", message="Container prepare failed"),
    Case("a Job just completed, no pod seen yet: wait for its metrics",
         run(status=recorded("prepare", running="train")),
         Observed(jobs=[job("train", "Complete", finished="2026-03-01T11:59:55Z")]),
         steps={"train": "running"}, timeless=False),
    Case("a Job of someone else with our name", run(status=recorded(running="prepare")),
         Observed(jobs=[job("prepare", owner="other-uid")]), reason="JobConflict",
         message="does not belong to this run"),
    Case("a Job still being deleted", run(status=recorded(running="prepare")),
         Observed(jobs=[job("prepare", deleting=True)]), reason="Starting",
         message="waiting for the old Job r-prepare to be deleted"),
    Case("progress and time left from the train log",
         run(status=recorded("prepare", running="train")),
         Observed(jobs=[job("train")], pods=[pod("train")], log_tails={
             "r-train-abcde": "{'loss': 1.2}\nprogress train 100/400 elapsed=50.0s "
                              "remaining=150.0s\n"}),
         phase="Training",
         check=lambda s: s.progress == "1/3 train 100/400" and s.current is not None
         and (s.current.phase, s.current.remaining_s) == ("train", 150.0), timeless=False),
    Case("the publish pod's progress too", run(status=recorded("prepare", "train",
                                                                running="publish")),
         Observed(jobs=[job("publish")], pods=[pod("publish")], log_tails={
             "r-publish-abcde": "progress publish 0/1 elapsed=0.0s\n"}),
         phase="Publishing", check=lambda s: s.progress == "2/3 publish 0/1"),
]


# What the API can hand the controller that it did not write itself: each must end in a clear
# status (or be read as "nothing there"), never in an exception.
MALFORMED = [
    Case("spec is a string", with_spec("prepare train"), phase="Failed",
         reason="InvalidSpec", message="spec: must be an object of RunSpec fields, not a "
                                       "string", check=lambda s: _condition(s, "Failed") == "True"),
    Case("spec is a list", with_spec(["prepare"]), phase="Failed", reason="InvalidSpec",
         message="spec: must be an object of RunSpec fields, not a list"),
    Case("spec is missing: not every default", with_spec(...), phase="Failed",
         reason="InvalidSpec", message="spec: missing: a FineTuneRun needs a spec"),
    Case("spec is null", with_spec(None), phase="Failed", reason="InvalidSpec",
         message="spec: missing"),
    Case("exit code 74: disk full, fails at once with what to do",
         run(status=recorded("prepare", running="train")),
         Observed(jobs=[job("train", "Failed", "PodFailurePolicy")],
                  pods=[pod("train", "Failed", exit_code=74, message=json.dumps(
                      {"exit_code": 74, "log_tail": "no space left on /data/runs/r"}))]),
         phase="Failed", reason="NoSpace",
         message="train failed (disk full on the shared volume, PersistentVolumeClaim "
                 "voxtune-data): free space there or grow the claim, then `voxtune delete r`",
         check=lambda s: s.steps["train"].exit_code == 74
         and "no space left on /data/runs/r" in s.message),
    Case("status is a string: read as none, the first Job is created",
         run(status="garbage"), reason="Starting", actions=["create r-prepare"]),
    Case("status is a list, its Job runs: no second Job", run(status=["x"]),
         Observed(jobs=[job("prepare")], pods=[pod("prepare")]), phase="Preparing",
         steps={"prepare": "running"}),
    Case("unreadable phase: the readable succeeded step is not run again",
         run(status={**recorded("prepare", running="train"), "phase": "Exploded"}),
         Observed(jobs=[job("train")], pods=[pod("train")]), phase="Training",
         steps={"prepare": "succeeded", "train": "running"}),
    Case("one unreadable step, its Job still there: read back from the Job",
         run(status={**recorded("prepare"), "steps": {
             **recorded("prepare")["steps"], "train": {"state": "paused", "started": 7}}}),
         Observed(jobs=[job("train")], pods=[pod("train")]), phase="Training",
         steps={"prepare": "succeeded", "train": "running"}),
    Case("garbage metrics and conditions are dropped, the steps kept",
         run(status={**recorded("prepare", running="train"), "metrics": {"wer": "low"},
                     "conditions": [{"type": 3}]}),
         Observed(jobs=[job("train")], pods=[pod("train")]), phase="Training",
         steps={"prepare": "succeeded", "train": "running"},
         check=lambda s: s.metrics == {} and _condition(s, "Waiting") == "False"),
    Case("a Job with null status and spec", run(status=recorded(running="prepare")),
         Observed(jobs=[broken(job("prepare"), status=None, spec=None)]), reason="Starting",
         message="waiting for the Job controller to create the prepare pod"),
    Case("a Job with null labels and conditions", run(status=recorded(running="prepare")),
         Observed(jobs=[broken(job("prepare"), metadata={
             **job("prepare")["metadata"], "labels": None},
             status={"conditions": None, "startTime": None})]), reason="Starting"),
    Case("a pod with null status", run(status=recorded(running="prepare")),
         Observed(jobs=[job("prepare")], pods=[broken(pod("prepare"), status=None)]),
         reason="Starting", message="starting the prepare pod"),
    Case("a pod with null container states and conditions",
         run(status=recorded(running="prepare")),
         Observed(jobs=[job("prepare")], pods=[broken(pod("prepare"), status={
             "phase": "Pending", "conditions": None,
             "containerStatuses": [None, {"name": "prepare", "state": None}]})]),
         reason="Starting", message="starting the prepare pod"),
    Case("a termination message with the wrong types: the container's exit code",
         run(status=recorded(running="prepare")),
         Observed(jobs=[job("prepare", "Failed", "BackoffLimitExceeded")], pods=[pod(
             "prepare", "Failed", exit_code=1, message=json.dumps(
                 {"exit_code": "2", "metrics": ["wer"], "log_tail": {"x": 1}}))]),
         phase="Failed", reason="StepFailed", message="prepare failed (exit code 1):",
         check=lambda s: s.steps["prepare"].exit_code == 1),
    Case("metrics that are not finite numbers are left out",
         run(status=recorded("prepare", running="train")),
         Observed(jobs=[job("train", "Complete")], pods=[pod(
             "train", "Succeeded", exit_code=0, message='{"exit_code": 0, "metrics": '
             '{"wer": NaN, "cer": "0.1", "smoke": true, "base_wer": 0.3}}')]),
         actions=["create r-publish"], check=lambda s: s.metrics == {"base_wer": 0.3}),
    Case("events with null parts", run(status=recorded("prepare", running="train")),
         Observed(jobs=[job("train")], pods=[unschedulable("train")], events=[
             {"metadata": {"name": "e1"}, "involvedObject": None, "message": None},
             {"metadata": {"name": "e2"}, "involvedObject": {"name": "r-train-abcde"},
              "reason": "FailedScheduling", "message": None, "lastTimestamp": None}]),
         reason="Unschedulable", message="no node with a free nvidia.com/gpu"),
]


@pytest.mark.parametrize("case", CASES + MALFORMED, ids=lambda case: case.id)
def test_reconcile(case: Case) -> None:
    decision = reconcile(case.run, case.observed, SETTINGS, NOW)
    status = decision.status
    assert status.phase == case.phase, status.message
    if case.reason:
        assert status.reason == case.reason
    assert case.message in status.message
    assert summary(decision.actions) == case.actions
    for step, state in case.steps.items():
        assert status.steps[step].state == state, step
    if case.check:
        assert case.check(status), status


@pytest.mark.parametrize("case", CASES + MALFORMED, ids=lambda case: case.id)
def test_reconcile_is_a_fixed_point(case: Case) -> None:
    """Stored status = the decided one, same observation, later → nothing new to write."""
    first = reconcile(case.run, case.observed, SETTINGS, NOW)
    later = NOW + timedelta(seconds=30) if case.timeless else NOW
    again = reconcile({**case.run, "status": first.status.document()}, case.observed,
                      SETTINGS, later)
    assert not again.changed, again.status
    assert [a for a in summary(again.actions) if a.startswith("create")] == \
        [a for a in summary(first.actions) if a.startswith("create")]


def test_created_job_is_the_built_one_with_owner() -> None:
    (action,) = reconcile(run(), Observed(), SETTINGS, NOW).actions
    assert isinstance(action, CreateJob)
    owner = action.job.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == ("FineTuneRun", "r",
                                                                     RUN_UID, True)
    assert action.job.spec.template.spec.containers[0].name == "prepare"


def test_condition_keeps_its_transition_time_while_unchanged() -> None:
    observed = Observed(jobs=[job("train")], pods=[unschedulable("train")])
    first = reconcile(run(status=recorded("prepare", running="train")), observed, SETTINGS,
                      NOW).status
    later = reconcile(run(status=first.document()), observed, SETTINGS,
                      NOW + timedelta(hours=1)).status
    waiting = next(c for c in later.conditions if c.type == "Waiting")
    assert waiting.last_transition_time == "2026-03-01T12:00:00Z"
    running = reconcile(run(status=later.document()), Observed(
        jobs=[job("train")], pods=[pod("train")]), SETTINGS, NOW + timedelta(hours=2)).status
    waiting = next(c for c in running.conditions if c.type == "Waiting")
    assert (waiting.status, waiting.last_transition_time) == ("False", "2026-03-01T14:00:00Z")


def test_disruptions_are_counted_once_each() -> None:
    stored = reconcile(run(status=recorded("prepare", running="train")), Observed(
        jobs=[job("train")], pods=[disrupted("train", "a"), disrupted("train", "b")]),
        SETTINGS, NOW).status
    assert stored.steps["train"].disruptions == 2
    after = reconcile(run(status=stored.document()), Observed(
        jobs=[job("train", "Complete")]), SETTINGS, NOW).status
    assert after.steps["train"].disruptions == 2 and after.steps["train"].state == "succeeded"
    assert after.phase == "Pending"  # publish starts next; never Failed


def test_status_of_someone_else_is_replaced() -> None:
    decision = reconcile(run(status={"phase": "Exploded"}), Observed(), SETTINGS, NOW)
    assert decision.changed and decision.status.phase == "Pending"


@pytest.mark.parametrize(("status", "unreadable"), [
    ("garbage", ["status: not an object but a string"]),
    ({"phase": "Exploded", "steps": {"prepare": {"state": "succeeded"}}},
     ["status.phase: Input should be 'Pending'"]),
    (recorded("prepare"), []),
], ids=["string", "bad phase", "readable"])
def test_what_could_not_be_read_is_reported_for_the_log(status: Any,
                                                        unreadable: list[str]) -> None:
    decision = reconcile(run(status=status), Observed(), SETTINGS, NOW)
    assert len(decision.unreadable) == len(unreadable)
    assert all(line.startswith(start) for line, start in zip(decision.unreadable, unreadable,
                                                             strict=True))


@pytest.mark.parametrize(("pods", "wanted"), [
    ([pod("train")], ["r-train-abcde"]),
    ([pod("publish")], ["r-publish-abcde"]),
    ([pod("prepare", "Failed", exit_code=1)], ["r-prepare-abcde"]),
    ([pod("prepare", "Failed", exit_code=1, message="tail")], []),
    ([disrupted("train", "x")], []),
], ids=["running train: progress", "running publish: progress", "failed, silent",
        "failed with message", "disrupted"])
def test_wanted_logs(pods: list[dict], wanted: list[str]) -> None:
    assert wanted_logs(run(status=recorded(running="train")), Observed(pods=pods)) == wanted


def test_wanted_logs_and_events_survive_null_sections() -> None:
    pods = [broken(pod("train", name="r-train-1"), status=None),
            broken(pod("train", name="r-train-2"), metadata={"name": "r-train-2",
                                                             "labels": None}),
            pod("train", name="r-train-3"), unschedulable("train")]
    jobs = [broken(job("prepare"), spec=None), job("train", suspend=True)]
    observed = Observed(jobs=jobs, pods=pods)
    assert wanted_logs(run(status="garbage"), observed) == ["r-train-2", "r-train-3"]
    assert wanted_events(observed) == ["r-train-abcde", "r-train"]


def summary(actions: list) -> list[str]:
    words = {CreateJob: "create", DeleteJob: "delete", ExpireJob: "expire"}
    return [f"{words[type(action)]} {action.name}" for action in actions]


def _condition(status: FineTuneRunStatus, kind: str) -> str | None:
    return next((c.status for c in status.conditions if c.type == kind), None)
