"""Reconcile: (FineTuneRun, what the cluster shows) → (actions, new status). Pure: no I/O, no
clock (the caller passes `now`), so every decision is a table-driven unit test.

Level-triggered: the same inputs always give the same answer, and the answer only depends on
the current state, so re-running it after a restart or on a stale cache is harmless. Durable
memory is the run's own status: a step recorded as succeeded is never started again, even after
its Job has expired (ttlSecondsAfterFinished is only set once the status holds the result).

Rules, in order:
1. a finished run (Succeeded/Failed/Cancelled) changes no more; its Jobs get their TTL;
2. the annotation voxtune.io/cancel deletes every Job of the run (propagationPolicy Background:
   the pods get SIGTERM, training saves a checkpoint) → Cancelled;
3. an invalid spec → Failed (InvalidSpec), with one line per wrong field; a spec that is
   missing, a string or a list is invalid too (never "every default");
4. steps run in spec order, the next only after the previous succeeded; the first unfinished
   step's Job is created if missing (deterministic name `<run>-<step>`; 409 = already there);
5. a failed Job fails the run with the exit code's meaning and the log tail (from the pod's
   termination message, which the step wrapper writes, else from the log tail passed in);
   pods disrupted by preemption or eviction (DisruptionTarget) are not failures: the Job
   replaces them (podFailurePolicy Ignore) and the status counts them per step; exit code
   74 (NO_SPACE) says the shared volume is full (NoSpace);
6. while a step waits, the message says why: no node with a free GPU, image pull failure,
   waiting for Kueue admission, a missing Secret ….

Nothing read from the API may crash it. A status it cannot read (another version's, or a
hand-edited one) loses only its unreadable parts (crd.read_status) and the run goes on from
what remains and from its Jobs: a step still recorded as succeeded is not run again, and Job
names are deterministic, so no step ever has two Jobs. Only a status with nothing readable
left, on a run whose finished Jobs already expired, re-runs those steps, which is safe (steps
are idempotent and resume from the run folder). Marking such runs Failed instead would kill
healthy runs on a rollback. Optional sections of Jobs, pods and events may be absent or null,
and a pod's termination message is whatever the pod wrote: all are read defensively.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from kubernetes.client import V1Job
from pydantic import ValidationError

from voxtune.controller.crd import (
    CANCEL_ANNOTATION,
    STEP_LABEL,
    Condition,
    FineTuneRunStatus,
    KubeStepStatus,
    read_status,
    run_spec,
    run_status,
)
from voxtune.controller.jobs import (
    GPU,
    QUEUE_LABEL,
    JobSettings,
    build_job,
    job_name,
    owner_reference,
)
from voxtune.errors import ExitCode
from voxtune.run.process import failure_message
from voxtune.run.status import Publication, progress_and_eta
from voxtune.run.steps import PHASE_OF_STEP, TERMINAL
from voxtune.spec import RunSpec, format_validation_error

IMAGE_PULL = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
CANNOT_START = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
KUBELET_FAILURES = {"Failed", "BackOff", "ErrImagePull", "InspectFailed"}  # event reasons
# Jobs and pods arrive through separate watches: a finished Job's pods may look unfinished for a
# moment. Their result (exit code, metrics, log tail) is awaited this long, then done without.
SETTLE = timedelta(seconds=30)


@dataclass(frozen=True)
class Observed:
    """What the loop saw of one run: its Jobs, their pods and events, a few log tails."""

    jobs: Sequence[dict[str, Any]] = ()
    pods: Sequence[dict[str, Any]] = ()
    events: Sequence[dict[str, Any]] = ()
    log_tails: Mapping[str, str] = field(default_factory=dict)  # pod name → last lines


@dataclass(frozen=True)
class CreateJob:
    job: V1Job

    @property
    def name(self) -> str:
        return self.job.metadata.name


@dataclass(frozen=True)
class DeleteJob:
    """Delete with propagationPolicy Background (its pods go too)."""

    name: str


@dataclass(frozen=True)
class ExpireJob:
    """Set ttlSecondsAfterFinished on a finished Job whose result the status now holds."""

    name: str
    ttl_seconds: int


Action = CreateJob | DeleteJob | ExpireJob


@dataclass(frozen=True)
class Decision:
    actions: list[Action]
    status: FineTuneRunStatus
    changed: bool  # the status differs from the stored one: write it
    unreadable: list[str] = field(default_factory=list)  # dropped parts of the stored status


def reconcile(run: dict[str, Any], observed: Observed, settings: JobSettings,
              now: datetime) -> Decision:
    stored, unreadable = read_status(run)
    status = stored.model_copy(deep=True)
    status.observed_generation = run["metadata"].get("generation")
    stamp = _iso(now)
    jobs = {job["metadata"]["name"]: job for job in observed.jobs if _owned(job, run)}
    actions: list[Action] = []
    if stored.phase in TERMINAL:  # 1.
        if stored.phase == "Cancelled":
            actions += [DeleteJob(name) for name, job in jobs.items() if not _deleting(job)]
    elif _cancel_requested(run):  # 2.
        actions += [DeleteJob(name) for name, job in jobs.items() if not _deleting(job)]
        for step in status.steps.values():
            if step.state == "running":
                step.state, step.finished = "failed", stamp
        _finish(status, "Cancelled", "Cancelled", "cancelled: the run's Jobs were deleted "
                "(a running train step saves a checkpoint on SIGTERM first)", stamp)
    else:
        try:
            spec = run_spec(run)
        except ValidationError as error:  # 3.
            where = f"{run['metadata'].get('namespace', '')}/{run['metadata']['name']}"
            _finish(status, "Failed", "InvalidSpec", format_validation_error(error, where),
                    stamp)
        else:
            actions += _advance(run, spec, status, jobs, observed, settings, now)  # 4.-6.
    actions += _expire(jobs, stored, settings)
    changed = _comparable(status) != _comparable(stored)
    if changed:
        status.updated = stamp
    return Decision(actions, status, changed, unreadable)


def wanted_logs(run: dict[str, Any], observed: Observed) -> list[str]:
    """Pods whose log tail the loop should fetch before reconciling: the running pod of the
    train step (its progress) and failed pods that left no termination message."""
    if run_status(run).phase in TERMINAL:
        return []
    wanted = []
    for pod in observed.pods:
        phase = _phase(pod)
        silent = not (_terminated(pod) or {}).get("message")
        failed = phase == "Failed" and not _disrupted(pod) and silent
        training = phase == "Running" and _part(pod["metadata"], "labels").get(STEP_LABEL) == \
            "train"
        if failed or training:
            wanted.append(pod["metadata"]["name"])
    return wanted


def wanted_events(observed: Observed) -> list[str]:
    """Objects whose events the loop should fetch: pods that wait and suspended Jobs (the
    words for "why pending")."""
    return [*(pod["metadata"]["name"] for pod in observed.pods if _phase(pod) == "Pending"),
            *(job["metadata"]["name"] for job in observed.jobs
              if _part(job, "spec").get("suspend"))]


# --- the steps --------------------------------------------------------------------------------


def _advance(run: dict[str, Any], spec: RunSpec, status: FineTuneRunStatus,
             jobs: dict[str, dict[str, Any]], observed: Observed, settings: JobSettings,
             now: datetime) -> list[Action]:
    stamp = _iso(now)
    foreign = {job["metadata"]["name"] for job in observed.jobs} - set(jobs)
    status.steps = {step: status.steps.get(step, KubeStepStatus()) for step in spec.steps}
    for step in spec.steps:
        state = status.steps[step]
        if state.state == "succeeded":
            continue
        name = job_name(spec.name, step)
        job, state.job, status.step = jobs.get(name), name, step
        if job is None and name in foreign:
            _waiting(status, "JobConflict", f"a Job named {name} exists that does not belong "
                     "to this run; delete it (or wait until a deleted run's Jobs are gone)",
                     stamp)
            return []
        if job is None:
            state.state, state.started = "running", state.started or stamp
            _waiting(status, "Starting", f"created Job {name}", stamp)
            return [CreateJob(build_job(spec, step, settings, owner_reference(run)))]
        if _deleting(job):
            _waiting(status, "Starting", f"waiting for the old Job {name} to be deleted", stamp)
            return []
        pods = _pods_of(job, observed.pods)
        disrupted = [pod for pod in pods if _disrupted(pod)]
        state.disruptions = max(state.disruptions, len(disrupted))
        state.state = "running"
        state.started = _part(job, "status").get("startTime") or state.started or stamp
        outcome = _job_condition(job)
        if outcome and not _settled(outcome, pods, now):
            return []
        if outcome and outcome["type"] == "Complete":
            code, metrics, _ = _termination(_newest(pods, "Succeeded"), observed.log_tails)
            state.state, state.exit_code = "succeeded", code if code is not None else 0
            state.finished = _part(job, "status").get("completionTime") or stamp
            status.metrics.update(metrics)
            _record_outcome(status, _newest(pods, "Succeeded"))
            continue
        if outcome:
            failed = [pod for pod in pods if _phase(pod) == "Failed" and not _disrupted(pod)]
            code, _, log_tail = _termination(_newest(failed), observed.log_tails)
            state.state, state.exit_code, state.finished = "failed", code, stamp
            reason = outcome.get("reason") or "StepFailed"
            if code == ExitCode.NO_SPACE:
                message, reason = _no_space(spec.name, step, settings, log_tail), "NoSpace"
            elif code is not None and reason != "DeadlineExceeded":
                message, reason = failure_message(step, code, log_tail), "StepFailed"
            else:  # no pod to ask, or the deadline: the Job's own words
                message = f"{step} failed ({reason}): {outcome.get('message', '')}"
            _finish(status, "Failed", reason, message, stamp)
            return []
        reason, message = _activity(spec, step, job, pods, observed.events)
        if reason == "Running":
            _running(status, spec, step, state, pods, observed.log_tails, now)
        else:
            _waiting(status, reason, message, stamp)
        return []
    status.step, status.eta = None, None
    _finish(status, "Succeeded", "Completed", "all steps succeeded", stamp)
    return []


def _activity(spec: RunSpec, step: str, job: dict[str, Any], pods: list[dict[str, Any]],
              events: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """Why an unfinished Job is not running yet, as (reason, message); ("Running", "")."""
    if _part(job, "spec").get("suspend"):
        queue = _part(job["metadata"], "labels").get(QUEUE_LABEL)
        detail = _latest_event(events, job["metadata"]["name"])
        if queue:
            return "QueueWaiting", _join(f"waiting for Kueue admission in queue {queue}", detail)
        return "Suspended", _join(f"the {step} Job is suspended", detail)
    live = [pod for pod in pods if _phase(pod) not in ("Succeeded", "Failed")]
    if not live:
        disrupted = [pod for pod in pods if _disrupted(pod)]
        if disrupted:
            return "Disrupted", (f"{step} pod was {_disruption(disrupted)}; the Job is starting "
                                 "a new one (not counted as a failure)")
        return "Starting", f"waiting for the Job controller to create the {step} pod"
    pod = _newest(live)
    assert pod is not None
    if _phase(pod) == "Running":
        return "Running", ""
    name = pod["metadata"]["name"]
    scheduled = next((c for c in _objects(_part(pod, "status"), "conditions")
                      if c.get("type") == "PodScheduled"), {})
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        why = _latest_event(events, name, {"FailedScheduling"}) or _text(scheduled, "message")
        if GPU in why and step == "train":
            return "Unschedulable", _join(f"no node with a free {GPU} (the train step needs "
                                          f"{spec.resources.gpus})", why)
        return "Unschedulable", _join(f"no node can run the {step} pod yet", why)
    for container in _objects(_part(pod, "status"), "containerStatuses"):
        waiting = _part(_part(container, "state"), "waiting")
        reason = _text(waiting, "reason")
        detail = _latest_event(events, name, KUBELET_FAILURES) or _text(waiting, "message")
        if reason in IMAGE_PULL:
            return "ImagePullBackOff", _join(
                f"image pull failed for {_text(container, 'image')} ({reason})", detail)
        if reason in CANNOT_START:
            return "ContainerConfigError", _join(f"cannot start the {step} container ({reason})",
                                                 detail)
        if reason:
            return "Starting", f"starting the {step} pod ({reason})"
    return "Starting", f"starting the {step} pod"


def _running(status: FineTuneRunStatus, spec: RunSpec, step: str, state: KubeStepStatus,
             pods: list[dict[str, Any]], log_tails: Mapping[str, str], now: datetime) -> None:
    status.phase, status.reason = PHASE_OF_STEP[step], "Running"
    status.message = f"running {step}"
    if state.disruptions:
        status.message += (f" (again after {state.disruptions} disruption"
                           f"{'s' if state.disruptions > 1 else ''}; training resumes from its "
                           "last checkpoint)" if step == "train" else ")")
    done = sum(s.state == "succeeded" for s in status.steps.values())
    pod = _newest([p for p in pods if _phase(p) == "Running"])
    output = log_tails.get(pod["metadata"]["name"], "") if pod else ""
    status.progress, status.eta = progress_and_eta(done, len(spec.steps), step, output,
                                                   _parse_time(state.started), now)
    _condition(status, "Waiting", False, "Running", "", _iso(now))


def _waiting(status: FineTuneRunStatus, reason: str, message: str, stamp: str) -> None:
    status.phase, status.reason, status.message, status.eta = "Pending", reason, message, None
    done = sum(s.state == "succeeded" for s in status.steps.values())
    status.progress = f"{done}/{len(status.steps)}"
    _condition(status, "Waiting", True, reason, message, stamp)


def _finish(status: FineTuneRunStatus, phase: str, reason: str, message: str,
            stamp: str) -> None:
    status.phase, status.reason, status.message, status.eta = phase, reason, message, None
    if status.steps:
        done = sum(s.state == "succeeded" for s in status.steps.values())
        status.progress = f"{done}/{len(status.steps)}"
    if any(c.type == "Waiting" for c in status.conditions):
        _condition(status, "Waiting", False, reason, "", stamp)
    condition = {"Succeeded": "Complete", "Failed": "Failed", "Cancelled": "Cancelled"}[phase]
    _condition(status, condition, True, reason, message.splitlines()[0], stamp)


def _condition(status: FineTuneRunStatus, kind: str, true: bool, reason: str, message: str,
               stamp: str) -> None:
    value = "True" if true else "False"
    for index, condition in enumerate(status.conditions):
        if condition.type == kind:
            changed = condition.status != value
            status.conditions[index] = Condition(
                type=kind, status=value, reason=reason, message=message,
                last_transition_time=stamp if changed else condition.last_transition_time)
            return
    status.conditions.append(Condition(type=kind, status=value, reason=reason, message=message,
                                       last_transition_time=stamp))


def _expire(jobs: dict[str, dict[str, Any]], stored: FineTuneRunStatus,
            settings: JobSettings) -> list[Action]:
    """TTL for finished Jobs whose result the *stored* status already holds."""
    actions: list[Action] = []
    for name, job in jobs.items():
        step = _part(job["metadata"], "labels").get(STEP_LABEL, "")
        recorded = stored.steps.get(step)
        if _job_condition(job) and recorded and recorded.state in ("succeeded", "failed") \
                and _part(job, "spec").get("ttlSecondsAfterFinished") is None \
                and not _deleting(job):
            actions.append(ExpireJob(name, settings.ttl_seconds_after_finished))
    return actions


# --- reading objects --------------------------------------------------------------------------


def _comparable(status: FineTuneRunStatus) -> dict[str, Any]:
    document = status.document()
    document.pop("updated")
    return document


def _cancel_requested(run: dict[str, Any]) -> bool:
    value = (run["metadata"].get("annotations") or {}).get(CANCEL_ANNOTATION)
    return value is not None and value.lower() != "false"


def _owned(job: dict[str, Any], run: dict[str, Any]) -> bool:
    uid = run["metadata"].get("uid")
    return any(ref.get("uid") == uid for ref in _objects(job["metadata"], "ownerReferences"))


def _deleting(obj: dict[str, Any]) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def _job_condition(job: dict[str, Any]) -> dict[str, Any] | None:
    """The Complete or Failed condition of a finished Job, else None."""
    for condition in _objects(_part(job, "status"), "conditions"):
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return condition
    return None


def _settled(outcome: dict[str, Any], pods: list[dict[str, Any]], now: datetime) -> bool:
    """Have the finished Job's pods finished too, as far as we can see?"""
    phases = [_phase(pod) for pod in pods]
    final = "Succeeded" if outcome["type"] == "Complete" else "Failed"
    if final in phases and all(phase in ("Succeeded", "Failed") for phase in phases):
        return True
    since = _parse_time(outcome.get("lastTransitionTime"))
    return since is None or now - since > SETTLE


