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
   missing, a string or a list is invalid too (never "every default"); a run whose train step
   cannot fit the cluster's GPU profiles, GPU count or pod memory → Failed (DoesNotFit) with
   what would fit (voxtune.plan), before any Job is created; a multi-node run on a volume
   that is not ReadWriteMany → Failed (NotShared);
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubernetes.client import V1Job
from pydantic import ValidationError

from voxtune.controller.crd import (
    STEP_LABEL,
    Condition,
    FineTuneRunStatus,
    KubeStepStatus,
    read_status,
    run_spec,
    run_status,
)
from voxtune.controller.engines import Engine, NoEngine, build_group, choose_engine
from voxtune.controller.groups import (
    cause,
    engine_of,
    group_condition,
    group_pods,
    group_restarts,
    node_of,
    rank_zero,
    running_nodes,
    why_group_waiting,
)
from voxtune.controller.jobs import (
    JobSettings,
    build_job,
    job_name,
    owner_reference,
    placement_for,
)
from voxtune.controller.observe import (
    cancel_requested,
    is_deleting,
    is_disrupted,
    is_owned,
    iso,
    job_condition,
    newest,
    parse_time,
    part,
    phase_of,
    pods_of,
    pods_settled,
    terminated_state,
    termination,
    why_waiting,
)
from voxtune.errors import ExitCode, UserError
from voxtune.plan.placement import DoesNotFit, NotShared, Placement
from voxtune.run.process import failure_message
from voxtune.run.status import Publication, progress_and_eta
from voxtune.run.steps import PHASE_OF_STEP, TERMINAL
from voxtune.spec import RunSpec, format_validation_error


@dataclass(frozen=True)
class Observed:
    """What the loop saw of one run: its Jobs (and the TrainJob or JobSet of a multi-node
    train step), their pods and events, a few log tails, and the API group/versions the
    cluster serves (discovery; None = not asked)."""

    jobs: Sequence[dict[str, Any]] = ()
    pods: Sequence[dict[str, Any]] = ()
    events: Sequence[dict[str, Any]] = ()
    log_tails: Mapping[str, str] = field(default_factory=dict)  # pod name → last lines
    groups: Sequence[dict[str, Any]] = ()
    served: frozenset[str] | None = None


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


@dataclass(frozen=True)
class CreateObject:
    """Create a multi-node group (TrainJob or JobSet); 409 = already there."""

    engine: Engine
    document: dict[str, Any]

    @property
    def name(self) -> str:
        return self.document["metadata"]["name"]


@dataclass(frozen=True)
class DeleteObject:
    """Delete a group with propagationPolicy Background (its Jobs and pods go too)."""

    engine: Engine
    name: str


Action = CreateJob | DeleteJob | ExpireJob | CreateObject | DeleteObject


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
    stamp = iso(now)
    jobs = {job["metadata"]["name"]: job for job in observed.jobs if is_owned(job, run)}
    groups = {group["metadata"]["name"]: group for group in observed.groups
              if is_owned(group, run) and engine_of(group)}
    actions: list[Action] = []
    if stored.phase in TERMINAL:  # 1.
        if stored.phase == "Cancelled":
            actions += _delete_all(jobs, groups)
    elif cancel_requested(run):  # 2.
        actions += _delete_all(jobs, groups)
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
            try:
                placement = placement_for(spec, settings)
            except DoesNotFit as error:  # 3.
                _finish(status, "Failed", "DoesNotFit", f"{error}; change the spec, then "
                        f"`voxtune delete {spec.name}` and submit it again", stamp)
            except NotShared as error:  # 3. a multi-node run on a volume one node mounts
                _finish(status, "Failed", "NotShared", f"{error}; then `voxtune delete "
                        f"{spec.name}` and submit it again", stamp)
            except UserError as error:  # a GPU profile this cluster lacks, a bad quantity
                where = f"{run['metadata'].get('namespace', '')}/{spec.name}"
                _finish(status, "Failed", "InvalidSpec", f"{where}: {error}", stamp)
            else:  # 4.-6.
                actions += _advance(run, spec, status, jobs, groups, observed, settings,
                                    placement, now)
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
        phase = phase_of(pod)
        silent = not (terminated_state(pod) or {}).get("message")
        failed = phase == "Failed" and not is_disrupted(pod) and silent
        training = phase == "Running" and part(pod["metadata"], "labels").get(STEP_LABEL) == \
            "train" and node_of(pod) in (None, 0)  # a group's progress is in node 0's log
        if failed or training:
            wanted.append(pod["metadata"]["name"])
    return wanted


