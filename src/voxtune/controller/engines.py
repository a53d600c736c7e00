"""Which engine runs a train step, and the pure builders of the multi-node ones.

    voxtune render run.yaml        # nodes: 2, engine: trainjob → a TrainJob; jobset → a JobSet

One node is today's batch/v1 Job (jobs.py). More than one node runs on an engine the platform
team already runs, never a rendezvous scheme of our own:

- `trainjob`: a Kubeflow Trainer TrainJob (trainer.kubeflow.org/v1alpha1) whose runtimeRef is
  the ClusterTrainingRuntime `torch-distributed` (JobSettings.trainjob_runtime); the Trainer
  makes the JobSet, its headless service and the PET_* variables, and restarts per its runtime;
- `jobset`: a JobSet (jobset.x-k8s.io/v1alpha2) of one replicated Job of N indexed pods, its
  headless service for stable host names, the PET_* variables set here, and a failure policy
  that restarts the whole group (a lost or preempted node) up to JobSettings.backoff_limit
  times, and fails it at once for a user's failure (exit code 2 or 74: the child Job's
  podFailurePolicy fails it with reason PodFailurePolicy, which FailJobSet matches).

Both carry the queue label when a Kueue queue is configured and start suspended: Kueue admits
the group as one workload (all or nothing). Every pod runs the same command as the one-node
Job (jobs.step_container_command); torchrun reads node rank and master from PET_*.
`auto` is decided from the groups the API serves (discovery), never assumed: `choose_engine`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import yaml
from kubernetes.client import (
    ApiClient,
    V1EnvVar,
    V1EnvVarSource,
    V1ObjectFieldSelector,
    V1OwnerReference,
)

from voxtune.controller.jobs import (
    QUEUE_LABEL,
    JobSettings,
    build_job,
    container_security,
    environment,
    failure_policy,
    job_name,
    labels,
    node_selector,
    placement_for,
    pod_resources,
    pod_security,
    pod_template,
    step_container_command,
    tolerations,
    volume_mounts,
    volumes,
)
from voxtune.errors import UserError
from voxtune.plan.placement import Placement
from voxtune.run.process import MASTER_PORT, NODE_ENV
from voxtune.spec import RunSpec

NODE = "node"  # the replicated Job (and, in the Trainer's runtime, the container) of the nodes
COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


@dataclass(frozen=True)
class Engine:
    name: str
    group: str
    version: str
    kind: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


TRAINJOB = Engine("trainjob", "trainer.kubeflow.org", "v1alpha1", "TrainJob", "trainjobs")
JOBSET = Engine("jobset", "jobset.x-k8s.io", "v1alpha2", "JobSet", "jobsets")
ENGINES = {engine.name: engine for engine in (TRAINJOB, JOBSET)}  # auto's order of preference


class NoEngine(UserError):
    """A multi-node run that no served engine can run."""


def choose_engine(spec: RunSpec, settings: JobSettings,
                  served: Collection[str] | None) -> Engine | None:
    """The engine of `spec`'s train step: None = the one-node Job. `served` are the
    group/versions the API server lists (None: no cluster to ask, as in `voxtune render`).
    The spec's engine wins over the cluster-wide default (JobSettings.engine)."""
    if spec.resources.nodes == 1:
        return None
    wanted = spec.resources.engine if spec.resources.engine != "auto" else settings.engine
    if wanted != "auto":
        engine = ENGINES[wanted]
        if served is not None and engine.api_version not in served:
            raise NoEngine(f"resources.engine {wanted}: the cluster does not serve "
                           f"{engine.api_version} ({engine.kind}); install it (see "
                           "docs/operations.md), use the other engine, or set nodes: 1")
        return engine
    if served is None:
        raise NoEngine("resources.engine auto is decided by the controller from the APIs "
                       "the cluster serves: name trainjob or jobset to render a multi-node run")
    for engine in ENGINES.values():
        if engine.api_version in served:
            return engine
    raise NoEngine("multi-node needs Kubeflow Trainer or JobSet; install one, or set nodes: 1 "
                   f"(the cluster serves neither {TRAINJOB.api_version} nor "
                   f"{JOBSET.api_version})")