def _pods_of(job: dict[str, Any], pods: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    uid = job["metadata"].get("uid")
    return [pod for pod in pods
            if any(ref.get("uid") == uid for ref in _objects(pod["metadata"], "ownerReferences"))]


def _newest(pods: Sequence[dict[str, Any]], phase: str | None = None) -> dict[str, Any] | None:
    chosen = [pod for pod in pods if phase is None or _phase(pod) == phase]
    return max(chosen, key=lambda pod: (pod["metadata"].get("creationTimestamp") or "",
                                        pod["metadata"]["name"]), default=None)


def _disrupted(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "DisruptionTarget" and c.get("status") == "True"
               for c in _objects(_part(pod, "status"), "conditions"))


def _disruption(pods: list[dict[str, Any]]) -> str:
    reasons = {c.get("reason") or "disrupted" for pod in pods
               for c in _objects(_part(pod, "status"), "conditions")
               if c.get("type") == "DisruptionTarget"}
    kinds = ", ".join(sorted(reasons))
    return f"preempted or evicted ({kinds}; {len(pods)} so far)"


def _terminated(pod: dict[str, Any] | None) -> dict[str, Any] | None:
    for container in _objects(_part(pod, "status"), "containerStatuses"):
        terminated = _part(_part(container, "state"), "terminated")
        if terminated:
            return terminated
    return None


def _termination(pod: dict[str, Any] | None,
                 log_tails: Mapping[str, str]) -> tuple[int | None, dict[str, float], str]:
    """(exit code, headline metrics, log tail) of a finished pod: the step wrapper's JSON
    termination message, else the kubelet's log fallback, else the tail the loop fetched."""
    terminated = _terminated(pod)
    if pod is None or terminated is None:
        return None, {}, ""
    code, message = terminated.get("exitCode"), terminated.get("message") or ""
    try:
        document = json.loads(message)
    except ValueError:
        document = None
    if isinstance(document, dict):  # the pod wrote it: take only what has the right type
        reported = document.get("exit_code")
        metrics = {k: float(v) for k, v in _part(document, "metrics").items()
                   if _is_number(v) and math.isfinite(v)}
        code = reported if isinstance(reported, int) and not isinstance(reported, bool) else code
        return code, metrics, _text(document, "log_tail")
    return code, {}, message or log_tails.get(pod["metadata"]["name"], "")


def _record_outcome(status: FineTuneRunStatus, pod: dict[str, Any] | None) -> None:
    """Whether the run now holds a trained model and what was published, as the step wrapper's
    termination message says (anything of the wrong shape is ignored)."""
    try:
        document = json.loads((_terminated(pod) or {}).get("message") or "")
    except ValueError:
        return
    if not isinstance(document, dict):
        return
    status.trained = status.trained or document.get("trained") is True
    try:
        if isinstance(document.get("published"), dict):
            status.published = Publication.model_validate(document["published"])
    except ValidationError:
        pass


def _latest_event(events: Sequence[dict[str, Any]], involved: str,
                  reasons: set[str] | None = None) -> str:
    """The message of the newest event about `involved` (with one of `reasons`)."""
    mine = [(_text(event, "lastTimestamp") or _text(event, "eventTime")
             or _text(_part(event, "metadata"), "creationTimestamp"), index, event)
            for index, event in enumerate(events)
            if _part(event, "involvedObject").get("name") == involved
            and (reasons is None or event.get("reason") in reasons)]
    return _text(max(mine, key=lambda found: found[:2])[2], "message") if mine else ""


def _no_space(run: str, step: str, settings: JobSettings, log_tail: str) -> str:
    """Retrying cannot help (the Job fails at once on this exit code) until someone frees
    space; the run folder survives `voxtune delete`, so a resubmitted run resumes."""
    return (f"{step} failed (disk full on the shared volume, PersistentVolumeClaim "
            f"{settings.pvc}): free space there or grow the claim, then `voxtune delete {run}` "
            f"and submit it again (the run folder is kept: training resumes from its last "
            f"checkpoint):\n{log_tail}")


def _phase(pod: dict[str, Any]) -> Any:
    return _part(pod, "status").get("phase")


def _part(obj: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    """obj[key] when it is an object, else {}: any optional section may be absent or null."""
    value = (obj or {}).get(key)
    return value if isinstance(value, dict) else {}


def _objects(obj: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """The objects in the list obj[key]; an absent or null list has none."""
    value = obj.get(key)
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _text(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _join(summary: str, detail: str) -> str:
    return f"{summary}: {detail}" if detail else summary


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)

