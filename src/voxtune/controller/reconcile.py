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

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from voxtune.controller.actions import (  # noqa: F401 - reconcile's interface, defined there
    Action,
    CreateJob,
    CreateObject,
    DeleteJob,
    DeleteObject,
    ExpireJob,
    Observed,
)
from voxtune.controller.crd import (
    STEP_LABEL,
    FineTuneRunStatus,
    KubeStepStatus,
    read_status,
    run_spec,
    run_status,
)
from voxtune.controller.groups import engine_of, node_of
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
    part,
    phase_of,
    pods_of,
    pods_settled,
    terminated_state,
    termination,
    why_waiting,
)
from voxtune.controller.reconcile_group import advance_group
from voxtune.controller.status_words import (
    finish,
    no_space,
    record_outcome,
    running,
    waiting,
)
from voxtune.errors import ExitCode, UserError
from voxtune.plan.placement import DoesNotFit, NotShared, Placement
from voxtune.run.process import failure_message
from voxtune.run.steps import TERMINAL
from voxtune.spec import RunSpec, format_validation_error


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
        finish(status, "Cancelled", "Cancelled", "cancelled: the run's Jobs were deleted "
                "(a running train step saves a checkpoint on SIGTERM first)", stamp)
    else:
        try:
            spec = run_spec(run)
        except ValidationError as error:  # 3.
            where = f"{run['metadata'].get('namespace', '')}/{run['metadata']['name']}"
            finish(status, "Failed", "InvalidSpec", format_validation_error(error, where),
                    stamp)
        else:
            try:
                placement = placement_for(spec, settings)
            except DoesNotFit as error:  # 3.
                finish(status, "Failed", "DoesNotFit", f"{error}; change the spec, then "
                        f"`voxtune delete {spec.name}` and submit it again", stamp)
            except NotShared as error:  # 3. a multi-node run on a volume one node mounts
                finish(status, "Failed", "NotShared", f"{error}; then `voxtune delete "
                        f"{spec.name}` and submit it again", stamp)
            except UserError as error:  # a GPU profile this cluster lacks, a bad quantity
                where = f"{run['metadata'].get('namespace', '')}/{spec.name}"
                finish(status, "Failed", "InvalidSpec", f"{where}: {error}", stamp)
            else:  # 4.-6.
                actions += _advance(run, spec, status, jobs, groups, observed, settings,
                                    placement, now)
    actions += _expire(jobs, stored, settings)
    changed = _comparable(status) != _comparable(stored)
    if changed:
        status.updated = stamp
    return Decision(actions, status, changed, unreadable)


def wanted_logs(run: dict[str, Any], observed: Observed) -> list[str]:
    """Pods whose log tail the loop should fetch before reconciling: running pods (their
    progress lines) and failed pods that left no termination message."""
    if run_status(run).phase in TERMINAL:
        return []
    wanted = []
    for pod in observed.pods:
        phase = phase_of(pod)
        silent = not (terminated_state(pod) or {}).get("message")
        failed = phase == "Failed" and not is_disrupted(pod) and silent
        # running pods report their progress; a group's is in node 0's log
        if failed or (phase == "Running" and node_of(pod) in (None, 0)):
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
            done, actions = advance_group(run, spec, status, state, groups.get(name),
                                           observed, settings, placement, now)
            if done:
                continue
            return actions
        if job is None and name in foreign:
            waiting(status, "JobConflict", f"a Job named {name} exists that does not belong "
                     "to this run; delete it (or wait until a deleted run's Jobs are gone)",
                     stamp)
            return []
        if job is None:
            state.state, state.started = "running", state.started or stamp
            waiting(status, "Starting", f"created Job {name}", stamp)
            return [CreateJob(build_job(spec, step, settings, owner_reference(run),
                                        placement))]
        if is_deleting(job):
            waiting(status, "Starting", f"waiting for the old Job {name} to be deleted", stamp)
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
            record_outcome(status, newest(pods, "Succeeded"))
            continue
        if outcome:
            failed = [pod for pod in pods if phase_of(pod) == "Failed" and not is_disrupted(pod)]
            code, _, log_tail = termination(newest(failed), observed.log_tails)
            state.state, state.exit_code, state.finished = "failed", code, stamp
            reason = outcome.get("reason") or "StepFailed"
            if code == ExitCode.NO_SPACE:
                message, reason = no_space(spec.name, step, settings, log_tail), "NoSpace"
            elif code is not None and reason != "DeadlineExceeded":
                message, reason = failure_message(step, code, log_tail), "StepFailed"
            else:  # no pod to ask, or the deadline: the Job's own words
                message = f"{step} failed ({reason}): {outcome.get('message', '')}"
            finish(status, "Failed", reason, message, stamp)
            return []
        reason, message = why_waiting(spec, step, job, pods, observed.events)
        if reason == "Running":
            running(status, spec, step, state, pods, observed.log_tails, now)
        else:
            waiting(status, reason, message, stamp)
        return []
    status.step, status.current = None, None
    finish(status, "Succeeded", "Completed", "all steps succeeded", stamp)
    return []


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
