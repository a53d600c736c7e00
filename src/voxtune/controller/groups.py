"""Reading a multi-node train step's group — its TrainJob or JobSet and the pods of its nodes —
defensively, for reconcile (pure: no I/O, like observe.py). Both kinds end as a JobSet whose
pods carry the JobSet's name and their node's completion index, whichever made it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from voxtune.controller.engines import ENGINES, Engine
from voxtune.controller.jobs import FAIL_AT_ONCE
from voxtune.controller.observe import (
    is_disrupted,
    join,
    newest,
    objects,
    part,
    phase_of,
    terminated_state,
    why_waiting,
)
from voxtune.spec import RunSpec

JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"  # on every pod of a JobSet
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"  # label and annotation
# A finished group's condition, by kind: JobSet says Completed, TrainJob Complete.
FINISHED = {"Completed": "Complete", "Complete": "Complete", "Failed": "Failed"}


def engine_of(group: dict[str, Any]) -> Engine | None:
    return next((engine for engine in ENGINES.values()
                 if group.get("apiVersion") == engine.api_version
                 and group.get("kind") == engine.kind), None)


def group_condition(group: dict[str, Any]) -> dict[str, Any] | None:
    """The finished condition of a group as {"type": Complete|Failed, reason, message, …}."""
    for condition in objects(part(group, "status"), "conditions"):
        kind = FINISHED.get(condition.get("type", ""))
        if kind and condition.get("status") == "True":
            return {**condition, "type": kind}
    return None


def group_restarts(group: dict[str, Any]) -> int:
    restarts = part(group, "status").get("restarts")
    return restarts if isinstance(restarts, int) and not isinstance(restarts, bool) else 0


def group_pods(name: str, pods: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [pod for pod in pods if part(pod["metadata"], "labels").get(JOBSET_NAME_LABEL) == name]


def node_of(pod: dict[str, Any]) -> int | None:
    """The node (completion index, = torchrun's node rank) a pod is."""
    metadata = pod["metadata"]
    value = part(metadata, "labels").get(COMPLETION_INDEX) or \
        part(metadata, "annotations").get(COMPLETION_INDEX)
    return int(value) if isinstance(value, str) and value.isdigit() else None


def rank_zero(pods: list[dict[str, Any]], phase: str | None = None) -> dict[str, Any] | None:
    """Node 0's newest pod: the one whose log and termination message speak for the run."""
    return newest([pod for pod in pods if node_of(pod) == 0], phase)


def cause(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The failed pod that says why a group failed: one that exited with a user's code (its
    peers then fail only because it is gone), else the newest failed one."""
    failed = [pod for pod in pods if phase_of(pod) == "Failed" and not is_disrupted(pod)]
    users = [pod for pod in failed
             if (terminated_state(pod) or {}).get("exitCode") in [int(c) for c in FAIL_AT_ONCE]]
    return newest(users) or newest(failed)


def running_nodes(pods: list[dict[str, Any]]) -> int:
    return len({node_of(pod) for pod in pods if phase_of(pod) == "Running"})


def why_group_waiting(spec: RunSpec, group: dict[str, Any], pods: list[dict[str, Any]],
                      events: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """Why a group is not training yet, as (reason, message); ("Running", "") once every
    node's pod runs. Kueue admits the whole group at once, so a suspended group waits as one."""
    nodes = spec.resources.nodes
    kind = group.get("kind", "group")
    if part(group, "spec").get("suspend"):
        reason, message = why_waiting(spec, "train", group, [], events)
        return reason, message.replace("the train Job", f"the train {kind}") + \
            f" (all {nodes} nodes are admitted together)"
    if running_nodes(pods) >= nodes:
        return "Running", ""
    live = [pod for pod in pods if phase_of(pod) not in ("Succeeded", "Failed", "Running")]
    if not live:
        return "Starting", f"waiting for the {kind} to create the pods of its {nodes} nodes"
    reason, message = why_waiting(spec, "train", group, [newest(live)], events)
    node = node_of(newest(live))
    return reason, join(f"node {node if node is not None else '?'} of {nodes}", message)
