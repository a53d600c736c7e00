"""The chart's controller Deployment, started for real: its command, args and env from
`helm template`, its ConfigMap as the settings file, against the API emulator serving the chart's
own CRD. Only the config path is replaced (by the file the ConfigMap would mount) and
--kubeconfig added (the pod would use its service account)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from tests.emulators import kube
from tests.emulators.kube import KubeEmulator
from tests.helm import CHART, RELEASE, container, env, find, render
from tests.helpers import free_port
from tests.integration.test_controller import eventually, http_status
from voxtune.controller.crd import run_object
from voxtune.controller.jobs import JobSettings
from voxtune.spec import RunSpec

kube_emulator = kube.kube_emulator
NS = "default"


def answers(url: str) -> bool:
    try:
        return http_status(url) == 200
    except OSError:  # not listening yet
        return False


def test_rendered_controller_starts_and_creates_the_first_job(kube_emulator: KubeEmulator,
                                                              tmp_path: Path) -> None:
    port = free_port()  # through the chart's value, so the rendered args carry it
    documents = render(None, "--namespace", NS, "--set", f"controller.port={port}")
    controller = container(documents, f"{RELEASE}-controller")
    settings = find(documents, "ConfigMap", f"{RELEASE}-jobs")["data"]["jobs.yaml"]
    config = tmp_path / "jobs.yaml"
    config.write_text(settings)
    args = list(controller["args"])
    args[args.index("--config") + 1] = str(config)
    variables = env(controller)
    assert all(isinstance(value, str) for value in variables.values())  # nothing to resolve
    kube_emulator.register_crd(yaml.safe_load(
        (CHART / "crds" / "finetuneruns.voxtune.io.yaml").read_text()))
    kubeconfig = kube_emulator.write_kubeconfig(tmp_path / "kubeconfig", namespace="elsewhere")
    # the image's own environment, plus PYTHONPATH when the suite runs a checkout's sources
    # that way (else the installed voxtune would be tested, not these)
    sources = {key: os.environ[key] for key in ("PYTHONPATH",) if key in os.environ}
    process = subprocess.Popen(
        [*controller["command"], *args, "--kubeconfig", str(kubeconfig)],
        env={**variables, **sources,
             "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    def serving(path: str) -> bool:
        assert process.poll() is None, "the controller exited (its log is printed below)"
        return answers(f"http://127.0.0.1:{port}{path}")

    try:
        for probe in ("livenessProbe", "readinessProbe"):
            path = controller[probe]["httpGet"]["path"]
            eventually(lambda path=path: serving(path), timeout=30, what=f"{probe} {path}")
        kube_emulator.create("finetuneruns", run_object(RunSpec(name="chart-run"), NS))
        job = eventually(lambda: kube_emulator.get("jobs", NS, "chart-run-prepare"),
                         timeout=30, what="the prepare Job")
        pod = job["spec"]["template"]["spec"]
        expected = yaml.safe_load(settings)
        assert pod["containers"][0]["image"] == \
            JobSettings.model_validate(expected).images.prepare.reference
        assert pod["serviceAccountName"] == expected["service_account"]
        assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == expected["pvc"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log = process.communicate()[1]
        print(log)  # pytest shows it when the test fails
    assert f"watching FineTuneRuns in namespace {NS}" in log, log
