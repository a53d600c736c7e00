"""The Helm chart (charts/voxtune) with the real helm binary: lint, schema, manifests valid for the
oldest and newest Kubernetes minors, RBAC, hardening, the controller's settings and images, UI
auth, demo, NOTES and `helm install --dry-run`. The matrix: defaults + charts/voxtune/ci/*."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.emulators import kube
from tests.emulators.kube import KubeEmulator
from tests.helm import (
    CHART,
    NAMESPACE,
    RELEASE,
    VALUES,
    container,
    env,
    find,
    helm_run,
    render,
    template_text,
)
from voxtune.cli import main
from voxtune.client import Client
from voxtune.controller.jobs import JobSettings, build_job
from voxtune.controller.settings import RESERVED_ENV
from voxtune.plan import GpuProfile
from voxtune.publish.vllm import manifest
from voxtune.spec import RunSpec
from voxtune.ui import training
from voxtune.ui.demo import DemoServers
from voxtune.ui.handlers import Context
from voxtune.ui.settings import UiSettings
from voxtune.ui.training import AUTO_PROFILE, TrainForm

KUBERNETES_MINORS = ("1.29", "1.37")  # oldest and newest supported
MATRIX = pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
kube_emulator = kube.kube_emulator
CONTROLLER, UI, DEMO = (f"{RELEASE}-{part}" for part in ("controller", "ui", "demo"))
UI_USERS = f"{RELEASE}-ui-users"


def job_settings(documents: list[dict], tmp_path: Path) -> JobSettings:
    """The ConfigMap's settings, loaded the way the controller loads its --config file."""
    path = tmp_path / "jobs.yaml"
    path.write_text(find(documents, "ConfigMap", f"{RELEASE}-jobs")["data"]["jobs.yaml"])
    return JobSettings.load(path)


def pod_specs(documents: list[dict]) -> dict[str, dict]:
    specs = {doc["metadata"]["name"]: doc["spec"]["template"]["spec"]
             for doc in documents if doc["kind"] == "Deployment"}
    specs.update({doc["metadata"]["name"]: doc["spec"] for doc in documents
                  if doc["kind"] == "Pod"})
    return specs


# --- lint, schema, validity -----------------------------------------------------------------


@MATRIX
def test_lint_strict(values: Path | None) -> None:
    done = helm_run("lint", "--strict", CHART, *(["--values", values] if values else []))
    assert done.returncode == 0, done.stdout + done.stderr


