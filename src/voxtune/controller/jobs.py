"""Pure builders: RunSpec + JobSettings → one batch/v1 Job per step. No I/O, no cluster.

    voxtune render jobs/finetunerun.yaml                  # the Jobs of every step, as YAML
    voxtune render jobs/finetunerun.yaml --config jobs-config.yaml

Every Job (`<run>-<step>`) runs `python -m voxtune.run.harness … -- <the step command>` in
the step's image with the shared volume at /data (VOXTUNE_HOME), so the run folder is
/data/runs/<run>. Failure handling is the Job controller's: a pod disrupted by preemption or
eviction (condition DisruptionTarget) is replaced without counting against backoffLimit, exit
codes 2 (bad input/config) and 74 (the shared volume is full) fail the Job at once — retrying
cannot help until someone acts — and anything else is retried up to backoffLimit.
ttlSecondsAfterFinished is not set on the controller's Jobs: the controller adds it once it has
recorded the step's result in the run's status (the log is already in the run folder). `render`
(the plain Jobs of `make jobs`, which no controller will ever expire) sets it at once.

What a pod gets comes from the resource plan (voxtune.plan.placement.place, against the GPU
profiles of JobSettings): the train pod's memory (scaled with its GPUs), the chosen profile's
`nvidia.com/gpu.product`, terminationGracePeriodSeconds that covers writing a checkpoint on
SIGTERM, scratch disk, and the publish pod's memory when it merges. A run that cannot fit is
refused (DoesNotFit) before any Job exists. JobSettings (settings.py) say where and how.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes.client import (
    V1Capabilities,
    V1Container,
    V1EmptyDirVolumeSource,
    V1EnvVar,
    V1EnvVarSource,
    V1Job,
    V1JobSpec,
    V1LocalObjectReference,
    V1ObjectMeta,
    V1OwnerReference,
    V1PersistentVolumeClaimVolumeSource,
    V1PodFailurePolicy,
    V1PodFailurePolicyOnExitCodesRequirement,
    V1PodFailurePolicyOnPodConditionsPattern,
    V1PodFailurePolicyRule,
    V1PodSecurityContext,
    V1PodSpec,
    V1PodTemplateSpec,
    V1ResourceRequirements,
    V1SeccompProfile,
    V1SecretKeySelector,
    V1SecurityContext,
    V1Toleration,
    V1Volume,
    V1VolumeMount,
)

from voxtune.controller.crd import API_VERSION, KIND, RUN_LABEL, STEP_LABEL
from voxtune.controller.settings import GPU, JobSettings, Resources
from voxtune.errors import ExitCode
from voxtune.plan import memory_gib
from voxtune.plan.placement import Placement, place
from voxtune.publish.hub import SPACE_TOKEN_ENV
from voxtune.run.harness import SPEC_ENV
from voxtune.run.process import step_command
from voxtune.spec import RunSpec

DATA_MOUNT = "/data"  # the volume contract of every image: VOXTUNE_HOME and HF_HOME live here
MANAGED_BY = "voxtune-controller"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GPU_PRODUCT = "nvidia.com/gpu.product"  # set by GPU feature discovery on every GPU node
# Exit codes that fail the Job at once: retrying cannot help until someone acts.
FAIL_AT_ONCE = (ExitCode.USER_ERROR, ExitCode.NO_SPACE)


# --- builders ---------------------------------------------------------------------------------


def job_name(run: str, step: str) -> str:
    return f"{run}-{step}"


def run_dir(run: str) -> str:
    return f"{DATA_MOUNT}/runs/{run}"


def cluster_spec(spec: RunSpec) -> RunSpec:
    """Relative source paths in a cluster run are on the shared volume."""
    return spec.with_absolute_paths(Path(DATA_MOUNT))


def labels(run: str, step: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "voxtune", "app.kubernetes.io/instance": run,
            "app.kubernetes.io/component": step, "app.kubernetes.io/part-of": "voxtune",
            "app.kubernetes.io/managed-by": MANAGED_BY, RUN_LABEL: run, STEP_LABEL: step}


def owner_reference(run: dict[str, Any]) -> V1OwnerReference:
    """Deleting the FineTuneRun deletes its Jobs (and their pods) through the garbage collector."""
    return V1OwnerReference(api_version=API_VERSION, kind=KIND, name=run["metadata"]["name"],
                            uid=run["metadata"]["uid"], controller=True,
                            block_owner_deletion=True)


def placement_for(spec: RunSpec, settings: JobSettings) -> Placement:
    """Where the run goes and what its pods get, against this cluster's GPU profiles;
    DoesNotFit (a UserError) when its train step cannot fit any."""
    return place(spec, tuple(settings.gpu_profiles), settings.checkpoint_write_mb_per_s,
                 settings.max_termination_grace_seconds,
                 volume_access_modes=tuple(settings.volume_access_modes))


def build_job(spec: RunSpec, step: str, settings: JobSettings,
              owner: V1OwnerReference | None = None,
              placement: Placement | None = None) -> V1Job:
    """The Job of one step. `owner` (the FineTuneRun) is omitted for standalone rendering;
    `placement` is `placement_for(spec, settings)` when the caller has it already."""
    placement = placement or placement_for(spec, settings)
    metadata_labels = labels(spec.name, step)
    if settings.queue:
        metadata_labels[QUEUE_LABEL] = settings.queue
    return V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=V1ObjectMeta(name=job_name(spec.name, step), labels=metadata_labels,
                              owner_references=[owner] if owner else None),
        spec=V1JobSpec(
            backoff_limit=settings.backoff_limit,
            active_deadline_seconds=getattr(settings.deadlines, step),
            pod_failure_policy=failure_policy(step),
            pod_replacement_policy="Failed",  # never two train pods on one checkpoint folder
            suspend=True if settings.queue else None,  # Kueue unsuspends on admission
            template=pod_template(spec, step, settings, placement),
        ),
    )


def step_container_command(spec: RunSpec, step: str) -> list[str]:
    """What a step's container runs: the harness around the step's command (every engine's
    pods run the same one)."""
    spec = cluster_spec(spec)
    folder = run_dir(spec.name)
    return ["python", "-m", "voxtune.run.harness", "--run-dir", folder, "--step", step,
            "--", *step_command(spec, step, Path(folder), python="python")]


def pod_template(spec: RunSpec, step: str, settings: JobSettings, placement: Placement,
                 extra_env: list[V1EnvVar] | None = None) -> V1PodTemplateSpec:
    """The pod of one step (of one node, for a multi-node train step); `extra_env` is what
    an engine adds (the PET_* variables of a JobSet)."""
    train = step == "train"
    container = V1Container(
        name=step,
        image=getattr(settings.images, step).reference,
        image_pull_policy=settings.image_pull_policy,
        command=step_container_command(spec, step),
        env=[*environment(cluster_spec(spec), step, settings), *(extra_env or [])],
        resources=pod_resources(spec, step, settings, placement),
        volume_mounts=volume_mounts(step),
        security_context=container_security(),
        termination_message_policy="FallbackToLogsOnError",
    )
    pod = V1PodSpec(
        restart_policy="Never",
        containers=[container],
        volumes=volumes(step, settings),
        service_account_name=settings.service_account,
        automount_service_account_token=False,
        enable_service_links=False,
        image_pull_secrets=[V1LocalObjectReference(name=secret)
                            for secret in settings.image_pull_secrets] or None,
        node_selector=node_selector(step, settings, placement),
        tolerations=tolerations(step, settings),
        priority_class_name=settings.priority_class,
        termination_grace_period_seconds=placement.termination_grace_s if train else None,
        security_context=pod_security(settings),
    )
    return V1PodTemplateSpec(metadata=V1ObjectMeta(labels=labels(spec.name, step)), spec=pod)


def container_security() -> V1SecurityContext:
    return V1SecurityContext(allow_privilege_escalation=False, read_only_root_filesystem=True,
                             run_as_non_root=True, capabilities=V1Capabilities(drop=["ALL"]))


def pod_security(settings: JobSettings) -> V1PodSecurityContext:
    return V1PodSecurityContext(
        run_as_non_root=True, run_as_user=settings.user_id, run_as_group=settings.user_id,
        fs_group=settings.user_id, fs_group_change_policy="OnRootMismatch",
        seccomp_profile=V1SeccompProfile(type="RuntimeDefault"))


def volume_mounts(step: str) -> list[V1VolumeMount]:
    return [V1VolumeMount(name="data", mount_path=DATA_MOUNT),
            V1VolumeMount(name="tmp", mount_path="/tmp"),
            *([V1VolumeMount(name="dshm", mount_path="/dev/shm")] if step == "train" else [])]


def volumes(step: str, settings: JobSettings) -> list[V1Volume]:
    found = [
        V1Volume(name="data", persistent_volume_claim=V1PersistentVolumeClaimVolumeSource(
            claim_name=settings.pvc)),
        V1Volume(name="tmp", empty_dir=V1EmptyDirVolumeSource()),
    ]
    if step == "train":
        found.append(V1Volume(name="dshm", empty_dir=V1EmptyDirVolumeSource(
            medium="Memory", size_limit=settings.shm_size)))
    return found


def node_selector(step: str, settings: JobSettings,
                  placement: Placement) -> dict[str, str] | None:
    train = _gpu_node_selector(settings, placement) if step == "train" else {}
    return {**settings.node_selector, **train} or None


def tolerations(step: str, settings: JobSettings) -> list[V1Toleration] | None:
    return [V1Toleration(**toleration.model_dump(exclude_none=True)) for toleration in
            [*settings.tolerations, *(settings.gpu_tolerations if step == "train" else [])]] \
        or None


def build_jobs(spec: RunSpec, settings: JobSettings,
               owner: V1OwnerReference | None = None) -> list[V1Job]:
    placement = placement_for(spec, settings)
    return [build_job(spec, step, settings, owner, placement) for step in spec.steps]


def failure_policy(step: str, container: str | None = None) -> V1PodFailurePolicy:
    """DisruptionTarget is ignored (the pod is replaced), exit codes 2 and 74 of the step's
    container (`container`, when not named after the step) fail the Job at once."""
    disrupted = V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")
    hopeless = V1PodFailurePolicyOnExitCodesRequirement(
        container_name=container or step, operator="In",
        values=[int(code) for code in FAIL_AT_ONCE])
    return V1PodFailurePolicy(rules=[
        V1PodFailurePolicyRule(action="Ignore", on_pod_conditions=[disrupted]),
        V1PodFailurePolicyRule(action="FailJob", on_exit_codes=hopeless),
    ])


def environment(spec: RunSpec, step: str, settings: JobSettings) -> list[V1EnvVar]:
    values = {
        "VOXTUNE_HOME": DATA_MOUNT,
        "HF_HOME": f"{DATA_MOUNT}/hf-cache",
        "HOME": "/tmp",  # the root filesystem is read-only
        "PYTHONUNBUFFERED": "1",
        SPEC_ENV: spec.model_dump_json(),
    }
    env = [V1EnvVar(name=name, value=value) for name, value in {**values, **settings.env}.items()]
    if settings.hf_token_secret:  # only ever by reference: never in args or plain values
        env.append(_from_secret("HF_TOKEN", settings.hf_token_secret, settings.hf_token_key))
    space_secret = settings.hf_space_token_secret or settings.hf_token_secret
    if step == "publish" and space_secret:  # optional: no key = the Space gets no token
        env.append(_from_secret(SPACE_TOKEN_ENV, space_secret, settings.hf_space_token_key,
                                optional=True))
    return env


def _from_secret(name: str, secret: str, key: str, optional: bool | None = None) -> V1EnvVar:
    return V1EnvVar(name=name, value_from=V1EnvVarSource(secret_key_ref=V1SecretKeySelector(
        name=secret, key=key, optional=optional)))


def _gpu_node_selector(settings: JobSettings, placement: Placement) -> dict[str, str]:
    """The cluster's GPU node labels, and the product of the profile the run was planned on
    (it wins: the plan's verdict holds only on that GPU)."""
    product = {GPU_PRODUCT: placement.gpu_product} if placement.gpu_product else {}
    return {**settings.gpu_node_selector, **product}


def pod_resources(spec: RunSpec, step: str, settings: JobSettings,
               placement: Placement) -> V1ResourceRequirements:
    """CPU and memory requests (memory is also the limit: a pod over it is OOM-killed, never
    slowed down), the GPUs, and the /tmp scratch disk."""
    if step == "train":
        defaults: Resources = settings.resources.train_full if spec.mode == "full" \
            else settings.resources.train_lora
        cpu = spec.resources.cpu or defaults.cpu
        planned = placement.train_memory_gib
        memory = f"{planned}Gi" if planned else defaults.memory
        gpus = spec.resources.gpus
    else:
        chosen: Resources = getattr(settings.resources, step)
        cpu, memory, gpus = chosen.cpu, chosen.memory, 0
        merge = placement.publish_memory_gib if step == "publish" else None
        if merge and (memory is None or memory_gib(memory) < merge):
            memory = f"{merge}Gi"
    scratch = f"{placement.scratch_gib[step]}Gi"
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory),
                                  ("ephemeral-storage", scratch)) if v}
    limits = {k: v for k, v in (("memory", memory), (GPU, str(gpus) if gpus else None)) if v}
    return V1ResourceRequirements(requests=requests, limits=limits or None)
