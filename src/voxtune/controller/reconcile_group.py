"""reconcile's rules 4.-6. for a multi-node train step: one TrainJob or JobSet, its engine the
existing group's, else chosen from what the cluster serves (none: the run waits with the reason
and what to install); the waiting words of the group, its nodes and restarts, its outcome.
Pure, like reconcile."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from voxtune.controller.actions import Action, CreateObject, Observed
from voxtune.controller.crd import FineTuneRunStatus, KubeStepStatus
from voxtune.controller.engines import NoEngine, build_group, choose_engine
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
from voxtune.controller.jobs import JobSettings, job_name, owner_reference
from voxtune.controller.observe import (
    is_deleting,
    is_disrupted,
    iso,
    parse_time,
    phase_of,
    termination,
)
from voxtune.controller.status_words import finish, no_space, record_outcome, running, waiting
from voxtune.errors import ExitCode
from voxtune.plan.placement import Placement
from voxtune.run.process import failure_message
from voxtune.spec import RunSpec


def advance_group(run: dict[str, Any], spec: RunSpec, status: FineTuneRunStatus,
                  state: KubeStepStatus, group: dict[str, Any] | None, observed: Observed,
                  settings: JobSettings, placement: Placement,
                  now: datetime) -> tuple[bool, list[Action]]:
    """(the step succeeded, actions) for the train step on several nodes."""
    stamp, name = iso(now), job_name(spec.name, "train")
    engine = engine_of(group) if group else None
    if engine is None:
        try:
            engine = choose_engine(spec, settings, observed.served)
        except NoEngine as error:
            waiting(status, "NoEngine", str(error), stamp)
            return False, []
    assert engine is not None  # single-node runs never come here
    state.engine = engine.kind
    if group is None:
        state.state, state.started = "running", state.started or stamp
        waiting(status, "Starting", f"created {engine.kind} {name} ({spec.resources.nodes} "
                 f"nodes × {spec.resources.gpus} GPUs)", stamp)
        return False, [CreateObject(engine, build_group(engine, spec, settings, placement,
                                                        owner_reference(run)))]
    if is_deleting(group):
        waiting(status, "Starting", f"waiting for the old {engine.kind} {name} to be deleted",
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
        record_outcome(status, rank_zero(pods, "Succeeded"))
        return True, []
    if outcome and settling(outcome, pods, now):
        # the group's condition was seen before its pods' ends (separate objects, separate
        # watch events): wait for them, or the user's own exit code and log would be lost
        return False, []
    if outcome:
        code, _, log_tail = termination(cause(pods), observed.log_tails)
        state.state, state.exit_code, state.finished, state.nodes = "failed", code, stamp, None
        if code is not None:
            message, reason = failure_message("train", code, log_tail), "StepFailed"
            if code == ExitCode.NO_SPACE:
                message, reason = no_space(spec.name, "train", settings, log_tail), "NoSpace"
        else:
            reason = outcome.get("reason") or "StepFailed"
            message = f"train failed ({engine.kind} {reason}): {outcome.get('message', '')}"
        if state.restarts:
            message += f" (after {state.restarts} restarts of the group)"
        finish(status, "Failed", reason, message, stamp)
        return False, []
    reason, message = why_group_waiting(spec, group, pods, observed.events)
    if reason == "Running":
        # node 0's log speaks for the run (its rank 0 reports progress)
        running(status, spec, "train", state, [pod for pod in pods if node_of(pod) == 0],
                 observed.log_tails, now)
        status.message += f" on {spec.resources.nodes} nodes ({engine.kind} {name})"
    else:
        waiting(status, reason, message, stamp)
    return False, []


SETTLE_S = 60  # how long a finished group's pods may take to show how they ended


def settling(outcome: dict[str, Any], pods: list[dict[str, Any]], now: datetime) -> bool:
    """The group has finished but its pods do not show their end yet — some still run, or
    none has been seen at all (the pods' watch is behind the group's) — for at most SETTLE_S
    after the group's condition."""
    since = parse_time(outcome.get("lastTransitionTime"))
    recent = since is None or (now - since).total_seconds() < SETTLE_S
    return recent and (not pods or any(phase_of(pod) not in ("Succeeded", "Failed")
                                       for pod in pods))
