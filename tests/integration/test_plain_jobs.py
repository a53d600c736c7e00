"""jobs/<step>-job.yaml applied with the real kubectl, in order, as a user without the chart
would: the API (emulator) accepts each one, nothing owns them, and a controller that happens to
watch the namespace leaves Jobs without a FineTuneRun alone."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.emulators import kube
from tests.emulators.kube import KubeEmulator
from tests.integration.test_controller import KUBECTL, NS, ROOT, start_controller

kube_emulator = kube.kube_emulator
STEPS = ("prepare", "train", "publish")


def test_apply_in_order_without_the_controller(kube_emulator: KubeEmulator,
                                               tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path),
           "KUBECONFIG": str(kube_emulator.write_kubeconfig(tmp_path / "config"))}
    for step in STEPS:
        path = ROOT / "jobs" / f"{step}-job.yaml"
        done = subprocess.run([str(KUBECTL), "apply", "-f", str(path)], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"job.batch/my-voice-{step} created"
        job = kube_emulator.get("jobs", NS, f"my-voice-{step}")
        assert "ownerReferences" not in job["metadata"]
        kube_emulator.complete_job(NS, f"my-voice-{step}")  # the user waits for it

    def versions() -> dict[str, str]:
        return {job["metadata"]["name"]: job["metadata"]["resourceVersion"]
                for job in kube_emulator.list("jobs", NS)}

    before = versions()
    controller = start_controller(kube_emulator)  # e.g. the chart installed later
    try:
        time.sleep(1.5)  # three resyncs: time to (wrongly) touch the run-less Jobs
    finally:
        controller.stop()
    assert versions() == before  # not deleted, not changed, nothing added
    assert sorted(before) == sorted(f"my-voice-{step}" for step in STEPS)
