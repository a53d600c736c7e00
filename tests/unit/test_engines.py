"""Multi-node train steps: which engine runs them, and the TrainJob and JobSet they render to.

Golden files in golden/engines/ (kubernetes-validate has no schema for these kinds: they are
checked against the fields of those APIs voxtune relies on, written down in tests/data/schemas,
and their pods against Kubernetes' own schema). The one-node Job path is test_jobs.py's and
stays as it was."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.golden import check_golden
from tests.unit.test_jobs import KUBERNETES_MINORS, OWNER, big_settings
from voxtune.controller.engines import (
    JOBSET,
    TRAINJOB,
    NoEngine,
    build_group,
    choose_engine,
    render,
)
from voxtune.controller.jobs import JobSettings, owner_reference, placement_for
from voxtune.plan.placement import DoesNotFit, NotShared
from voxtune.run.process import NODE_ENV, step_command
from voxtune.spec import RunSpec

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "schemas"
SERVED_BOTH = {"batch/v1", TRAINJOB.api_version, JOBSET.api_version}


def two_by_four(engine: str = "auto", **resources: object) -> RunSpec:
    """Mini full fine-tuning over 2 nodes × 4 GPUs of 80 GB (FSDP across the 8)."""
    return RunSpec(name="big", mode="full", steps=["prepare", "train"],
                   data={"sources": [{"kind": "hub", "dataset": "org/speech"}]},
                   resources={"nodes": 2, "gpus": 4, "gpu_profile": "80gb", "engine": engine,
                              **resources})


def group(engine: str) -> dict:
    spec, settings = two_by_four(engine), big_settings()
    chosen = choose_engine(spec, settings, SERVED_BOTH)
    assert chosen is not None
    return build_group(chosen, spec, settings, placement_for(spec, settings),
                       owner_reference(OWNER))


def schema(engine: str) -> dict:
    name = {"trainjob": "trainjob.v1alpha1.json", "jobset": "jobset.v1alpha2.json"}[engine]
    return json.loads((SCHEMAS / name).read_text())


@pytest.mark.parametrize("engine", ["trainjob", "jobset"])
def test_golden(engine: str) -> None:
    check_golden(f"engines/{engine}-2x4.yaml", yaml.safe_dump(group(engine), sort_keys=False,
                                                      allow_unicode=True, width=100))


@pytest.mark.parametrize("engine", ["trainjob", "jobset"])
def test_groups_match_the_api_schemas(engine: str) -> None:
    jsonschema.validate(group(engine), schema(engine))


@pytest.mark.parametrize("engine", ["trainjob", "jobset"])
def test_the_schema_check_catches_mistakes(engine: str) -> None:
    wrong = group(engine)
    wrong["spec"]["numNodes"] = 2  # belongs under trainer / is no JobSet field
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, schema(engine))


@pytest.mark.parametrize("minor", KUBERNETES_MINORS)
def test_the_jobset_job_and_pod_validate_strictly(minor: str) -> None:
    (replicated,) = group("jobset")["spec"]["replicatedJobs"]
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "big-train-node-0"},
           **replicated["template"]}
    assert kubernetes_validate.validate(job, minor, strict=True) == minor


@pytest.mark.parametrize("minor", KUBERNETES_MINORS)
def test_the_trainjob_pod_parts_validate_strictly(minor: str) -> None:
    """What the Trainer puts into its runtime's `node` pod, as one Pod."""
    spec = group("trainjob")["spec"]
    trainer, (override,) = spec["trainer"], spec["podTemplateOverrides"]
    container = {"name": "node", "image": trainer["image"], "command": trainer["command"],
                 "env": trainer["env"], "resources": trainer["resourcesPerNode"],
                 **{k: v for c in override["spec"]["containers"] for k, v in c.items()}}
    pod_spec = {k: v for k, v in override["spec"].items() if k != "containers"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big-train-node-0-0"},
           "spec": {**pod_spec, "containers": [container]}}
    assert kubernetes_validate.validate(pod, minor, strict=True) == minor


