"""`voxtune.Client`: submit and watch runs from Python, on this machine or on a cluster.

    from voxtune import Client

    client = Client()                                   # local: VOXTUNE_HOME/runs
    client = Client("kubernetes", namespace="ml")       # FineTuneRuns via your kubeconfig
    status = client.submit("jobs/finetunerun.yaml")     # a file, a dict or a RunSpec
    for chunk in client.follow(status.name):
        print(chunk, end="")
    final = client.wait(status.name, timeout=3600)
    print(final.phase, final.metrics.get("wer"))

Both backends share the verbs and the status model (voxtune.runs.RunStatus; the Kubernetes
backend's FineTuneRunStatus adds reason, progress, conditions). submit returns at once; the
local backend runs the steps in a background process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from voxtune.errors import UserError
from voxtune.runs import RunStatus, check_run_name
from voxtune.spec import RunSpec, Settings, format_validation_error, load_spec

Backend = Literal["local", "kubernetes"]


class Client:
    def __init__(self, backend: Backend = "local", *, namespace: str | None = None,
                 kubeconfig: str | Path | None = None, home: str | Path | None = None,
                 api_client: Any = None):
        """`home` is VOXTUNE_HOME (local runs; for kubernetes, where the shared volume is
        mounted, if it is, to read finished steps' logs). `api_client`: a configured
        kubernetes.client.ApiClient instead of the kubeconfig."""
        settings = Settings(home=Path(home)) if home else Settings()
        self.backend = backend
        if backend == "local":
            from voxtune.controller.local import LocalExecutor

            self.executor: Any = LocalExecutor(settings)
        elif backend == "kubernetes":
            from voxtune.controller.kube_executor import KubernetesExecutor

            self.executor = KubernetesExecutor(namespace, kubeconfig, api_client, settings)
        else:
            raise UserError(f"unknown backend {backend!r}; use 'local' or 'kubernetes'")

    def load(self, spec: RunSpec | dict[str, Any] | str | Path) -> RunSpec:
        """A RunSpec from a file (RunSpec or FineTuneRun YAML), a mapping or a RunSpec."""
        if isinstance(spec, RunSpec):
            return spec
        if isinstance(spec, dict):
            try:
                return RunSpec.model_validate(spec)
            except ValidationError as error:
                raise UserError(format_validation_error(error, "spec")) from None
        if self.backend == "kubernetes":  # relative paths are on the cluster's volume
            from voxtune.controller.kube_executor import cluster_spec_file

            return cluster_spec_file(Path(spec))
        return load_spec(Path(spec))

    def submit(self, spec: RunSpec | dict[str, Any] | str | Path) -> RunStatus:
        """Start a run and return its status at once; the same spec again is a no-op."""
        if self.backend == "local":
            return self.executor.submit(self.load(spec), echo=lambda line: None, detach=True)
        return self.executor.submit(self.load(spec))

    def status(self, name: str) -> RunStatus:
        return self.executor.status(check_run_name(name))

    def spec(self, name: str) -> RunSpec:
        """The spec a run was submitted with."""
        return self.executor.spec(check_run_name(name))

    def list(self) -> list[RunStatus]:
        return self.executor.list()

    def logs(self, name: str, step: str | None = None) -> str:
        return self.executor.logs(check_run_name(name), step)

    def follow(self, name: str, step: str | None = None) -> Iterator[str]:
        """The logs as they are written, until the run (or `step`) ends."""
        return self.executor.follow(check_run_name(name), step)

    def cancel(self, name: str) -> RunStatus:
        return self.executor.cancel(check_run_name(name))

    def delete(self, name: str) -> None:
        """Remove the run. Local: its folder too. Kubernetes: the FineTuneRun, Jobs and pods
        (the run folder on the shared volume stays)."""
        self.executor.delete(check_run_name(name))

    def wait(self, name: str, timeout: float | None = None) -> RunStatus:
        """Block until Succeeded, Failed or Cancelled; TimeoutError after `timeout` seconds."""
        return self.executor.wait(check_run_name(name), timeout)