def wanted_events(observed: Observed) -> list[str]:
    """Objects whose events the loop should fetch: pods that wait and suspended Jobs and
    groups (the words for "why pending")."""
    return [*(pod["metadata"]["name"] for pod in observed.pods if phase_of(pod) == "Pending"),
            *(job["metadata"]["name"] for job in (*observed.jobs, *observed.groups)
              if part(job, "spec").get("suspend"))]


# --- the steps --------------------------------------------------------------------------------


def _delete_all(jobs: dict[str, dict[str, Any]],
                groups: dict[str, dict[str, Any]]) -> list[Action]:
    actions: list[Action] = [DeleteJob(name) for name, job in jobs.items()
                             if not is_deleting(job)]
    for name, group in groups.items():
        engine = engine_of(group)
        if engine and not is_deleting(group):
            actions.append(DeleteObject(engine, name))
    return actions


def _advance(run: dict[str, Any], spec: RunSpec, status: FineTuneRunStatus,
             jobs: dict[str, dict[str, Any]], groups: dict[str, dict[str, Any]],
             observed: Observed, settings: JobSettings, placement: Placement,
             now: datetime) -> list[Action]:
    stamp = iso(now)
    foreign = {job["metadata"]["name"] for job in observed.jobs} - set(jobs)
    status.steps = {step: status.steps.get(step, KubeStepStatus()) for step in spec.steps}
    for step in spec.steps:
        state = status.steps[step]
        if state.state == "succeeded":
            continue
        name = job_name(spec.name, step)
        job, state.job, status.step = jobs.get(name), name, step
        if step == "train" and spec.resources.nodes > 1:
            done, actions = _advance_group(run, spec, status, state, groups.get(name),
                                           observed, settings, placement, now)
            if done:
                continue
            return actions
        if job is None and name in foreign:
            _waiting(status, "JobConflict", f"a Job named {name} exists that does not belong "
                     "to this run; delete it (or wait until a deleted run's Jobs are gone)",
                     stamp)
            return []
        if job is None:
            state.state, state.started = "running", state.started or stamp
            _waiting(status, "Starting", f"created Job {name}", stamp)
            return [CreateJob(build_job(spec, step, settings, owner_reference(run),
                                        placement))]
        if is_deleting(job):
            _waiting(status, "Starting", f"waiting for the old Job {name} to be deleted", stamp)
            return []
        pods = pods_of(job, observed.pods)
        disrupted = [pod for pod in pods if is_disrupted(pod)]
        state.disruptions = max(state.disruptions, len(disrupted))
        state.state = "running"
        state.started = part(job, "status").get("startTime") or state.started or stamp
        outcome = job_condition(job)
        if outcome and not pods_settled(outcome, pods, now):
            return []
        if outcome and outcome["type"] == "Complete":
            code, metrics, _ = termination(newest(pods, "Succeeded"), observed.log_tails)
            state.state, state.exit_code = "succeeded", code if code is not None else 0
            state.finished = part(job, "status").get("completionTime") or stamp
            status.metrics.update(metrics)
            _record_outcome(status, newest(pods, "Succeeded"))
            continue
        if outcome:
            failed = [pod for pod in pods if phase_of(pod) == "Failed" and not is_disrupted(pod)]
            code, _, log_tail = termination(newest(failed), observed.log_tails)
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
        reason, message = why_waiting(spec, step, job, pods, observed.events)
        if reason == "Running":
            _running(status, spec, step, state, pods, observed.log_tails, now)
        else:
            _waiting(status, reason, message, stamp)
        return []
    status.step, status.eta = None, None
    _finish(status, "Succeeded", "Completed", "all steps succeeded", stamp)
    return []


