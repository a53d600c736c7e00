"""Reading what the cluster shows of a run — Jobs, pods, events, termination messages —
defensively, for reconcile (pure: no I/O). Any optional section may be absent or null, and a
pod's termination message is whatever the pod wrote: nothing read here may crash reconcile.
`why_waiting` turns an unfinished Job's pods and events into the words for "why pending".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from voxtune.controller.crd import CANCEL_ANNOTATION
from voxtune.controller.jobs import GPU, QUEUE_LABEL
from voxtune.spec import RunSpec

IMAGE_PULL = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
CANNOT_START = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
KUBELET_FAILURES = {"Failed", "BackOff", "ErrImagePull", "InspectFailed"}  # event reasons
# Jobs and pods arrive through separate watches: a finished Job's pods may look unfinished for a
# moment. Their result (exit code, metrics, log tail) is awaited this long, then done without.
SETTLE = timedelta(seconds=30)


def why_waiting(spec: RunSpec, step: str, job: dict[str, Any], pods: list[dict[str, Any]],
              events: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """Why an unfinished Job is not running yet, as (reason, message); ("Running", "")."""
    if part(job, "spec").get("suspend"):
        queue = part(job["metadata"], "labels").get(QUEUE_LABEL)
        detail = latest_event(events, job["metadata"]["name"])
        if queue:
            return "QueueWaiting", join(f"waiting for Kueue admission in queue {queue}", detail)
        return "Suspended", join(f"the {step} Job is suspended", detail)
    live = [pod for pod in pods if phase_of(pod) not in ("Succeeded", "Failed")]
    if not live:
        disrupted = [pod for pod in pods if is_disrupted(pod)]
        if disrupted:
            return "Disrupted", (f"{step} pod was {disruption(disrupted)}; the Job is starting "
                                 "a new one (not counted as a failure)")
        return "Starting", f"waiting for the Job controller to create the {step} pod"
    pod = newest(live)
    assert pod is not None
    if phase_of(pod) == "Running":
        return "Running", ""
    name = pod["metadata"]["name"]
    scheduled = next((c for c in objects(part(pod, "status"), "conditions")
                      if c.get("type") == "PodScheduled"), {})
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        why = latest_event(events, name, {"FailedScheduling"}) or text_of(scheduled, "message")
        if GPU in why and step == "train":
            return "Unschedulable", join(f"no node with a free {GPU} (the train step needs "
                                          f"{spec.resources.gpus})", why)
        return "Unschedulable", join(f"no node can run the {step} pod yet", why)
    for container in objects(part(pod, "status"), "containerStatuses"):
        waiting = part(part(container, "state"), "waiting")
        reason = text_of(waiting, "reason")
        detail = latest_event(events, name, KUBELET_FAILURES) or text_of(waiting, "message")
        if reason in IMAGE_PULL:
            return "ImagePullBackOff", join(
                f"image pull failed for {text_of(container, 'image')} ({reason})", detail)
        if reason in CANNOT_START:
            return "ContainerConfigError", join(f"cannot start the {step} container ({reason})",
                                                 detail)
        if reason:
            return "Starting", f"starting the {step} pod ({reason})"
    return "Starting", f"starting the {step} pod"


def cancel_requested(run: dict[str, Any]) -> bool:
    value = (run["metadata"].get("annotations") or {}).get(CANCEL_ANNOTATION)
    return value is not None and value.lower() != "false"


def is_owned(job: dict[str, Any], run: dict[str, Any]) -> bool:
    uid = run["metadata"].get("uid")
    return any(ref.get("uid") == uid for ref in objects(job["metadata"], "ownerReferences"))


def is_deleting(obj: dict[str, Any]) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def job_condition(job: dict[str, Any]) -> dict[str, Any] | None:
    """The Complete or Failed condition of a finished Job, else None."""
    for condition in objects(part(job, "status"), "conditions"):
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return condition
    return None


def pods_settled(outcome: dict[str, Any], pods: list[dict[str, Any]], now: datetime) -> bool:
    """Have the finished Job's pods finished too, as far as we can see?"""
    phases = [phase_of(pod) for pod in pods]
    final = "Succeeded" if outcome["type"] == "Complete" else "Failed"
    if final in phases and all(phase in ("Succeeded", "Failed") for phase in phases):
        return True
    since = parse_time(outcome.get("lastTransitionTime"))
    return since is None or now - since > SETTLE


