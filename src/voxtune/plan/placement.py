"""From a plan to what a run's pods get, and the refusal of a run that cannot fit: one function,
`place`, for every place a run is created or placed (`voxtune submit`/`run` and
`voxtune.Client`, the controller, the Job builder and `voxtune render`).

    place(spec, profiles) → Placement(train memory per pod, GPU product, grace period, …)
                          | DoesNotFit (a UserError naming what would fit)

A base model whose config this process cannot read (a folder on a volume it does not mount,
a Hub id missing from its cache) cannot be planned here: its Placement has no plan and the
caller falls back to its configured defaults; the train step is then the first to know.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from voxtune.errors import UserError
from voxtune.plan import (
    DEFAULT_PROFILES,
    DEFAULT_WRITE_MB_PER_S,
    GpuProfile,
    Plan,
    UnknownProfile,
    memory_gib,
    plan_run,
    profile_named,
)
from voxtune.plan.geometry import UnknownModel
from voxtune.plan.memory import merge_host_gib
from voxtune.spec import RunSpec

# Over the plan's host figure: page cache of the streamed checkpoint shards, tokenizer and
# dataloader workers' copies; a pod over its limit is OOM-killed, not slowed down.
HOST_HEADROOM = 1.2
# /dev/shm in use per GPU (NCCL's buffers, the dataloader's batches): tmpfs pages count against
# the pod's memory limit.
SHM_GIB_PER_GPU = 1.0
# The SIGTERM checkpoint: write time at the volume's stated speed, ×1.25, plus the time to
# stop the step and flush the rest (logs, status).
GRACE_FACTOR, GRACE_MARGIN_S = 1.25, 30
DEFAULT_MAX_GRACE_S = 900
# /tmp of each step pod (HOME is there: Triton, inductor and Hugging Face scratch); requested so
# the scheduler picks a node with the disk.
SCRATCH_GIB = {"prepare": 4, "train": 16, "publish": 8}


SHARED_ACCESS_MODE = "ReadWriteMany"  # what lets the pods of every node mount the run folder


class DoesNotFit(UserError):
    """The run needs more than the GPU profiles, GPUs or pod memory it would get."""


class NotShared(UserError):
    """A multi-node run on a volume that not every node can mount."""


@dataclass(frozen=True)
class Placement:
    plan: Plan | None  # None: the base model could not be planned here
    train_memory_gib: int | None  # the train pod's memory request and limit
    gpu_product: str  # nvidia.com/gpu.product of the chosen profile ("" = any GPU node)
    termination_grace_s: int | None  # train pod; None = Kubernetes' default (30 s)
    checkpoint_covered: bool  # the grace period covers writing a checkpoint on SIGTERM
    publish_memory_gib: int | None  # publish.merge: the base in bf16; None = the default
    scratch_gib: dict[str, int]

    def pod_json(self) -> dict[str, object]:
        """What the train pod gets (`voxtune plan`'s "pod")."""
        return {"memory": f"{self.train_memory_gib}Gi" if self.train_memory_gib else None,
                "gpu_product": self.gpu_product or None,
                "termination_grace_s": self.termination_grace_s,
                "checkpoint_covered": self.checkpoint_covered,
                "scratch": f"{self.scratch_gib['train']}Gi"}


def place(spec: RunSpec, profiles: tuple[GpuProfile, ...] = DEFAULT_PROFILES,
          write_mb_per_s: float = DEFAULT_WRITE_MB_PER_S,
          max_grace_s: int = DEFAULT_MAX_GRACE_S,
          host_limit_gib: float | None = None,
          volume_access_modes: tuple[str, ...] | None = None) -> Placement:
    """Where `spec` runs and what its pods get; DoesNotFit when its train step cannot fit.

    `host_limit_gib` caps host memory (this machine's, for a local run); the spec's own
    `resources.memory` is the pod's limit when given, and a figure too small is refused.
    `volume_access_modes` are the run folder's volume's (None: unknown, e.g. a local run); a
    multi-node run needs ReadWriteMany, else NotShared."""
    if "train" in spec.steps:
        refuse_unless_shared(spec, volume_access_modes)
    requested = memory_gib(spec.resources.memory) if spec.resources.memory else None
    limits = [limit for limit in (requested, host_limit_gib) if limit is not None]
    try:
        plan = plan_run(spec, profiles=profiles, host_limit_gib=min(limits) if limits else None,
                        write_mb_per_s=write_mb_per_s)
    except UnknownModel:
        named = profile_named(spec.resources.gpu_profile, profiles) \
            if spec.resources.gpu_profile else None
        return Placement(None, math.ceil(requested) if requested else None,
                         named.product if named and spec.resources.gpus else "", None, False,
                         None, SCRATCH_GIB)
    if "train" in spec.steps and plan.profile:
        refuse_unless_one_node_holds(spec, plan.profile)
    if "train" in spec.steps and not plan.fits:
        raise DoesNotFit(f"run {spec.name!r} does not fit ({fit_summary(plan)}): "
                         + "; or ".join(plan.advice))
    needed = math.ceil(plan.estimate.host_gib * HOST_HEADROOM
                       + SHM_GIB_PER_GPU * spec.resources.gpus)
    grace = math.ceil(plan.checkpoint_write_s * GRACE_FACTOR) + GRACE_MARGIN_S
    merge = None
    if spec.publish.merge and spec.mode != "full":
        merge = math.ceil(merge_host_gib(plan.geometry, plan.setup) * HOST_HEADROOM)
    return Placement(
        plan=plan,
        train_memory_gib=max(needed, math.ceil(requested)) if requested else needed,
        gpu_product=plan.profile.product if plan.profile else "",
        termination_grace_s=min(grace, max_grace_s),
        checkpoint_covered=grace <= max_grace_s,
        publish_memory_gib=merge,
        scratch_gib=SCRATCH_GIB)


def refuse_unless_one_node_holds(spec: RunSpec, profile: GpuProfile) -> None:
    """A pod asking for more GPUs than such a node has would wait for ever: say how many
    nodes of the profile's size hold the same GPUs."""
    gpus, per_node = spec.resources.gpus, profile.gpus_per_node
    if gpus <= per_node:
        return
    nodes = math.ceil(gpus * spec.resources.nodes / per_node)
    raise DoesNotFit(f"run {spec.name!r} asks for {gpus} GPUs per pod, but a {profile.name} "
                     f"node has {per_node}: no node can run it; use resources.gpus: "
                     f"{per_node} and resources.nodes: {nodes} (the same GPUs over {nodes} "
                     "nodes)")


def refuse_unless_shared(spec: RunSpec, access_modes: tuple[str, ...] | None) -> None:
    """Every node reads the prepared data and the last checkpoint and rank 0 writes the next:
    on a volume only one node can mount, node 2 would see an empty folder (or never start)."""
    if spec.resources.nodes == 1 or access_modes is None or SHARED_ACCESS_MODE in access_modes:
        return
    modes = ", ".join(access_modes) or "of no known access mode"
    raise NotShared(f"run {spec.name!r} trains on {spec.resources.nodes} nodes, which all "
                    f"need the run folder: its volume is {modes}, not {SHARED_ACCESS_MODE}; "
                    f"put the runs on a {SHARED_ACCESS_MODE} volume (see docs/operations.md) "
                    "or set nodes: 1")


def fit_summary(plan: Plan) -> str:
    """`≈285 GiB per GPU on 80gb (79.1 GiB), ≈7 GiB host memory`"""
    parts = []
    if plan.profile:
        parts.append(f"≈{plan.gpu_memory_gib:.0f} GiB per GPU on {plan.profile.name} "
                     f"({plan.profile.memory_gib:g} GiB)")
    limit = f" of {plan.host_limit_gib:.3g}" if plan.host_limit_gib else ""
    parts.append(f"≈{plan.estimate.host_gib:.0f}{limit} GiB host memory")
    return ", ".join(parts)


def refuse_unless_fits(spec: RunSpec, local: bool) -> Plan | None:
    """What `voxtune submit`/`run` and `voxtune.Client` check before creating a run.

    Local runs are checked against this machine's memory and the shipped profiles. A cluster
    run is checked against the shipped profiles here and again by the controller against the
    cluster's: a profile only the cluster defines, or a model only the cluster can read, is
    left to the controller. Several nodes exist only in a cluster: a local run of them is
    refused (its torchrun would wait for ever for nodes that never come)."""
    if local and spec.resources.nodes > 1 and "train" in spec.steps:
        raise UserError(f"run {spec.name!r}: resources.nodes {spec.resources.nodes} trains on "
                        "a cluster's nodes (TrainJob or JobSet): submit it with --backend "
                        "kubernetes, or set nodes: 1 to run it here")
    try:
        return place(spec, host_limit_gib=machine_memory_gib() if local else None).plan
    except UnknownProfile:
        if local:
            raise
        return None


def machine_memory_gib() -> float | None:
    """Physical memory of this machine, if the OS says."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None
