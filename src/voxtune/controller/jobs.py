"""Pure builders: RunSpec + JobSettings → one batch/v1 Job per step. No I/O, no cluster.

    voxtune render jobs/finetunerun.yaml                  # the Jobs of every step, as YAML
    voxtune render jobs/finetunerun.yaml --config jobs-config.yaml

Every Job (`<run>-<step>`) runs `python -m voxtune.run.harness … -- <the step command>` in
the step's image with the shared volume at /data (VOXTUNE_HOME), so the run folder is
/data/runs/<run>. Failure handling is the Job controller's: a pod disrupted by preemption or
eviction (condition DisruptionTarget) is replaced without counting against backoffLimit, exit
codes 2 (bad input/config) and 74 (the shared volume is full) fail the Job at once — retrying
cannot help until someone acts — and anything else is retried up to backoffLimit.
ttlSecondsAfterFinished is not set here: the controller adds it once it has recorded the step's
result in the run's status (the log is already in the run folder).

JobSettings say *where/how* (images, volume, scheduling); they come from the chart's ConfigMap
(YAML, `--config`) and VOXTUNE_CONTROLLER_* environment variables, which win, e.g.
VOXTUNE_CONTROLLER_PVC=my-claim or VOXTUNE_CONTROLLER_IMAGES__TRAIN__TAG=0.2.0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from kubernetes.client import (
    ApiClient,
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
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, YamlConfigSettingsSource

from voxtune import __version__
from voxtune.controller.crd import API_VERSION, KIND, RUN_LABEL, STEP_LABEL
from voxtune.errors import ExitCode, UserError
from voxtune.publish.hub import SPACE_TOKEN_ENV
from voxtune.run.harness import SPEC_ENV
from voxtune.run.process import step_command
from voxtune.spec import RunSpec, StrictModel

DATA_MOUNT = "/data"  # the volume contract of every image: VOXTUNE_HOME and HF_HOME live here
MANAGED_BY = "voxtune-controller"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GPU = "nvidia.com/gpu"
CONFIG_ENV = "VOXTUNE_CONTROLLER_CONFIG"
# What the builder sets itself (JobSettings.env may not change it); the tokens come only from
# Secrets.
RESERVED_ENV = frozenset({"VOXTUNE_HOME", "HF_HOME", "HOME", "PYTHONUNBUFFERED", SPEC_ENV,
                          "HF_TOKEN", SPACE_TOKEN_ENV})
# Exit codes that fail the Job at once: retrying cannot help until someone acts.
FAIL_AT_ONCE = (ExitCode.USER_ERROR, ExitCode.NO_SPACE)


class Image(StrictModel):
    registry: str = Field("", description="Registry host the images were pushed to (a mirror "
                          "in air-gapped clusters); empty: the names `make images` builds.")
    repository: str = Field(description="Repository within the registry.")
    tag: str = Field(__version__, description="Tag; ignored when digest is set.")
    digest: str | None = Field(None, description="sha256:… to pin the exact image.")

    @property
    def reference(self) -> str:
        where = f"{self.registry}/{self.repository}" if self.registry else self.repository
        return f"{where}@{self.digest}" if self.digest else f"{where}:{self.tag}"


class Images(StrictModel):
    prepare: Image = Image(repository="voxtune/prepare")
    train: Image = Image(repository="voxtune/train")
    publish: Image = Image(repository="voxtune/publish")


class Resources(StrictModel):
    cpu: str | None = Field(None, description="CPU request (no CPU limit: idle cores are free).")
    memory: str | None = Field(None, description="Memory request and limit.")


class ResourceDefaults(StrictModel):
    """Per step, and per mode for train; a RunSpec's `resources.cpu/memory` override train's."""

    prepare: Resources = Resources(cpu="2", memory="8Gi")
    train_lora: Resources = Resources(cpu="8", memory="48Gi")
    train_full: Resources = Resources(cpu="16", memory="160Gi")
    publish: Resources = Resources(cpu="1", memory="8Gi")


class Deadlines(StrictModel):
    """activeDeadlineSeconds per step: a stuck step fails instead of holding a GPU forever."""

    prepare: int = Field(6 * 3600, ge=60)
    train: int = Field(72 * 3600, ge=60)
    publish: int = Field(2 * 3600, ge=60)


class Toleration(StrictModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class JobSettings(BaseSettings):
    """Where and how step Jobs run. Defaults < `--config` YAML < VOXTUNE_CONTROLLER_* env."""

    model_config = SettingsConfigDict(env_prefix="VOXTUNE_CONTROLLER_", env_nested_delimiter="__",
                                      extra="forbid", frozen=True)

    images: Images = Field(default_factory=Images, description="Image of each step.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[str] = Field(default_factory=list, description="Secrets for "
                                          "private registries.")
    pvc: str = Field("voxtune-data", description="PersistentVolumeClaim mounted at /data in "
                     "every step (ReadWriteMany when steps may run on different nodes at once).")
    service_account: str | None = Field(None, description="ServiceAccount of the step pods; "
                                        "its token is never mounted.")
    hf_token_secret: str | None = Field(None, description="Secret with the Hugging Face token "
                                        "(HF_TOKEN in every step); needed for private data, "
                                        "gated models and publishing.")
    hf_token_key: str = Field("token", description="Key of the token in that Secret.")
    hf_space_token_secret: str | None = Field(None, description="Secret with a read-only token "
                                              "that the publish step gives a private model's "
                                              "demo Space (HF_SPACE_TOKEN); default: "
                                              "hf_token_secret.")
    hf_space_token_key: str = Field("space-token", description="Key of that token; optional: "
                                    "without it a demo Space gets no token (publish."
                                    "space_token says which token a Space gets).")
    resources: ResourceDefaults = Field(default_factory=ResourceDefaults)
    node_selector: dict[str, str] = Field(default_factory=dict, description="Every step.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Every step.")
    gpu_node_selector: dict[str, str] = Field(default_factory=dict, description="Added for "
                                              "train, e.g. a GPU product label.")
    gpu_tolerations: list[Toleration] = Field(
        default_factory=lambda: [Toleration(key=GPU, effect="NoSchedule")],
        description="Added for train; the default tolerates the usual GPU-node taint.")
    priority_class: str | None = Field(None, description="PriorityClass of the step pods.")
    queue: str | None = Field(None, description="Kueue LocalQueue: Jobs get the queue label "
                              "and start suspended until Kueue admits them.")
    backoff_limit: int = Field(2, ge=0, le=10, description="Retries of a failed pod "
                               "(disruptions and exit code 2 are not counted/retried).")
    deadlines: Deadlines = Field(default_factory=Deadlines)
    ttl_seconds_after_finished: int = Field(3 * 86400, ge=0, description="How long finished "
                                            "Jobs (and their pod logs) stay after the "
                                            "controller recorded their result.")
    shm_size: str = Field("16Gi", description="/dev/shm of the train pod (NCCL, dataloaders).")
    user_id: int = Field(10001, ge=1, description="Numeric non-root user of the images.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment of every "
                                "step, e.g. HF_HUB_OFFLINE: '1' in an air-gapped cluster (models "
                                "and datasets then come from the cache on the volume).")

    @field_validator("env")
    @classmethod
    def _no_reserved_env(cls, env: dict[str, str]) -> dict[str, str]:
        taken = sorted(set(env) & RESERVED_ENV)
        if taken:
            raise ValueError(f"{', '.join(taken)} cannot be set here (the tokens: see "
                             "hf_token_secret and hf_space_token_secret)")
        return env

    @model_validator(mode="before")
    @classmethod
    def _keep_defaults_of_partial_sections(cls, data: Any) -> Any:
        """`resources: {train_lora: {memory: 64Gi}}` changes that one value, not the section."""
        if isinstance(data, dict):
            for name in ("images", "resources", "deadlines"):
                if isinstance(data.get(name), dict):
                    default = cls.model_fields[name].default_factory().model_dump()
                    data = {**data, name: _merged(default, data[name])}
        return data

    @classmethod
    def load(cls, config: Path | str | None = None) -> JobSettings:
        """Settings from the chart's ConfigMap file (`config`, else $VOXTUNE_CONTROLLER_CONFIG)
        under the VOXTUNE_CONTROLLER_* environment."""
        path = config or os.environ.get(CONFIG_ENV)
        if not path:
            return cls()
        if not Path(path).is_file():
            raise UserError(f"{path}: no such controller config file")

        class _FromFile(cls):  # type: ignore[valid-type, misc]
            @classmethod
            def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                           dotenv_settings, file_secret_settings):
                return (init_settings, env_settings,
                        YamlConfigSettingsSource(settings_cls, yaml_file=path))

        try:
            return cls.model_validate(_FromFile().model_dump())
        except ValidationError as error:
            problems = "\n".join(f"  {'.'.join(map(str, problem['loc']))}: {problem['msg']}"
                                 for problem in error.errors())
            raise UserError(f"{path}: invalid controller settings\n{problems}") from None


def _merged(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    return {**base, **{key: _merged(base[key], value) if isinstance(value, dict)
                       and isinstance(base.get(key), dict) else value
                       for key, value in change.items()}}


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


def build_job(spec: RunSpec, step: str, settings: JobSettings,
              owner: V1OwnerReference | None = None) -> V1Job:
    """The Job of one step. `owner` (the FineTuneRun) is omitted for standalone rendering."""
    spec = cluster_spec(spec)
    name, folder = job_name(spec.name, step), run_dir(spec.name)
    command = ["python", "-m", "voxtune.run.harness", "--run-dir", folder, "--step", step,
               "--", *step_command(spec, step, Path(folder), python="python")]
    metadata_labels = labels(spec.name, step)
    if settings.queue:
        metadata_labels[QUEUE_LABEL] = settings.queue
    train = step == "train"
    container = V1Container(
        name=step,
        image=getattr(settings.images, step).reference,
        image_pull_policy=settings.image_pull_policy,
        command=command,
        env=_environment(spec, step, settings),
        resources=_resources(spec, step, settings),
        volume_mounts=[V1VolumeMount(name="data", mount_path=DATA_MOUNT),
                       V1VolumeMount(name="tmp", mount_path="/tmp"),
                       *([V1VolumeMount(name="dshm", mount_path="/dev/shm")] if train else [])],
        security_context=V1SecurityContext(
            allow_privilege_escalation=False, read_only_root_filesystem=True,
            run_as_non_root=True, capabilities=V1Capabilities(drop=["ALL"])),
        termination_message_policy="FallbackToLogsOnError",
    )
    volumes = [
        V1Volume(name="data", persistent_volume_claim=V1PersistentVolumeClaimVolumeSource(
            claim_name=settings.pvc)),
        V1Volume(name="tmp", empty_dir=V1EmptyDirVolumeSource()),
    ]
    if train:
        volumes.append(V1Volume(name="dshm", empty_dir=V1EmptyDirVolumeSource(
            medium="Memory", size_limit=settings.shm_size)))
    pod = V1PodSpec(
        restart_policy="Never",
        containers=[container],
        volumes=volumes,
        service_account_name=settings.service_account,
        automount_service_account_token=False,
        enable_service_links=False,
        image_pull_secrets=[V1LocalObjectReference(name=secret)
                            for secret in settings.image_pull_secrets] or None,
        node_selector={**settings.node_selector,
                       **(settings.gpu_node_selector if train else {})} or None,
        tolerations=[V1Toleration(**toleration.model_dump(exclude_none=True)) for toleration in
                     [*settings.tolerations, *(settings.gpu_tolerations if train else [])]]
        or None,
        priority_class_name=settings.priority_class,
        security_context=V1PodSecurityContext(
            run_as_non_root=True, run_as_user=settings.user_id, run_as_group=settings.user_id,
            fs_group=settings.user_id, fs_group_change_policy="OnRootMismatch",
            seccomp_profile=V1SeccompProfile(type="RuntimeDefault")),
    )
    return V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=V1ObjectMeta(name=name, labels=metadata_labels,
                              owner_references=[owner] if owner else None),
        spec=V1JobSpec(
            backoff_limit=settings.backoff_limit,
            active_deadline_seconds=getattr(settings.deadlines, step),
            pod_failure_policy=_failure_policy(step),
            pod_replacement_policy="Failed",  # never two train pods on one checkpoint folder
            suspend=True if settings.queue else None,  # Kueue unsuspends on admission
            template=V1PodTemplateSpec(metadata=V1ObjectMeta(labels=labels(spec.name, step)),
                                       spec=pod),
        ),
    )


def build_jobs(spec: RunSpec, settings: JobSettings,
               owner: V1OwnerReference | None = None) -> list[V1Job]:
    return [build_job(spec, step, settings, owner) for step in spec.steps]


def render(spec: RunSpec, settings: JobSettings, step: str | None = None) -> str:
    """Multi-document YAML of every step's Job, or of one `step` (what `voxtune render` prints;
    no ownerReferences, so the Jobs can be applied without the controller)."""
    documents = [ApiClient().sanitize_for_serialization(build_job(spec, each, settings))
                 for each in spec.steps if step in (None, each)]
    return yaml.safe_dump_all(documents, sort_keys=False, allow_unicode=True, width=100)


def _failure_policy(step: str) -> V1PodFailurePolicy:
    disrupted = V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget", status="True")
    hopeless = V1PodFailurePolicyOnExitCodesRequirement(
        container_name=step, operator="In", values=[int(code) for code in FAIL_AT_ONCE])
    return V1PodFailurePolicy(rules=[
        V1PodFailurePolicyRule(action="Ignore", on_pod_conditions=[disrupted]),
        V1PodFailurePolicyRule(action="FailJob", on_exit_codes=hopeless),
    ])


def _environment(spec: RunSpec, step: str, settings: JobSettings) -> list[V1EnvVar]:
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


def _resources(spec: RunSpec, step: str, settings: JobSettings) -> V1ResourceRequirements:
    if step == "train":
        defaults: Resources = getattr(settings.resources, f"train_{spec.mode}")
        cpu = spec.resources.cpu or defaults.cpu
        memory = spec.resources.memory or defaults.memory
        gpus = spec.resources.gpus
    else:
        chosen: Resources = getattr(settings.resources, step)
        cpu, memory, gpus = chosen.cpu, chosen.memory, 0
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    limits = {k: v for k, v in (("memory", memory), (GPU, str(gpus) if gpus else None)) if v}
    return V1ResourceRequirements(requests=requests or None, limits=limits or None)