def pods_of(job: dict[str, Any], pods: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    uid = job["metadata"].get("uid")
    return [pod for pod in pods
            if any(ref.get("uid") == uid for ref in objects(pod["metadata"], "ownerReferences"))]


def newest(pods: Sequence[dict[str, Any]], phase: str | None = None) -> dict[str, Any] | None:
    chosen = [pod for pod in pods if phase is None or phase_of(pod) == phase]
    return max(chosen, key=lambda pod: (pod["metadata"].get("creationTimestamp") or "",
                                        pod["metadata"]["name"]), default=None)


def is_disrupted(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "DisruptionTarget" and c.get("status") == "True"
               for c in objects(part(pod, "status"), "conditions"))


def disruption(pods: list[dict[str, Any]]) -> str:
    reasons = {c.get("reason") or "disrupted" for pod in pods
               for c in objects(part(pod, "status"), "conditions")
               if c.get("type") == "DisruptionTarget"}
    kinds = ", ".join(sorted(reasons))
    return f"preempted or evicted ({kinds}; {len(pods)} so far)"


def terminated_state(pod: dict[str, Any] | None) -> dict[str, Any] | None:
    for container in objects(part(pod, "status"), "containerStatuses"):
        terminated = part(part(container, "state"), "terminated")
        if terminated:
            return terminated
    return None


def termination(pod: dict[str, Any] | None,
                 log_tails: Mapping[str, str]) -> tuple[int | None, dict[str, float], str]:
    """(exit code, headline metrics, log tail) of a finished pod: the step wrapper's JSON
    termination message, else the kubelet's log fallback, else the tail the loop fetched."""
    terminated = terminated_state(pod)
    if pod is None or terminated is None:
        return None, {}, ""
    code, message = terminated.get("exitCode"), terminated.get("message") or ""
    try:
        document = json.loads(message)
    except ValueError:
        document = None
    if isinstance(document, dict):  # the pod wrote it: take only what has the right type
        reported = document.get("exit_code")
        metrics = {k: float(v) for k, v in part(document, "metrics").items()
                   if is_number(v) and math.isfinite(v)}
        code = reported if isinstance(reported, int) and not isinstance(reported, bool) else code
        return code, metrics, text_of(document, "log_tail")
    return code, {}, message or log_tails.get(pod["metadata"]["name"], "")


def latest_event(events: Sequence[dict[str, Any]], involved: str,
                  reasons: set[str] | None = None) -> str:
    """The message of the newest event about `involved` (with one of `reasons`)."""
    mine = [(text_of(event, "lastTimestamp") or text_of(event, "eventTime")
             or text_of(part(event, "metadata"), "creationTimestamp"), index, event)
            for index, event in enumerate(events)
            if part(event, "involvedObject").get("name") == involved
            and (reasons is None or event.get("reason") in reasons)]
    return text_of(max(mine, key=lambda found: found[:2])[2], "message") if mine else ""


def phase_of(pod: dict[str, Any]) -> Any:
    return part(pod, "status").get("phase")


def part(obj: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    """obj[key] when it is an object, else {}: any optional section may be absent or null."""
    value = (obj or {}).get(key)
    return value if isinstance(value, dict) else {}


def objects(obj: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """The objects in the list obj[key]; an absent or null list has none."""
    value = obj.get(key)
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def text_of(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def join(summary: str, detail: str) -> str:
    return f"{summary}: {detail}" if detail else summary


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