def _advance_group(run: dict[str, Any], spec: RunSpec, status: FineTuneRunStatus,
                   state: KubeStepStatus, group: dict[str, Any] | None, observed: Observed,
                   settings: JobSettings, placement: Placement,
                   now: datetime) -> tuple[bool, list[Action]]:
    """The train step on several nodes, run by a TrainJob or JobSet (rules 4.-6. for a group):
    (step succeeded, actions). The engine is the existing group's, else chosen from what the
    cluster serves; with none, the run waits with the reason and what to install."""
    stamp, name = iso(now), job_name(spec.name, "train")
    engine = engine_of(group) if group else None
    if engine is None:
        try:
            engine = choose_engine(spec, settings, observed.served)
        except NoEngine as error:
            _waiting(status, "NoEngine", str(error), stamp)
            return False, []
    assert engine is not None  # single-node runs never come here
    state.engine = engine.kind
    if group is None:
        state.state, state.started = "running", state.started or stamp
        _waiting(status, "Starting", f"created {engine.kind} {name} ({spec.resources.nodes} "
                 f"nodes × {spec.resources.gpus} GPUs)", stamp)
        return False, [CreateObject(engine, build_group(engine, spec, settings, placement,
                                                        owner_reference(run)))]
    if is_deleting(group):
        _waiting(status, "Starting", f"waiting for the old {engine.kind} {name} to be deleted",
                 stamp)
        return False, []
    pods = group_pods(name, observed.pods)
    state.state = "running"
    state.restarts = max(state.restarts, group_restarts(group))
    state.disruptions = max(state.disruptions, len([p for p in pods if is_disrupted(p)]))
    state.nodes = f"{running_nodes(pods)}/{spec.resources.nodes}"
    outcome = group_condition(group)
    if outcome and outcome["type"] == "Complete":
        code, metrics, _ = termination(rank_zero(pods, "Succeeded"), observed.log_tails)
        state.state, state.exit_code = "succeeded", code if code is not None else 0
        state.finished, state.nodes = stamp, None
        status.metrics.update(metrics)
        _record_outcome(status, rank_zero(pods, "Succeeded"))
        return True, []
    if outcome:
        code, _, log_tail = termination(cause(pods), observed.log_tails)
        state.state, state.exit_code, state.finished, state.nodes = "failed", code, stamp, None
        if code is not None:
            message, reason = failure_message("train", code, log_tail), "StepFailed"
            if code == ExitCode.NO_SPACE:
                message, reason = _no_space(spec.name, "train", settings, log_tail), "NoSpace"
        else:
            reason = outcome.get("reason") or "StepFailed"
            message = f"train failed ({engine.kind} {reason}): {outcome.get('message', '')}"
        if state.restarts:
            message += f" (after {state.restarts} restarts of the group)"
        _finish(status, "Failed", reason, message, stamp)
        return False, []
    reason, message = why_group_waiting(spec, group, pods, observed.events)
    if reason == "Running":
        # node 0's log speaks for the run (its rank 0 reports progress)
        _running(status, spec, "train", state, [pod for pod in pods if node_of(pod) == 0],
                 observed.log_tails, now)
        status.message += f" on {spec.resources.nodes} nodes ({engine.kind} {name})"
    else:
        _waiting(status, reason, message, stamp)
    return False, []


def _running(status: FineTuneRunStatus, spec: RunSpec, step: str, state: KubeStepStatus,
             pods: list[dict[str, Any]], log_tails: Mapping[str, str], now: datetime) -> None:
    status.phase, status.reason = PHASE_OF_STEP[step], "Running"
    status.message = f"running {step}"
    if state.restarts:
        status.message += (f" (again after {state.restarts} restart"
                           f"{'s' if state.restarts > 1 else ''} of the group; training "
                           "resumes from its last checkpoint)")
    elif state.disruptions:
        status.message += (f" (again after {state.disruptions} disruption"
                           f"{'s' if state.disruptions > 1 else ''}; training resumes from its "
                           "last checkpoint)" if step == "train" else ")")
    done = sum(s.state == "succeeded" for s in status.steps.values())
    pod = newest([p for p in pods if phase_of(p) == "Running"])
    output = log_tails.get(pod["metadata"]["name"], "") if pod else ""
    status.progress, status.eta = progress_and_eta(done, len(spec.steps), step, output,
                                                   parse_time(state.started), now)
    _condition(status, "Waiting", False, "Running", "", iso(now))


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
        step = part(job["metadata"], "labels").get(STEP_LABEL, "")
        recorded = stored.steps.get(step)
        if job_condition(job) and recorded and recorded.state in ("succeeded", "failed") \
                and part(job, "spec").get("ttlSecondsAfterFinished") is None \
                and not is_deleting(job):
            actions.append(ExpireJob(name, settings.ttl_seconds_after_finished))
    return actions


# --- reading objects --------------------------------------------------------------------------


def _comparable(status: FineTuneRunStatus) -> dict[str, Any]:
    document = status.document()
    document.pop("updated")
    return document


def _record_outcome(status: FineTuneRunStatus, pod: dict[str, Any] | None) -> None:
    """Whether the run now holds a trained model and what was published, as the step wrapper's
    termination message says (anything of the wrong shape is ignored)."""
    try:
        document = json.loads((terminated_state(pod) or {}).get("message") or "")
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


def _no_space(run: str, step: str, settings: JobSettings, log_tail: str) -> str:
    """Retrying cannot help (the Job fails at once on this exit code) until someone frees
    space; the run folder survives `voxtune delete`, so a resubmitted run resumes."""
    return (f"{step} failed (disk full on the shared volume, PersistentVolumeClaim "
            f"{settings.pvc}): free space there or grow the claim, then `voxtune delete {run}` "
            f"and submit it again (the run folder is kept: training resumes from its last "
            f"checkpoint):\n{log_tail}")
