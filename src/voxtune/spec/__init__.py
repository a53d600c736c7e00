"""RunSpec: the one description of a run, and Settings: where this process keeps things.

A RunSpec says *what* to do. The UI form, the CLI flags, a `FineTuneRun`'s `spec` and every
step's input are the same model. Settings say *where/how* on this machine (VOXTUNE_HOME, workers).

Two ways to read a spec, and only these two:

- `load_user_spec`: user input, where a run is created (`voxtune run/submit/render/spec`, a step
  command with `--spec` or none, `voxtune.Client`). Precedence (lowest first):
      field defaults < spec file (YAML) < VOXTUNE_SPEC__* environment < command-line flags
  e.g. `VOXTUNE_SPEC__TRAINING__MAX_STEPS=5` overrides `training.max_steps` from the file.
  Relative paths are resolved here, once (against the file's folder).
- `read_resolved_spec`: a spec a run already recorded (RUN/spec.yaml, final/spec.yaml, a
  published model's): no layering, so what a step runs is exactly what the run recorded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from voxtune.errors import UserError
from voxtune.run.steps import STEPS, Step
from voxtune.spec.sources import (  # noqa: F401 - the spec's interface, defined beside it
    FolderSource,
    GranarySource,
    HubSource,
    JsonlSource,
    PreparedSource,
    RecordingsSource,
    Source,
    StrictModel,
    parse_source,
)

DEFAULT_BASE_MODEL = "mistralai/Voxtral-Mini-3B-2507"
# Job names are `<run>-<step>` and must stay a DNS-1123 label (63) with room for pod suffixes.
RUN_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
LANGUAGE_CODE = r"^[a-z]{2}$"
Mode = Literal["lora", "qlora", "full"]
# Peak learning rate when the spec gives none. LoRA and QLoRA adapters start at zero and only a
# few million weights move, so they need large steps; full fine-tuning moves every pretrained
# weight (4-24 B), where 1e-4 wipes out what the model knew within a few hundred steps.
LEARNING_RATES: dict[str, float] = {"lora": 1e-4, "qlora": 1e-4, "full": 1e-5}
# Gradient checkpointing when the spec says nothing: the modes that exist to save memory get it
# (full FT's activations at batch 2 are ~10 GiB on Mini); LoRA runs faster without.
CHECKPOINTING: dict[str, bool] = {"lora": False, "qlora": True, "full": True}
Language = Annotated[
    str | None,
    Field(
        pattern=LANGUAGE_CODE,
        description="ISO-639-1 code such as 'en' or 'sv'; null lets Voxtral detect the language.",
    ),
]


# --- sections ---------------------------------------------------------------------------------


class DataSpec(StrictModel):
    sources: list[Source] = Field(default_factory=list, description="Where the speech comes from.")
    eval_fraction: float = Field(0.1, gt=0, le=0.5, description="Share of clips held out for "
                                 "WER/CER; raise it for very small sets so eval is meaningful.")
    min_duration: float = Field(0.3, ge=0, description="Seconds; shorter clips are rejected.")
    max_duration: float = Field(30.0, gt=0, le=30.0, description="Seconds; Voxtral encodes 30-s "
                                "chunks and splitting needs alignments, so longer is rejected.")
    silence_dbfs: float = Field(-60.0, le=0, description="Clips whose peak is below this level "
                                "are rejected as silence.")
    max_chars_per_second: float = Field(
        30.0, gt=0, description="Transcripts longer than this many characters per second of "
        "audio (plus a few characters of slack for very short clips) cannot be what was said "
        "and are rejected; fast speech is ~20. Raise it only for unusual scripts.")
    max_transcript_tokens: int = Field(
        512, ge=1, le=8192, description="Transcripts longer than this many tokens are rejected "
        "when training tokenises them (a 30-s clip holds far fewer); bounds memory per step.")
    max_clipped_fraction: float | None = Field(
        None, ge=0, le=1, description="Reject clips whose share of full-scale samples exceeds "
        "this; default: keep clipped audio but count and list it as a warning.")


class LoraSpec(StrictModel):
    rank: int = Field(8, ge=1, le=512, description="Adapter rank; raise for more capacity.")
    alpha: int = Field(32, ge=1, description="Scaling numerator (alpha/rank).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Adapter dropout; try 0.05 on tiny sets.")
    mlp: bool = Field(False, description="Also adapt the language model's MLP projections.")
    projector: bool = Field(False, description="Also train the audio→text projector fully.")


class TrainingSpec(StrictModel):
    epochs: float = Field(3.0, gt=0, description="Passes over the train split (unless max_steps).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    learning_rate: float | None = Field(
        None, gt=0, lt=1, description="Peak learning rate; default by mode: 1e-4 for lora and "
        "qlora, 1e-5 for full (filled in when the run is created).")
    batch_size: int = Field(2, ge=1, le=256, description="Clips per device per micro-batch.")
    grad_accum: int = Field(4, ge=1, le=1024, description="Micro-batches per optimizer step.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps spent warming up.")
    save_steps: int = Field(50, ge=1, description="Checkpoint every N optimizer steps.")
    keep_checkpoints: int = Field(2, ge=1, description="Rolling checkpoints kept on disk.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto = bf16 on GPUs that support it and on CPUs with native bf16 "
        "instructions (AVX512-BF16 or AMX), fp16 on older GPUs, fp32 on other CPUs; the train "
        "log says which ran.")
    gradient_checkpointing: bool | None = Field(
        None, description="Trade compute for memory; default: on for full and qlora, off for "
        "lora (filled in when the run is created).")
    optimizer: Literal["auto", "adamw_torch", "adamw_8bit", "paged_adamw_8bit"] = Field(
        "auto", description="auto = adamw_8bit (bitsandbytes) for full fine-tuning on GPUs, "
        "adamw_torch otherwise; the one that ran is recorded in metrics.json.")
    group_by_length: bool = Field(True, description="Batch clips of similar length (less "
                                  "padding). Turn off to draw batches at random when training "
                                  "from scratch (the demo): length-sorted batches kept a random "
                                  "model guessing for 1,400+ steps.")
    freeze_audio_encoder: bool = Field(True, description="Keep the audio encoder frozen in full "
                                       "fine-tuning; needed to fit 80 GB GPUs.")
    freeze_embeddings: bool = Field(False, description="Also keep the token embeddings and the "
                                    "output head frozen in full fine-tuning (Mini: 0.8 B fewer "
                                    "trainable parameters, their gradients and optimizer "
                                    "states).")
    lora: LoraSpec = Field(default_factory=LoraSpec)
    seed: int = Field(42, description="Seed for initialisation, shuffling and dropout.")


def _general_source(value: Any) -> Any:
    """`eval.general` as a plain Hub id or folder (`org/name?split=test`), like data.sources."""
    if isinstance(value, str):
        return parse_source(value if value.startswith("hub:") else f"hub:{value}")
    return value


class EvalSpec(StrictModel):
    normalizer: Literal["whisper", "simple", "none"] = Field(
        "whisper", description="How references and transcripts are normalised before WER/CER: "
        "whisper = Whisper's English normaliser for English clips and its basic one otherwise "
        "(what the Open ASR Leaderboard and model cards use; keep it to compare numbers); "
        "simple = lowercase and punctuation removed; none = as written.")
    max_new_tokens: int | None = Field(
        None, ge=1, le=4096, description="Generation limit per clip, replacing the default "
        "rule: 15 tokens per second of audio, never fewer than the longest eval reference. "
        "Set it only to bound the time a babbling model takes; evaluation, voxtune serve and "
        "the Space all use the same limit.")
    batch_size: int = Field(8, ge=1, le=256, description="Clips transcribed at once; lower "
                            "it if evaluation runs out of GPU memory.")
    general: Annotated[HubSource | None, BeforeValidator(_general_source)] = Field(
        None, description="A second evaluation set of general speech (Hub id or local "
        "Hub-format folder, e.g. a LibriSpeech test-clean or FLEURS subset; set split and "
        "max_samples), scored for the base and the tuned model: did fine-tuning hurt speech "
        "it was not trained on?")

    @model_validator(mode="before")
    @classmethod
    def _before_normalizer(cls, data: Any) -> Any:
        """Specs and run folders written before `normalizer` existed say `lowercase` and
        `remove_punctuation` (both on by default): that is the simple normaliser (both off:
        none), so old runs still load and publish with the scoring they were measured with."""
        if isinstance(data, dict) and {"lowercase", "remove_punctuation"} & data.keys():
            data = dict(data)
            lowercase, punctuation = data.pop("lowercase", True), data.pop(
                "remove_punctuation", True)
            data.setdefault("normalizer", "simple" if lowercase or punctuation else "none")
        return data


class TrackingSpec(StrictModel):
    enabled: bool = Field(True, description="Log metrics to trackio (stored in the run folder).")
    project: str = Field("voxtune", description="trackio project name.")
    space_id: str | None = Field(None, description="Also sync to this trackio Space (token).")


class PublishSpec(StrictModel):
    to: str | None = Field(None, description="Local registry folder or hf://owner/name; "
                           "default: the registry under VOXTUNE_HOME.")
    merge: bool = Field(False, description="Also export a merged full model for LoRA runs.")
    private: bool = Field(True, description="Hub repos are private unless you say otherwise; "
                          "voice recordings are biometric data.")
    dataset: bool = Field(False, description="Also publish the prepared dataset.")
    space: bool = Field(False, description="Also create a demo Space for the model.")
    name: str | None = Field(None, description="Name in the local registry; default: the run "
                             "name (on the Hub the name is part of `to`).")
    space_id: str | None = Field(None, description="Hub Space id for the demo; default "
                                 "<owner>/<name>-demo. Only with `to: hf://…`.")
    space_hardware: str | None = Field(None, description="Hardware to request for a Hub "
                                       "Space, e.g. t4-small; default: the free CPU.")
    run: str | None = Field(
        None, pattern=RUN_NAME.pattern, description="Publish the trained model of this other "
        "run (its final/, beside this run's folder) instead of this run's own: a publish-only "
        "run (`steps: [publish]`) of a run that has finished training, as the UI makes.")
    max_wer_drift: float = Field(
        0.5, ge=0, le=100, description="Percentage points of WER an exported model (merged "
        "today) may differ from the evaluated one on the eval split; publish re-scores it and "
        "refuses (exit 2, nothing uploaded) beyond this. Raise it only for a deliberate "
        "lossy export.")
    space_token: Literal["read", "none", "write"] = Field(
        "read", description="Token the demo Space gets to load a private model: read = the "
        "read-only token the operator provides (HF_SPACE_TOKEN), or none when there is none; "
        "none = no token (public models); write = your publishing token (only if you must).")


# How a train step on more than one node is run: by Kubernetes' own engines, never a rendezvous
# scheme of our own. auto = the first of trainjob, jobset whose API the cluster serves.
Engine = Literal["auto", "job", "jobset", "trainjob"]


class ResourcesSpec(StrictModel):
    gpus: int = Field(1, ge=0, le=16, description="GPUs per node for the train step "
                      "(data-parallel if >1); the plan refuses more than a node of the GPU "
                      "profile has.")
    nodes: int = Field(1, ge=1, le=64, description="Nodes (pods) the train step spreads over, "
                       "each with `gpus` GPUs: more than 1 when one node's GPUs are not enough "
                       "(full fine-tuning of Small-24B, a Granary-scale corpus). Needs "
                       "Kubeflow Trainer or JobSet in the cluster and a ReadWriteMany volume.")
    engine: Engine = Field(
        "auto", description="What runs the train step in a cluster: job = one batch/v1 Job "
        "(1 node only), trainjob = a Kubeflow Trainer TrainJob, jobset = a JobSet; auto = job "
        "for 1 node, else trainjob if the cluster serves trainer.kubeflow.org, else jobset "
        "if it serves jobset.x-k8s.io (the chart's jobs.engine sets the cluster's default).")
    gpu_profile: str | None = Field(
        None, description="GPU profile to plan and place the run on (24gb, 48gb, 80gb, 141gb "
        "or one of the chart's jobDefaults.gpuProfiles); default: the smallest that fits.")
    strategy: Literal["auto", "ddp", "fsdp"] = Field(
        "auto", description="How >1 GPU share the work: ddp copies the model to every GPU, fsdp "
        "shards weights, gradients and optimizer states (across every node's GPUs); auto = "
        "fsdp for full fine-tuning on >1 GPU in all, else ddp (filled in when the run is "
        "created).")
    cpu: str | None = Field(None, description="CPU request, Kubernetes quantity (e.g. '8').")
    memory: str | None = Field(None, description="Memory request, Kubernetes quantity (e.g. 64Gi).")


class RunSpec(StrictModel):
    """Everything that defines a run. Saved as spec.yaml beside every artifact it produces."""

    name: str = Field(description="Run name: lowercase letters, digits and '-', at most 40.")
    base_model: str = Field(DEFAULT_BASE_MODEL, description="Hub id, local path, or "
                            "'tiny-random' / 'tiny-random-<N>s' (small random smoke-test "
                            "models with a 30-s or N-s audio window).")
    mode: Mode = Field("lora", description="lora: adapters on a bf16 base (Mini: 24 GB GPUs); "
                       "qlora: adapters on a 4-bit base (Small-24B on one 48-80 GB GPU; needs a "
                       "GPU); full: every weight (Mini: 80 GB, Small: FSDP on several); "
                       "`voxtune plan` says what a spec needs.")
    language: Language = None
    steps: list[Step] = Field(
        default_factory=lambda: list(STEPS), min_length=1, description="Steps to run, in order.")
    data: DataSpec = Field(default_factory=DataSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    publish: PublishSpec = Field(default_factory=PublishSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)

    @model_validator(mode="before")
    @classmethod
    def _mode_defaults(cls, data: Any) -> Any:
        """Fill the defaults that depend on the mode, so spec.yaml records what runs."""
        if not isinstance(data, dict):
            return data
        mode = data.get("mode", "lora")
        if mode not in LEARNING_RATES:
            return data  # the mode field reports it
        data = dict(data)
        training = data.get("training") or {}
        if isinstance(training, TrainingSpec):
            training = training.model_dump(exclude_unset=True)
        if isinstance(training, dict):
            training = dict(training)
            if training.get("learning_rate") is None:
                training["learning_rate"] = LEARNING_RATES[mode]
            if training.get("gradient_checkpointing") is None:
                training["gradient_checkpointing"] = CHECKPOINTING[mode]
            data["training"] = training
        resources = data.get("resources") or {}
        if isinstance(resources, ResourcesSpec):
            resources = resources.model_dump(exclude_unset=True)
        if isinstance(resources, dict) and resources.get("strategy", "auto") == "auto":
            gpus, nodes = resources.get("gpus", 1), resources.get("nodes", 1)
            several = isinstance(gpus, int) and isinstance(nodes, int) and gpus * nodes > 1
            data["resources"] = {**resources,
                                 "strategy": "fsdp" if mode == "full" and several else "ddp"}
        return data

    @model_validator(mode="after")
    def _one_node_per_job(self) -> RunSpec:
        if self.resources.nodes > 1 and self.resources.engine == "job":
            raise ValueError("resources.engine job runs one pod: use trainjob or jobset (or "
                             "auto) for nodes > 1, or set nodes: 1")
        if self.resources.nodes > 1 and self.resources.gpus == 0:
            raise ValueError("resources.nodes > 1 trains on GPUs: set resources.gpus to 1 or "
                             "more per node")
        return self

    @model_validator(mode="after")
    def _qlora_needs_a_gpu(self) -> RunSpec:
        if self.mode == "qlora" and self.resources.gpus == 0:
            raise ValueError("mode qlora quantizes the base with bitsandbytes on a GPU: set "
                             "resources.gpus to 1 or more, or use mode: lora on a CPU")
        return self

    def optimizer_for(self, on_gpu: bool) -> str:
        """The optimizer this run uses: `training.optimizer`, or for auto 8-bit AdamW
        (bitsandbytes) in full fine-tuning on GPUs, whose states take 2 bytes per parameter
        instead of 8 (what lets Mini's full FT fit an 80 GB GPU), and PyTorch's AdamW otherwise
        (adapters are small, and bitsandbytes' optimizers need a GPU)."""
        if self.training.optimizer != "auto":
            return self.training.optimizer
        return "adamw_8bit" if self.mode == "full" and on_gpu else "adamw_torch"

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not RUN_NAME.fullmatch(value):
            raise ValueError("use 1-40 lowercase letters, digits or '-', starting and ending "
                             "with a letter or digit (it becomes part of Kubernetes names)")
        return value

    @field_validator("steps")
    @classmethod
    def _pipeline_order(cls, value: list[str]) -> list[str]:
        if value != sorted(set(value), key=STEPS.index):
            raise ValueError(f"list each step once, in pipeline order {list(STEPS)}")
        return value

    def with_absolute_paths(self, base: Path) -> RunSpec:
        """Resolve relative source paths against `base`, so the saved spec works anywhere."""
        sources = []
        for source in self.data.sources:
            for field in ("path", "audio_root"):
                value = getattr(source, field, None)
                if value is not None and not Path(value).is_absolute():
                    source = source.model_copy(update={field: (base / value).resolve()})
            sources.append(source)
        update: dict[str, Any] = {"data": self.data.model_copy(update={"sources": sources})}
        target = self.publish.to
        if target and "://" not in target and not Path(target).is_absolute():
            resolved = str((base / target).resolve())
            update["publish"] = self.publish.model_copy(update={"to": resolved})
        return self.model_copy(update=update)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# --- loading ----------------------------------------------------------------------------------


class _Values(PydanticBaseSettingsSource):
    """A settings source that returns a fixed mapping (the spec file's contents)."""

    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any]):
        super().__init__(settings_cls)
        self._values = values

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._values


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a spec file: a RunSpec mapping or a FineTuneRun object (its `spec` is the RunSpec)."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such spec file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise UserError(f"{path}: expected a mapping of RunSpec fields")
    if document.get("kind") == "FineTuneRun":
        spec = dict(document.get("spec") or {})
        spec.setdefault("name", (document.get("metadata") or {}).get("name"))
        return spec
    return document