def build_group(engine: Engine, spec: RunSpec, settings: JobSettings, placement: Placement,
                owner: V1OwnerReference | None = None) -> dict[str, Any]:
    """The TrainJob or JobSet of a multi-node train step, named like its Job would be."""
    build = build_trainjob if engine is TRAINJOB else build_jobset
    return build(spec, settings, placement, owner)


def _metadata(spec: RunSpec, settings: JobSettings,
              owner: V1OwnerReference | None) -> dict[str, Any]:
    metadata_labels = labels(spec.name, "train")
    if settings.queue:  # Kueue admits the whole group as one workload
        metadata_labels[QUEUE_LABEL] = settings.queue
    metadata: dict[str, Any] = {"name": job_name(spec.name, "train"), "labels": metadata_labels}
    if owner:
        metadata["ownerReferences"] = [_plain(owner)]
    return metadata


def build_trainjob(spec: RunSpec, settings: JobSettings, placement: Placement,
                   owner: V1OwnerReference | None = None) -> dict[str, Any]:
    """A TrainJob on the torch runtime: our image, command, environment and resources per node;
    the volume, scheduling and service account through podTemplateOverrides of its `node`
    job (the runtime's container is called `node` too). The Trainer injects the PET_*
    variables."""
    step = "train"
    overrides: dict[str, Any] = {
        "serviceAccountName": settings.service_account,
        "nodeSelector": node_selector(step, settings, placement),
        "tolerations": tolerations(step, settings),
        "volumes": volumes(step, settings),
        "containers": [{"name": NODE, "volumeMounts": volume_mounts(step)}],
        "imagePullSecrets": [{"name": secret} for secret in settings.image_pull_secrets] or None,
    }
    trainer = {
        "image": settings.images.train.reference,
        "command": step_container_command(spec, step),
        "env": environment(spec, step, settings),
        "numNodes": spec.resources.nodes,
        "numProcPerNode": spec.resources.gpus,
        "resourcesPerNode": pod_resources(spec, step, settings, placement),
    }
    document = {
        "apiVersion": TRAINJOB.api_version, "kind": TRAINJOB.kind,
        "metadata": _metadata(spec, settings, owner),
        "spec": {
            "runtimeRef": {"name": settings.trainjob_runtime, "apiGroup": TRAINJOB.group,
                           "kind": "ClusterTrainingRuntime"},
            "trainer": trainer,
            # our labels on its pods, so the controller's pod watch sees every node
            "podTemplateOverrides": [{"targetJobs": [{"name": NODE}],
                                      "metadata": {"labels": labels(spec.name, step)},
                                      "spec": overrides}],
            "suspend": True if settings.queue else None,
        },
    }
    return _plain(document)


def build_jobset(spec: RunSpec, settings: JobSettings, placement: Placement,
                 owner: V1OwnerReference | None = None) -> dict[str, Any]:
    """A JobSet of one indexed Job of `nodes` pods, each the one-node train pod plus the PET_*
    variables; pod `<name>-node-0-0` (index 0) is the master, found through the headless
    service the JobSet makes (subdomain = its name)."""
    name, nodes = job_name(spec.name, "train"), spec.resources.nodes
    master = f"{name}-{NODE}-0-0.{name}"
    # what the Trainer would inject, in NODE_ENV's order; the node rank is the pod's index
    rank = V1EnvVarSource(field_ref=V1ObjectFieldSelector(field_path=COMPLETION_INDEX))
    values = (str(nodes), str(spec.resources.gpus), rank, master, str(MASTER_PORT))
    node_env = [V1EnvVar(name=name, value_from=value) if isinstance(value, V1EnvVarSource)
                else V1EnvVar(name=name, value=value)
                for name, value in zip(NODE_ENV, values, strict=True)]
    job_spec = {
        "parallelism": nodes, "completions": nodes, "completionMode": "Indexed",
        # one failed node fails the Job at once: the JobSet restarts every node together
        "backoffLimit": 0,
        "activeDeadlineSeconds": settings.deadlines.train,
        "podFailurePolicy": failure_policy("train"),
        "template": pod_template(spec, "train", settings, placement, node_env),
    }
    document = {
        "apiVersion": JOBSET.api_version, "kind": JOBSET.kind,
        "metadata": _metadata(spec, settings, owner),
        "spec": {
            "network": {"enableDNSHostnames": True, "subdomain": name,
                        "publishNotReadyAddresses": True},
            "replicatedJobs": [{"name": NODE, "replicas": 1, "template": {
                "metadata": {"labels": labels(spec.name, "train")}, "spec": job_spec}}],
            "successPolicy": {"operator": "All", "targetReplicatedJobs": [NODE]},
            "failurePolicy": group_failure_policy(settings),
            "suspend": True if settings.queue else None,
        },
    }
    return _plain(document)