def test_jobset_gang_restart_and_user_failure() -> None:
    """One node lost restarts every node (the child Job fails at the first failed pod, the
    JobSet restarts all of them); a user's failure (exit code 2/74 → PodFailurePolicy) fails
    the JobSet at once; Kueue admits the JobSet as one workload."""
    jobset = group("jobset")
    spec = jobset["spec"]
    job = spec["replicatedJobs"][0]["template"]["spec"]
    assert (job["parallelism"], job["completions"], job["completionMode"]) == (2, 2, "Indexed")
    assert job["backoffLimit"] == 0
    assert spec["failurePolicy"]["maxRestarts"] == big_settings().backoff_limit
    assert spec["failurePolicy"]["rules"] == [{"name": "UsersFailure", "action": "FailJobSet",
                                               "onJobFailureReasons": ["PodFailurePolicy"]}]
    fail_at_once = job["podFailurePolicy"]["rules"][1]
    assert fail_at_once["action"] == "FailJob" and fail_at_once["onExitCodes"]["values"] == [2, 74]
    assert jobset["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert spec["suspend"] is True and "suspend" not in job  # one workload, not two
    container = job["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert set(NODE_ENV) <= set(env)
    assert env["PET_MASTER_ADDR"]["value"] == "big-train-node-0-0.big-train"
    assert spec["network"]["subdomain"] == "big-train"
    assert "batch.kubernetes.io/job-completion-index" in \
        env["PET_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"


def test_trainjob_uses_the_torch_runtime_and_our_command() -> None:
    trainjob = group("trainjob")
    spec = trainjob["spec"]
    assert spec["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                  "kind": "ClusterTrainingRuntime"}
    assert (spec["trainer"]["numNodes"], spec["trainer"]["numProcPerNode"]) == (2, 4)
    assert spec["trainer"]["command"][-9:] == [
        "python", "-m", "voxtune.train.launch", "--nnodes=2", "--nproc-per-node=4", "-m",
        "voxtune", "train", "--run-dir", "/data/runs/big"][-9:]
    assert not {e["name"] for e in spec["trainer"]["env"]} & set(NODE_ENV)  # the Trainer's
    assert trainjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert spec["suspend"] is True
    (override,) = spec["podTemplateOverrides"]
    assert override["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "team-data"


@pytest.mark.parametrize(("engine", "default", "served", "expected"), [
    ("auto", "auto", SERVED_BOTH, "trainjob"),
    ("auto", "auto", {JOBSET.api_version}, "jobset"),
    ("jobset", "auto", SERVED_BOTH, "jobset"),
    ("auto", "jobset", SERVED_BOTH, "jobset"),  # the chart's cluster-wide default
    ("trainjob", "jobset", SERVED_BOTH, "trainjob"),  # the spec wins
    ("trainjob", "auto", None, "trainjob"),  # render: no cluster to ask
], ids=["prefers-trainer", "jobset-only", "named", "cluster-default", "spec-wins", "render"])
def test_choose_engine(engine: str, default: str, served: set[str] | None,
                       expected: str) -> None:
    settings = JobSettings(engine=default)
    chosen = choose_engine(two_by_four(engine), settings, served)
    assert chosen is not None and chosen.name == expected


@pytest.mark.parametrize(("engine", "served", "message"), [
    ("auto", {"batch/v1"}, "multi-node needs Kubeflow Trainer or JobSet; install one, or set "
                           "nodes: 1"),
    ("trainjob", {JOBSET.api_version}, "does not serve trainer.kubeflow.org/v1alpha1"),
    ("auto", None, "name trainjob or jobset to render"),
], ids=["neither", "named-missing", "render-auto"])
def test_no_engine_says_what_to_do(engine: str, served: set[str] | None, message: str) -> None:
    with pytest.raises(NoEngine, match=message):
        choose_engine(two_by_four(engine), JobSettings(), served)


def test_one_node_stays_a_job() -> None:
    spec = RunSpec(name="one", resources={"gpus": 4, "engine": "trainjob"})
    assert choose_engine(spec, JobSettings(), SERVED_BOTH) is None
    assert "--nnodes" not in " ".join(step_command(spec, "train", Path("/r")))
    with pytest.raises(ValueError, match="engine job runs one pod"):
        RunSpec(name="x", resources={"nodes": 2, "gpus": 1, "engine": "job"})


def test_render_prints_the_named_engine(tmp_path: Path) -> None:
    spec = two_by_four("jobset")
    kinds = [d["kind"] for d in yaml.safe_load_all(render(spec, JobSettings()))]
    assert kinds == ["Job", "JobSet"]
    train_only = render(spec.model_copy(update={"resources": two_by_four("trainjob").resources}),
                        JobSettings(), "train")
    assert [d["kind"] for d in yaml.safe_load_all(train_only)] == ["TrainJob"]


def test_the_plan_counts_nodes_and_refuses_what_cannot_be_placed() -> None:
    settings = JobSettings()
    one = placement_for(RunSpec(name="a", mode="full", resources={"gpus": 4,
                                                                   "gpu_profile": "80gb"}),
                        settings)
    two = placement_for(two_by_four(), settings)
    assert one.plan and two.plan
    assert two.plan.setup.world_size == 8 and two.plan.to_json()["nodes"] == 2
    assert two.plan.gpu_memory_gib < one.plan.gpu_memory_gib  # FSDP shards over all 8
    with pytest.raises(DoesNotFit, match=r"a 80gb node has 8: .*resources.gpus: 8 and "
                                         r"resources.nodes: 2"):
        placement_for(RunSpec(name="a", mode="full", resources={"gpus": 16,
                                                                 "gpu_profile": "80gb"}),
                      settings)
    with pytest.raises(NotShared, match="ReadWriteOnce, not ReadWriteMany"):
        placement_for(two_by_four(), JobSettings(volume_access_modes=["ReadWriteOnce"]))


def test_several_nodes_are_refused_locally() -> None:
    from voxtune.errors import UserError
    from voxtune.plan.placement import refuse_unless_fits

    with pytest.raises(UserError, match="submit it with --backend kubernetes, or set nodes: 1"):
        refuse_unless_fits(two_by_four(), local=True)
    assert refuse_unless_fits(two_by_four(), local=False) is not None