def load_user_spec(path: Path | None = None, overrides: dict[str, Any] | None = None, *,
                   resolve_paths: bool = True) -> RunSpec:
    """User input → RunSpec: defaults < file < VOXTUNE_SPEC__* env < `overrides` (CLI flags).
    Relative paths are made absolute against the file's folder (or the working directory);
    with `resolve_paths=False` they stay relative, for a cluster run whose paths are on the
    shared volume (the controller resolves them there)."""
    file_values = read_yaml(path) if path else {}

    class _Layered(BaseSettings, RunSpec):
        model_config = SettingsConfigDict(env_prefix="VOXTUNE_SPEC__", env_nested_delimiter="__",
                                          extra="forbid", frozen=True)

        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                       dotenv_settings, file_secret_settings):
            return (init_settings, env_settings, _Values(settings_cls, file_values))

    where = str(path) if path else "spec"
    try:
        layered = _Layered(**(overrides or {}))
        spec = RunSpec.model_validate(layered.model_dump())
    except ValidationError as error:
        raise UserError(format_validation_error(error, where)) from None
    if not resolve_paths:
        return spec
    return spec.with_absolute_paths(Path(path).parent if path else Path.cwd())


def read_resolved_spec(path: Path) -> RunSpec:
    """A spec a run recorded (RUN/spec.yaml, final/spec.yaml, a published model's): validated
    as it is, no layering; errors name the file."""
    return validate_spec(read_yaml(path), str(path))


def validate_spec(document: dict[str, Any], where: str) -> RunSpec:
    """A RunSpec from a mapping; a UserError naming `where` and each bad field otherwise."""
    try:
        return RunSpec.model_validate(document)
    except ValidationError as error:
        raise UserError(format_validation_error(error, where)) from None


def format_validation_error(error: ValidationError, where: str) -> str:
    """One line per problem, naming the field by its dotted path."""
    lines = [f"{where}: invalid run spec"]
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(root)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see `voxtune spec --schema`)"
        lines.append(f"  {field}: {message}")
    return "\n".join(lines)


class Settings(BaseSettings):
    """Per-process settings from VOXTUNE_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="VOXTUNE_", extra="ignore")

    home: Path = Field(Path.home() / ".voxtune", description="Root of runs/, registry/ and "
                       "caches; in the cluster this is the shared volume's mount point.")
    workers: int | None = Field(None, ge=1, description="Processes for audio preparation; "
                                "default: the CPUs this process may use.")
    local_max_runs: int = Field(1, ge=1, description="Runs the local executor trains at once; "
                                "the rest wait as Queued. Raise it on machines with GPUs to "
                                "spare (VOXTUNE_LOCAL_MAX_RUNS).")