@MATRIX
@pytest.mark.parametrize("minor", KUBERNETES_MINORS)
def test_manifests_validate_strictly(values: Path | None, minor: str) -> None:
    """CRD (--include-crds) and the helm test pod included; an unknown kind is a failure too."""
    text = template_text(values, "--include-crds")
    count = sum(1 for doc in yaml.safe_load_all(text) if doc)
    done = subprocess.run([str(Path(sys.executable).with_name("kubernetes-validate")),
                           "--strict", "-k", minor, "-"], input=text, capture_output=True,
                          text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert not re.search(r"^(WARN|ERROR)", output, re.MULTILINE), output  # schema not found
    assert output.count(" passed for resource ") == count, output


@pytest.mark.parametrize(("setting", "complaint"), [
    ("controller.port=http", "/controller/port"),                 # wrong type
    ("ui.authMode=none", "additional properties 'authMode'"),     # unknown key
    ("ui.auth.mode=open", "/ui/auth/mode"),                       # not an allowed value
    ("jobs.env.HF_TOKEN=hf_x", "invalid propertyName 'HF_TOKEN'"),  # only through the Secret
    ("images.train.digest=latest", "/images/train/digest"),
], ids=["wrong-type", "unknown-key", "bad-enum", "token-in-env", "bad-digest"])
def test_schema_rejects(setting: str, complaint: str) -> None:
    for command in ("lint", "template"):
        done = helm_run(command, *(["--strict"] if command == "lint" else [RELEASE]), CHART,
                        "--set", setting)
        assert done.returncode != 0, f"helm {command} accepted {setting}"
        assert complaint in done.stdout + done.stderr


def test_every_value_is_documented() -> None:
    """A `# --` comment on every value, or on the section it belongs to (helm-docs style)."""
    lines = [line for line in (CHART / "values.yaml").read_text().splitlines() if line.strip()]
    documented: list[int] = []  # indents of the open sections that carry a `# --` comment
    pending = False
    for number, line in enumerate(lines):
        if line.lstrip().startswith("# --"):
            pending = True
        key = re.match(r"^( *)([\w.-]+):( *)(.*)$", line)
        if not key:
            continue
        indent = len(key[1])
        documented = [level for level in documented if level < indent]
        following = lines[number + 1].lstrip() if number + 1 < len(lines) else ""
        is_value = bool(key[4]) or following.startswith("- ")  # not a section of keys
        assert pending or documented or not is_value, f"values.yaml: {key[2]!r} has no '# --'"
        if pending:
            documented.append(indent)
        pending = False


def test_crd_file_is_the_generators_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--crd"]) == 0
    assert (CHART / "crds" / "finetuneruns.voxtune.io.yaml").read_text() == capsys.readouterr().out


# --- RBAC and hardening ---------------------------------------------------------------------


def test_rbac_is_namespaced_with_exact_verbs_and_no_secrets() -> None:
    documents = render()
    kinds = {doc["kind"] for doc in documents}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    rules = {name: {(group, resource): sorted(rule["verbs"])
                    for rule in find(documents, "Role", name)["rules"]
                    for group in rule["apiGroups"] for resource in rule["resources"]}
             for name in (CONTROLLER, UI)}
    read = ["get", "list", "watch"]
    assert rules[CONTROLLER] == {  # DESIGN §4
        ("voxtune.io", "finetuneruns"): read,
        ("voxtune.io", "finetuneruns/status"): ["get", "patch", "update"],
        ("batch", "jobs"): sorted(["create", "get", "list", "watch", "delete", "patch"]),
        # a multi-node train step's one group, whichever engine the cluster serves
        ("trainer.kubeflow.org", "trainjobs"): sorted(["create", "get", "list", "watch",
                                                       "delete"]),
        ("jobset.x-k8s.io", "jobsets"): sorted(["create", "get", "list", "watch", "delete"]),
        ("", "pods"): read, ("", "events"): read, ("", "pods/log"): ["get"],
    }
    assert rules[UI] == {  # a client like `voxtune submit`: runs and their logs, nothing else
        ("voxtune.io", "finetuneruns"): sorted(["create", "get", "list", "watch", "patch",
                                                "delete"]),
        ("", "pods"): ["get", "list"], ("", "pods/log"): ["get"],
    }
    for name, account in ((CONTROLLER, CONTROLLER), (UI, UI)):
        binding = find(documents, "RoleBinding", name)
        assert binding["roleRef"]["name"] == name
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account,
                                        "namespace": NAMESPACE}]


