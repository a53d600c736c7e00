"""What the loop gives reconcile (Observed) and what reconcile asks of it (the actions): plain
data, shared by reconcile, its multi-node part and the operator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import V1Job

from voxtune.controller.engines import Engine


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