def group_failure_policy(settings: JobSettings) -> dict[str, Any]:
    """Restart every node together (up to backoff_limit times) when one fails; fail at once
    when a node's Job failed by its podFailurePolicy (a user's exit code 2 or 74)."""
    return {"maxRestarts": settings.backoff_limit,
            "rules": [{"name": "UsersFailure", "action": "FailJobSet",
                       "onJobFailureReasons": ["PodFailurePolicy"]}]}


def build_training_runtime(settings: JobSettings) -> dict[str, Any]:
    """The ClusterTrainingRuntime the chart ships with jobs.shipTrainingRuntime: the torch
    runtime's shape (a `node` job whose container the TrainJob fills in) with what voxtune's
    own JobSet has — hardened pods, the gang restart and the user's failure at once — so a
    TrainJob behaves like the JobSet engine."""
    pod = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.max_termination_grace_seconds,
        "securityContext": pod_security(settings),
        "containers": [{"name": NODE, "image": settings.images.train.reference,
                        "securityContext": container_security(),
                        "terminationMessagePolicy": "FallbackToLogsOnError"}],
    }
    job = {"backoffLimit": 0, "podFailurePolicy": failure_policy("train", NODE),
           "template": {"spec": pod}}
    return _plain({
        "apiVersion": TRAINJOB.api_version, "kind": "ClusterTrainingRuntime",
        "metadata": {"name": settings.trainjob_runtime,
                     "labels": {"trainer.kubeflow.org/framework": "torch"}},
        "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {"numProcPerNode": "auto"}},
            "template": {"spec": {
                "replicatedJobs": [{"name": NODE, "replicas": 1, "template": {
                    "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step":
                                            "trainer"}},
                    "spec": job}}],
                "failurePolicy": group_failure_policy(settings),
            }},
        },
    })


def render(spec: RunSpec, settings: JobSettings, step: str | None = None) -> str:
    """Multi-document YAML of every step's object, or of one `step` (what `voxtune render`
    prints; no ownerReferences, so they can be applied without the controller): Jobs, and for
    a multi-node train step the TrainJob or JobSet its resources.engine names. The Jobs carry
    a TTL: the controller adds one only once it has recorded their result, and here there is
    no controller (their logs stay in the run folder on the volume)."""
    placement = placement_for(spec, settings)
    engine = choose_engine(spec, settings, served=None)
    documents = []
    for each in spec.steps:
        if step not in (None, each):
            continue
        if each == "train" and engine is not None:
            documents.append(build_group(engine, spec, settings, placement))
        else:
            job = _plain(build_job(spec, each, settings, placement=placement))
            job["spec"]["ttlSecondsAfterFinished"] = settings.ttl_seconds_after_finished
            documents.append(job)
    return yaml.safe_dump_all(documents, sort_keys=False, allow_unicode=True, width=100)


def _plain(document: Any) -> Any:
    """JSON-ready: client models serialised, None fields dropped (the API's omitempty)."""
    return _without_none(ApiClient().sanitize_for_serialization(document))


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_none(item) for item in value]
    return value