@MATRIX
def test_every_pod_is_hardened(values: Path | None) -> None:
    documents = render(values)
    for name, pod in pod_specs(documents).items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        # only the two pods that talk to the API server get a token
        assert pod["automountServiceAccountToken"] is (name in (CONTROLLER, UI)), name
        for each in pod["containers"]:
            assert each["securityContext"] == {
                "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}, name
            assert each["resources"]["limits"]["memory"], name
            mounts = {mount["mountPath"]: mount["name"] for mount in each.get("volumeMounts", [])}
            volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
            if mounts:  # a writable /tmp on the read-only root filesystem
                assert volumes[mounts["/tmp"]]["emptyDir"] == {}, name
            assert not any("secretKeyRef" in str(value) for key, value in env(each).items()
                           if key != "HF_TOKEN"), name
    for account in (doc for doc in documents if doc["kind"] == "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


# --- the controller and its settings --------------------------------------------------------


def test_controller_runs_the_ui_image_with_its_settings_file() -> None:
    documents = render(None, "--set", "controller.port=9090")
    pod = find(documents, "Deployment", CONTROLLER)["spec"]["template"]["spec"]
    controller = pod["containers"][0]
    assert controller["image"] == container(documents, UI)["image"] == "voxtune/ui:0.1.0"
    assert controller["command"] == ["voxtune", "controller"]
    args = controller["args"]
    options = dict(zip(args[::2], args[1::2], strict=True))
    config = Path(options.pop("--config"))
    assert options == {"--namespace": NAMESPACE, "--host": "0.0.0.0", "--port": "9090",
                       "--resync-seconds": "60"}
    mount = next(m for m in controller["volumeMounts"] if m["mountPath"] == str(config.parent))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    settings = find(documents, "ConfigMap", volume["configMap"]["name"])
    assert list(settings["data"]) == [config.name]  # --config is the mounted JobSettings file
    assert controller["ports"] == [{"name": "http", "containerPort": 9090}]
    assert controller["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert controller["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert env(controller) == {"HOME": "/tmp", "PYTHONUNBUFFERED": "1"}  # no token, ever
    assert pod["serviceAccountName"] == CONTROLLER
    assert find(documents, "Deployment", CONTROLLER)["spec"]["replicas"] == 1


def test_multi_node_engine_needs_a_shared_volume() -> None:
    """Several nodes mount the run folder: a volume only one node can mount is refused when
    the chart is rendered (helm lint reports `fail` only as INFO, so template is the check)."""
    done = helm_run("template", RELEASE, CHART, "--set",
                    "jobs.engine=jobset,persistence.accessModes={ReadWriteOnce}")
    assert done.returncode != 0
    assert "persistence.accessModes must include ReadWriteMany" in done.stderr
    assert helm_run("template", RELEASE, CHART, "--set", "jobs.engine=jobset").returncode == 0


def test_the_shipped_training_runtime_is_the_builders(tmp_path: Path) -> None:
    """jobs.shipTrainingRuntime: the chart's ClusterTrainingRuntime is what
    engines.build_training_runtime makes of the chart's own job settings (one truth), and its
    node Job is a valid batch/v1 Job; off by default (it needs Kubeflow Trainer's CRDs)."""
    import kubernetes_validate

    from voxtune.controller.engines import build_training_runtime

    assert not [d for d in render() if d["kind"] == "ClusterTrainingRuntime"]
    documents = render(None, "--set", "jobs.shipTrainingRuntime=true", "--set",
                       "jobs.trainingRuntime=voxtune-torch", "--set", "jobs.backoffLimit=3")
    shipped = find(documents, "ClusterTrainingRuntime", "voxtune-torch")
    built = build_training_runtime(job_settings(documents, tmp_path))
    assert shipped["spec"] == built["spec"]
    assert shipped["spec"]["template"]["spec"]["failurePolicy"]["maxRestarts"] == 3
    (node,) = shipped["spec"]["template"]["spec"]["replicatedJobs"]
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "node"},
           **node["template"]}
    assert kubernetes_validate.validate(job, "1.37", strict=True) == "1.37"


def test_default_job_settings_are_the_controllers_defaults(tmp_path: Path) -> None:
    """The chart documents the same defaults as JobSettings (only the step account differs)."""
    settings = job_settings(render(), tmp_path)
    unchanged = {"exclude": {"service_account"}}
    assert settings.model_dump(**unchanged) == JobSettings().model_dump(**unchanged)
    assert settings.service_account == f"{RELEASE}-jobs"


@pytest.mark.parametrize(("values", "expected"), [
    ("gpu-kueue", {"queue": "team-gpu", "priority_class": "batch-high",
                   "gpu_node_selector": {"node-pool": "gpu"},
                   "gpu_profiles": [GpuProfile(name="h100", memory_gib=79.1,
                                               product="NVIDIA-H100-80GB-HBM3")],
                   "checkpoint_write_mb_per_s": 1000,
                   "image_pull_secrets": ["mirror-pull"], "hf_token_secret": None,
                   "env": {"HTTPS_PROXY": "http://proxy.example.com:3128"}}),
    ("existing", {"pvc": "shared-speech", "hf_token_secret": "hf-token",
                  "hf_token_key": "HF_TOKEN", "env": {"HF_HUB_OFFLINE": "1"},
                  "hf_space_token_secret": "hf-read-token", "hf_space_token_key": "token"}),
    ("demo", {"hf_token_secret": "hf-token", "hf_token_key": "token",
              "hf_space_token_secret": None, "hf_space_token_key": "space-token"}),
], ids=lambda value: value if isinstance(value, str) else "")
def test_job_settings_from_values(values: str, expected: dict, tmp_path: Path) -> None:
    settings = job_settings(render(VALUES[values]), tmp_path)
    assert {key: getattr(settings, key) for key in expected} == expected


def test_gpu_preset_reaches_the_train_job(tmp_path: Path) -> None:
    settings = job_settings(render(VALUES["gpu-kueue"]), tmp_path)
    job = build_job(RunSpec(name="big", mode="full"), "train", settings)
    pod = job.spec.template.spec
    # memory from the plan (Mini full FT on one H100: ≈9 GiB of host memory, +20 %, +1 GiB shm)
    assert pod.containers[0].resources.requests == {"cpu": "24", "memory": "12Gi",
                                                    "ephemeral-storage": "16Gi"}
    assert pod.node_selector == {"node-pool": "gpu",
                                 "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    # a ≈25 GiB checkpoint at the stated 1000 MB/s: ≈27 s × 1.25 + 30 s
    assert 60 < pod.termination_grace_period_seconds < 70
    unplanned = build_job(RunSpec(name="big", mode="full", base_model="/data/models/mine"),
                          "train", settings).spec.template.spec
    assert unplanned.containers[0].resources.limits["memory"] == "200Gi"  # the chart's
    assert [t.key for t in pod.tolerations] == ["nvidia.com/gpu", "dedicated"]
    assert job.metadata.labels["kueue.x-k8s.io/queue-name"] == "team-gpu"
    assert job.spec.suspend is True
    assert job.spec.active_deadline_seconds == 1000000


@pytest.mark.parametrize("name", sorted(RESERVED_ENV))
def test_step_env_cannot_replace_what_the_builder_sets(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        JobSettings(env={name: "x"})
    done = helm_run("template", RELEASE, CHART, "--set-string", f"jobs.env.{name}=x")
    assert done.returncode != 0 and f"invalid propertyName '{name}'" in done.stderr


# --- images ---------------------------------------------------------------------------------


def test_image_overrides(tmp_path: Path) -> None:
    documents = render(VALUES["gpu-kueue"])  # global mirror + tag, train pinned by digest
    settings = job_settings(documents, tmp_path)
    assert container(documents, UI)["image"] == "mirror.example.com:5000/voxtune/ui:0.1.0-rc1"
    assert settings.images.prepare.reference == "mirror.example.com:5000/voxtune/prepare:0.1.0-rc1"
    assert settings.images.train.reference == (
        "gpu-mirror.example.com/ml/voxtune-train@sha256:" + "0123456789abcdef" * 4)
    pods = pod_specs(documents)
    assert all(pod["imagePullSecrets"] == [{"name": "mirror-pull"}] for pod in pods.values())

    documents = render(VALUES["demo"], "--set", "images.publish.registry=",
                       "--set-string", "images.publish.tag=7", "--set", "image.pullPolicy=Always")
    settings = job_settings(documents, tmp_path)
    demo = container(documents, DEMO)
    assert demo["image"] == settings.images.publish.reference == "voxtune/publish:7"
    assert demo["imagePullPolicy"] == settings.image_pull_policy == "Always"


# --- UI, demo, volume, helm test ------------------------------------------------------------


def test_ui_password_auth_by_default_with_a_generated_user() -> None:
    documents = render()
    ui = container(documents, UI)
    assert ui["command"] == ["voxtune", "ui"]
    assert ui["args"] == ["--host", "0.0.0.0", "--port", "7860", "--backend", "kubernetes"]
    variables = env(ui)
    assert variables["VOXTUNE_UI_AUTH"] == "password"
    assert variables["VOXTUNE_UI_ALLOW_REMOTE_WITHOUT_AUTH"] == "false"
    assert variables["VOXTUNE_BACKEND"] == "kubernetes" and variables["VOXTUNE_HOME"] == "/data"
    assert variables["VOXTUNE_UI_USERS_FILE"] == "/etc/voxtune/ui-users/users"
    volumes = find(documents, "Deployment", UI)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "users", "secret": {"secretName": UI_USERS, "items": [
        {"key": "users", "path": "users"}]}} in volumes
    secret = find(documents, "Secret", UI_USERS)
    assert re.fullmatch(r"admin:[A-Za-z0-9]{24}\n",
                        base64.b64decode(secret["data"]["users"]).decode())


def test_the_ui_plans_against_the_controllers_gpu_profiles(tmp_path: Path, voxtune_home: Path,
                                                           kube_emulator: KubeEmulator) -> None:
    """The Train page offers the profiles the chart gave the controller, not built-in ones."""
    documents = render(VALUES["gpu-kueue"])
    pod = find(documents, "Deployment", UI)["spec"]["template"]["spec"]
    path = Path(env(pod["containers"][0])["VOXTUNE_UI_JOB_SETTINGS"])
    mount = next(m for m in pod["containers"][0]["volumeMounts"]
                 if m["mountPath"] == str(path.parent))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == f"{RELEASE}-jobs" and path.name == "jobs.yaml"

    mounted = tmp_path / path.name  # what the pod reads at that path
    mounted.write_text(find(documents, "ConfigMap", f"{RELEASE}-jobs")["data"]["jobs.yaml"])
    client = Client("kubernetes", namespace="default", home=voxtune_home,
                    api_client=kube_emulator.api_client())
    ctx = Context(client,
                  UiSettings(job_settings=mounted), voxtune_home,
                  DemoServers(voxtune_home / "ui"))
    offered = training.offer(ctx, TrainForm(base_model=training.BASE_MODELS[0], gpus="1 GPU"))
    assert offered.profiles == [AUTO_PROFILE, "h100"]  # the values' only profile
    assert offered.plan is not None and offered.plan.profile.name == "h100"
    assert "profiles h100 (79.1 GiB): the controller's" in training.hardware_text(ctx)


def test_ui_auth_modes() -> None:
    documents = render(VALUES["existing"])
    assert not [doc for doc in documents if doc["kind"] == "Secret"]
    volumes = find(documents, "Deployment", UI)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "users", "secret": {"secretName": "voxtune-ui-users", "items": [
        {"key": "users.txt", "path": "users.txt"}]}} in volumes
    assert env(container(documents, UI))["VOXTUNE_UI_USERS_FILE"] == \
        "/etc/voxtune/ui-users/users.txt"

    documents = render(VALUES["ingress-auth"])
    variables = env(container(documents, UI))
    assert variables["VOXTUNE_UI_AUTH"] == "proxy"
    assert variables["VOXTUNE_UI_PROXY_HEADER"] == "X-Auth-Request-User"
    assert "VOXTUNE_UI_USERS_FILE" not in variables
    ingress = find(documents, "Ingress", UI)["spec"]
    assert ingress["tls"] == [{"hosts": ["voxtune.example.com"], "secretName": "voxtune-tls"}]
    assert ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == UI

    refused = helm_run("template", RELEASE, CHART, "--set", "ui.auth.mode=none")
    assert refused.returncode != 0 and "allowRemoteWithoutAuth" in refused.stderr
    documents = render(None, "--set", "ui.auth.mode=none",
                       "--set", "ui.auth.allowRemoteWithoutAuth=true")
    assert env(container(documents, UI))["VOXTUNE_UI_ALLOW_REMOTE_WITHOUT_AUTH"] == "true"


def test_demo_serves_a_published_model() -> None:
    documents = render(VALUES["demo"])
    demo = container(documents, DEMO)
    assert demo["command"] == ["voxtune", "serve", "my-voice@2", "--host", "0.0.0.0",
                               "--port", "7861", "--base", "auto"]
    assert demo["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert demo["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert env(demo)["HF_TOKEN"] == {"secretKeyRef": {"name": "hf-token", "key": "token",
                                                      "optional": True}}
    service = find(documents, "Service", DEMO)["spec"]["ports"][0]
    assert env(container(documents, UI))["VOXTUNE_UI_DEMO_URL"] == \
        f"http://{DEMO}:{service['port']}"
    assert "VOXTUNE_UI_DEMO_URL" not in env(container(render(), UI))
    missing = helm_run("template", RELEASE, CHART, "--set", "demo.enabled=true")
    assert missing.returncode != 0 and "demo.model is required" in missing.stderr


def test_demo_can_serve_the_published_model_with_vllm_on_a_gpu(tmp_path: Path) -> None:
    documents = render(VALUES["demo-vllm"])
    demo = container(documents, DEMO)
    assert demo["image"] == "vllm/vllm-openai:v0.11.0"
    assert demo["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert demo["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    python, flag, launcher, *arguments = demo["command"]
    assert (python, flag) == ("python3", "-c")
    assert arguments == ["/data/registry/my-voice/2", "my-voice@2", "7861"]
    assert demo["args"] == ["--max-model-len", "8192"]
    # the UI's Try-it points at the same Service, whichever engine answers behind it
    assert env(container(documents, UI))["VOXTUNE_UI_DEMO_URL"].startswith(f"http://{DEMO}:")

    # the launcher, run on the vllm.json publish writes, execs the `vllm serve` lines
    # docs/operations.md shows (a stand-in `vllm` on PATH prints its arguments)
    stand_in = tmp_path / "bin" / "vllm"
    stand_in.parent.mkdir()
    stand_in.write_text('#!/bin/sh\necho "$@"\n')
    stand_in.chmod(0o755)

    def launch(plan: dict[str, object] | None) -> subprocess.CompletedProcess[str]:
        model = tmp_path / "model"
        (model / "vllm-adapter").mkdir(parents=True, exist_ok=True)
        (model / "vllm-adapter" / "adapter_config.json").write_text('{"r": 32}')
        (model / "vllm.json").write_text(json.dumps(plan))
        return subprocess.run([sys.executable, "-c", launcher, str(model), "my-voice@2", "7861",
                               *demo["args"]], capture_output=True, text=True, timeout=60,
                              env={"PATH": f"{stand_in.parent}:/usr/bin:/bin"})

    mistral = "--tokenizer-mode mistral --config-format mistral --load-format mistral"
    done = launch(manifest("mistralai/Voxtral-Mini-3B-2507", []))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "serve mistralai/Voxtral-Mini-3B-2507 --enable-lora --max-lora-rank 32 --lora-modules "
        f"my-voice@2={tmp_path}/model/vllm-adapter --served-model-name "
        f"mistralai/Voxtral-Mini-3B-2507 --host 0.0.0.0 --port 7861 --dtype bfloat16 {mistral} "
        "--max-model-len 8192")
    done = launch(manifest(None, [], positions_match=False))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        f"serve {tmp_path}/model --served-model-name my-voice@2 --host 0.0.0.0 --port 7861 "
        f"--dtype bfloat16 {mistral} --max-model-len 8192")
    assert "voxtune: the audio encoder's positional table" in done.stdout  # the note, first
    before = {"model": ".", "adapter": None, "dtype": "bfloat16", "note": ""}  # no "args"
    done = launch(before)
    assert done.returncode == 1 and "publish the run again" in done.stderr
    assert "Traceback" not in done.stderr

    hub = helm_run("template", RELEASE, CHART, "-f", VALUES["demo-vllm"],
                   "--set", "demo.model=alice/my-voice")
    assert hub.returncode != 0 and "registry name@version or an absolute path" in hub.stderr


@pytest.mark.parametrize(("values", "claim"), [(None, f"{RELEASE}-data"),
                                               (VALUES["existing"], "shared-speech")],
                         ids=["created", "existing"])
def test_one_shared_volume(values: Path | None, claim: str, tmp_path: Path) -> None:
    documents = render(values)
    claims = [doc for doc in documents if doc["kind"] == "PersistentVolumeClaim"]
    if values is None:
        assert claims[0]["metadata"]["name"] == claim
        assert claims[0]["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert claims[0]["spec"]["accessModes"] == ["ReadWriteMany"]
    else:
        assert not claims
    assert job_settings(documents, tmp_path).pvc == claim
    for name, pod in pod_specs(documents).items():
        used = [v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", [])
                if "persistentVolumeClaim" in v]
        assert used in ([claim], []), name


def test_helm_test_pod_checks_the_ui() -> None:
    documents = render()
    pod = find(documents, "Pod", f"{RELEASE}-test-ui")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    port = find(documents, "Service", UI)["spec"]["ports"][0]["port"]
    assert pod["spec"]["containers"][0]["command"][-1] == f"http://{UI}:{port}/"
    assert pod["spec"]["containers"][0]["image"] == "busybox:1.37.0"


def test_install_dry_run_and_notes() -> None:
    done = helm_run("install", RELEASE, CHART, "--dry-run=client", "--namespace", NAMESPACE)
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    for line in (f"kubectl -n {NAMESPACE} port-forward service/{UI} 7860:80",
                 f"kubectl -n {NAMESPACE} get secret {UI_USERS} -o jsonpath='{{.data.users}}'",
                 f"kubectl -n {NAMESPACE} apply -f jobs/finetunerun.yaml",
                 f"voxtune submit jobs/finetunerun.yaml --backend kubernetes --namespace "
                 f"{NAMESPACE}",
                 f"kubectl -n {NAMESPACE} get finetuneruns",
                 "--from-file=token=./hf-token.txt"):
        assert line in notes, line


def test_notes_say_how_to_give_demo_spaces_a_read_only_token() -> None:
    done = helm_run("install", RELEASE, CHART, "--dry-run=client", "--namespace", NAMESPACE,
                    "--set", "huggingface.existingSecret=hf-token")
    assert done.returncode == 0, done.stderr
    notes = " ".join(done.stdout.split("NOTES:", 1)[1].split())
    assert "read-only token under key space-token of Secret hf-token" in notes
    assert "--from-file=space-token=./hf-read-token.txt" in notes
    assert "--set huggingface.spaceToken.existingSecret=voxtune-hf-space-token" in notes
