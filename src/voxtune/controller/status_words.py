"""How reconcile words a run's status: its phase, reason, message, progress and conditions,
and what a finished pod's termination message adds (a trained model, a publication). Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from voxtune.controller.crd import Condition, FineTuneRunStatus, KubeStepStatus
from voxtune.controller.jobs import JobSettings
from voxtune.controller.observe import iso, newest, phase_of, terminated_state
from voxtune.run.status import Publication, step_progress
from voxtune.run.steps import PHASE_OF_STEP
from voxtune.spec import RunSpec


def running(status: FineTuneRunStatus, spec: RunSpec, step: str, state: KubeStepStatus,
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
    status.progress, status.current = step_progress(done, len(spec.steps), step, output)
    set_condition(status, "Waiting", False, "Running", "", iso(now))


def waiting(status: FineTuneRunStatus, reason: str, message: str, stamp: str) -> None:
    status.phase, status.reason, status.message, status.current = ("Pending", reason, message,
                                                                   None)
    done = sum(s.state == "succeeded" for s in status.steps.values())
    status.progress = f"{done}/{len(status.steps)}"
    set_condition(status, "Waiting", True, reason, message, stamp)


def finish(status: FineTuneRunStatus, phase: str, reason: str, message: str,
           stamp: str) -> None:
    status.phase, status.reason, status.message, status.current = phase, reason, message, None
    if status.steps:
        done = sum(s.state == "succeeded" for s in status.steps.values())
        status.progress = f"{done}/{len(status.steps)}"
    if any(c.type == "Waiting" for c in status.conditions):
        set_condition(status, "Waiting", False, reason, "", stamp)
    condition = {"Succeeded": "Complete", "Failed": "Failed", "Cancelled": "Cancelled"}[phase]
    set_condition(status, condition, True, reason, message.splitlines()[0], stamp)


def set_condition(status: FineTuneRunStatus, kind: str, true: bool, reason: str,
                  message: str, stamp: str) -> None:
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


def record_outcome(status: FineTuneRunStatus, pod: dict[str, Any] | None) -> None:
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


def no_space(run: str, step: str, settings: JobSettings, log_tail: str) -> str:
    """Retrying cannot help (the Job fails at once on this exit code) until someone frees
    space; the run folder survives `voxtune delete`, so a resubmitted run resumes."""
    return (f"{step} failed (disk full on the shared volume, PersistentVolumeClaim "
            f"{settings.pvc}): free space there or grow the claim, then `voxtune delete {run}` "
            f"and submit it again (the run folder is kept: training resumes from its last "
            f"checkpoint):\n{log_tail}")
