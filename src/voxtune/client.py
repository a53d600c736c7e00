"""`voxtune.Client`: submit and watch runs from Python, on this machine or on a cluster.

    from voxtune import Client

    client = Client()                                   # local: VOXTUNE_HOME/runs
    client = Client("kubernetes", namespace="ml")       # FineTuneRuns via your kubeconfig
    status = client.submit("jobs/finetunerun.yaml")     # a file, a dict or a RunSpec
    for chunk in client.follow(status.name):
        print(chunk, end="")
    final = client.wait(status.name, timeout=3600)
    print(final.phase, final.metrics.get("wer"))

Every backend implements voxtune.executors.protocol.Executor and reports the same status
model (voxtune.run.status.RunStatus: phase, reason, progress, metrics, whether the run holds a
trained model, what it published; the Kubernetes backend's FineTuneRunStatus adds conditions).
submit returns at once; the local backend runs the steps in a background process. submit
first asks the resource plan whether the run fits (the controller asks again, against the
cluster's GPU profiles).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from voxtune.errors import UserError
from voxtune.executors.protocol import Executor
from voxtune.plan import GpuProfile
from voxtune.plan.placement import refuse_unless_fits
from voxtune.run.layout import check_run_name
from voxtune.run.status import RunStatus
from voxtune.spec import RunSpec, Settings, validate_spec

Backend = Literal["local", "kubernetes"]


def _local(settings: Settings, **_: Any) -> Executor:
    from voxtune.executors.local import LocalExecutor

    return LocalExecutor(settings)


def _kubernetes(settings: Settings, namespace: str | None, kubeconfig: str | Path | None,
                api_client: Any) -> Executor:
    from voxtune.executors.kubernetes import KubernetesExecutor

    return KubernetesExecutor(namespace, kubeconfig, api_client, settings)


# Imported on first use, so the local backend never loads the kubernetes client.
BACKENDS: dict[str, Callable[..., Executor]] = {"local": _local, "kubernetes": _kubernetes}


class Client:
    def __init__(self, backend: Backend = "local", *, namespace: str | None = None,
                 kubeconfig: str | Path | None = None, home: str | Path | None = None,
                 api_client: Any = None):
        """`home` is VOXTUNE_HOME (local runs; for kubernetes, where the shared volume is
        mounted, if it is, to read finished steps' logs). `api_client`: a configured
        kubernetes.client.ApiClient instead of the kubeconfig."""
        if backend not in BACKENDS:
            raise UserError(f"unknown backend {backend!r}; use 'local' or 'kubernetes'")
        settings = Settings(home=Path(home)) if home else Settings()
        self.backend = backend
        self.executor: Executor = BACKENDS[backend](
            settings, namespace=namespace, kubeconfig=kubeconfig, api_client=api_client)

    def load(self, spec: RunSpec | dict[str, Any] | str | Path) -> RunSpec:
        """A RunSpec from a file (RunSpec or FineTuneRun YAML), a mapping or a RunSpec."""
        if isinstance(spec, RunSpec):
            return spec
        if isinstance(spec, dict):
            return validate_spec(spec, "spec")
        return self.executor.load(Path(spec))

    def resource(self, spec: RunSpec | dict[str, Any] | str | Path) -> dict[str, Any] | None:
        """What `submit(spec)` would create on this backend (the FineTuneRun on Kubernetes),
        without creating it; None for the local backend."""
        return self.executor.resource(self.load(spec))

    def submit(self, spec: RunSpec | dict[str, Any] | str | Path) -> RunStatus:
        """Start a run and return its status at once; the same spec again is a no-op.
        A run that cannot fit (voxtune.plan) is refused: DoesNotFit, a UserError that says
        what would fit; a local run is checked against this machine's memory."""
        resolved = self.load(spec)
        refuse_unless_fits(resolved, local=self.backend == "local")
        return self.executor.submit(resolved)

    def status(self, name: str) -> RunStatus:
        return self.executor.status(check_run_name(name))

    def spec(self, name: str) -> RunSpec:
        """The spec a run was submitted with."""
        return self.executor.spec(check_run_name(name))

    def list(self) -> list[RunStatus]:
        return self.executor.list()

    def logs(self, name: str, step: str | None = None, node: int = 0) -> str:
        """The steps' logs; `node` picks a node of a multi-node train step (0: rank 0's)."""
        return self.executor.logs(self._check_node(check_run_name(name), node), step, node)

    def follow(self, name: str, step: str | None = None, node: int = 0) -> Iterator[str]:
        """The logs as they are written, until the run (or `step`) ends."""
        return self.executor.follow(self._check_node(check_run_name(name), node), step, node)

    def _check_node(self, name: str, node: int) -> str:
        if node:
            nodes = self.spec(name).resources.nodes
            if not 0 <= node < nodes:
                raise UserError(f"run {name!r} trains on {nodes} node"
                                f"{'s' if nodes > 1 else ''}: --node is 0 to {nodes - 1}")
        return name

    def cancel(self, name: str) -> RunStatus:
        return self.executor.cancel(check_run_name(name))

    def delete(self, name: str) -> None:
        """Remove the run. Local: its folder too. Kubernetes: the FineTuneRun, Jobs and pods
        (the run folder on the shared volume stays)."""
        self.executor.delete(check_run_name(name))

    def wait(self, name: str, timeout: float | None = None) -> RunStatus:
        """Block until Succeeded, Failed or Cancelled; TimeoutError after `timeout` seconds."""
        return self.executor.wait(check_run_name(name), timeout)


def cluster_gpu_profiles(job_settings: Path) -> tuple[GpuProfile, ...]:
    """The GPU profiles the controller plans cluster runs against, from its job settings file
    (the chart's ConfigMap, mounted where the UI can read it)."""
    from voxtune.controller.settings import JobSettings

    return tuple(JobSettings.load(job_settings).gpu_profiles)
