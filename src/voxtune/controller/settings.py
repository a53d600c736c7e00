"""JobSettings: where and how step Jobs run (images, volume, scheduling, GPU profiles). They
come from the chart's ConfigMap (YAML, `--config`) and VOXTUNE_CONTROLLER_* environment
variables, which win, e.g. VOXTUNE_CONTROLLER_PVC=my-claim or
VOXTUNE_CONTROLLER_IMAGES__TRAIN__TAG=0.2.0. The Job builders (jobs.py) read them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, YamlConfigSettingsSource

from voxtune import __version__
from voxtune.errors import UserError
from voxtune.plan import DEFAULT_PROFILES, DEFAULT_WRITE_MB_PER_S, GpuProfile
from voxtune.plan.placement import DEFAULT_MAX_GRACE_S
from voxtune.publish.hub import SPACE_TOKEN_ENV
from voxtune.run.harness import SPEC_ENV
from voxtune.spec import StrictModel

GPU = "nvidia.com/gpu"
CONFIG_ENV = "VOXTUNE_CONTROLLER_CONFIG"
# What the builder sets itself (JobSettings.env may not change it); the tokens come only from
# Secrets.
RESERVED_ENV = frozenset({"VOXTUNE_HOME", "HF_HOME", "HOME", "PYTHONUNBUFFERED", SPEC_ENV,
                          "HF_TOKEN", SPACE_TOKEN_ENV})


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
    """Per step, and per mode for train (qlora: train_lora's). The train pod's memory comes
    from the resource plan; train_lora/train_full memory is used only for a base model the
    controller cannot plan (its config is not in a shipped preset or in the controller's Hub
    cache). A RunSpec's `resources.cpu/memory` win over train's."""

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
                                              "train, e.g. a node pool label; the GPU product "
                                              "comes from the run's GPU profile.")
    gpu_profiles: list[GpuProfile] = Field(
        default_factory=lambda: list(DEFAULT_PROFILES), min_length=1,
        description="The kinds of GPU node the cluster has: a run is planned against the one "
        "its resources.gpu_profile names, else the smallest that fits, and its train pod "
        "selects that profile's nvidia.com/gpu.product.")
    checkpoint_write_mb_per_s: float = Field(
        DEFAULT_WRITE_MB_PER_S, gt=0, description="Sustained write speed of the shared volume; "
        "sizes the train pod's terminationGracePeriodSeconds (a checkpoint is written on "
        "SIGTERM). Measure yours (e.g. dd of a few GB onto the volume).")
    max_termination_grace_seconds: int = Field(
        DEFAULT_MAX_GRACE_S, ge=30, description="The most grace a train pod gets: how long a "
        "node drain or preemption may wait for it. A checkpoint that takes longer to write is "
        "not awaited; training resumes from the last periodic one (training.save_steps).")
    gpu_tolerations: list[Toleration] = Field(
        default_factory=lambda: [Toleration(key=GPU, effect="NoSchedule")],
        description="Added for train; the default tolerates the usual GPU-node taint.")
    priority_class: str | None = Field(None, description="PriorityClass of the step pods.")
    queue: str | None = Field(None, description="Kueue LocalQueue: Jobs get the queue label "
                              "and start suspended until Kueue admits them.")
    backoff_limit: int = Field(2, ge=0, le=10, description="Retries of a failed pod "
                               "(disruptions and exit code 2 are not counted/retried); for a "
                               "multi-node JobSet, restarts of the whole group.")
    engine: Literal["auto", "jobset", "trainjob"] = Field(
        "auto", description="What runs a multi-node train step whose spec says engine: auto; "
        "auto = a TrainJob if the cluster serves trainer.kubeflow.org, else a JobSet if it "
        "serves jobset.x-k8s.io (asked through the API's discovery).")
    trainjob_runtime: str = Field("torch-distributed", min_length=1, description="The "
                                  "ClusterTrainingRuntime a TrainJob refers to (Kubeflow "
                                  "Trainer installs torch-distributed).")
    volume_access_modes: list[str] = Field(
        default_factory=lambda: ["ReadWriteMany"], description="Access modes of the pvc (the "
        "chart's persistence.accessModes): a multi-node run needs ReadWriteMany, so every "
        "node mounts the run folder, and is refused otherwise.")
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

    @field_validator("gpu_profiles")
    @classmethod
    def _unique_profiles(cls, profiles: list[GpuProfile]) -> list[GpuProfile]:
        names = [profile.name for profile in profiles]
        if len(set(names)) != len(names):
            raise ValueError(f"GPU profile names must be unique: {names}")
        return profiles

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
