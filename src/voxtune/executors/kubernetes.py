"""Kubernetes executor: the same verbs as the local executor, on FineTuneRun objects.

    voxtune submit jobs/finetunerun.yaml --backend kubernetes --namespace ml
    voxtune logs my-voice --backend kubernetes --follow
    voxtune cancel my-voice --backend kubernetes

submit creates the FineTuneRun (the controller turns it into Jobs); submitting the same spec
again is a no-op and a different spec under an existing name is refused, as locally. Logs come
from the step's pod while the step runs, and from the run folder afterwards when this process
sees the shared volume (VOXTUNE_HOME = its mount, as in the UI pod), else from the pod for as
long as the finished Job is kept. cancel annotates the run (voxtune.io/cancel), the controller
deletes its Jobs; delete removes the run and, through ownerReferences, its Jobs and pods (the
run folder on the volume stays).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from voxtune.controller.crd import (
    CANCEL_ANNOTATION,
    GROUP,
    PLURAL,
    RUN_LABEL,
    STEP_LABEL,
    VERSION,
    FineTuneRunStatus,
    run_object,
    run_spec,
    run_status,
)
from voxtune.controller.groups import node_of
from voxtune.controller.kubeapi import Gone, connect, raw, translate, watch_events
from voxtune.errors import UserError
from voxtune.run.layout import RunFolder
from voxtune.run.steps import TERMINAL
from voxtune.spec import RunSpec, Settings, format_validation_error, load_user_spec

POLL_S = 1.0


class KubernetesExecutor:
    def __init__(self, namespace: str | None = None, kubeconfig: str | Path | None = None,
                 api_client: ApiClient | None = None, settings: Settings | None = None):
        if api_client is None:
            api_client, namespace = connect(kubeconfig, namespace)
        self.namespace = namespace or "default"
        self.custom, self.core = CustomObjectsApi(api_client), CoreV1Api(api_client)
        self.settings = settings or Settings()

    def _where(self, name: str) -> str:
        return f"run {self.namespace}/{name}"

    def _get(self, name: str) -> dict[str, Any]:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace,
                                                            PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                raise UserError(f"no run named {name!r} in namespace {self.namespace}") from None
            raise translate(error, self._where(name)) from None

    def load(self, path: Path) -> RunSpec:
        """Relative paths are left relative: they are on the shared volume, which the
        controller resolves, not this machine."""
        return load_user_spec(path, resolve_paths=False)

    def resource(self, spec: RunSpec) -> dict[str, Any]:
        """The FineTuneRun that `submit(spec)` creates."""
        return run_object(spec, self.namespace)

    def submit(self, spec: RunSpec) -> FineTuneRunStatus:
        """Create the FineTuneRun; the same spec again is a no-op."""
        try:
            created = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.resource(spec))
            return run_status(created)
        except ApiException as error:
            if error.status != 409:
                raise translate(error, self._where(spec.name)) from None
        existing = self._get(spec.name)
        try:
            same = run_spec(existing) == spec
        except ValidationError:
            same = False
        if not same:
            raise UserError(f"run {spec.name!r} already exists in namespace {self.namespace} "
                            "with a different spec; pick another name or `voxtune delete` it")
        return run_status(existing)

    def status(self, name: str) -> FineTuneRunStatus:
        return run_status(self._get(name))

    def spec(self, name: str) -> RunSpec:
        try:
            return run_spec(self._get(name))
        except ValidationError as error:
            raise UserError(format_validation_error(error, self._where(name))) from None

    def list(self) -> list[FineTuneRunStatus]:
        try:
            document = raw(self.custom.list_namespaced_custom_object, GROUP, VERSION,
                           self.namespace, PLURAL)
        except Exception as error:
            raise translate(error, f"runs in namespace {self.namespace}") from None
        return sorted((run_status(run) for run in document.get("items", [])),
                      key=lambda status: status.name)

    def cancel(self, name: str) -> FineTuneRunStatus:
        """Ask the controller to stop the run (it deletes the run's Jobs)."""
        self._get(name)
        try:
            patched = self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name,
                {"metadata": {"annotations": {CANCEL_ANNOTATION: "true"}}})
        except ApiException as error:
            raise translate(error, self._where(name)) from None
        return run_status(patched)

    def delete(self, name: str) -> None:
        """Delete the run, its Jobs and pods (the run folder on the volume is kept)."""
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                        name, propagation_policy="Background")
        except ApiException as error:
            if error.status == 404:
                raise UserError(f"no run named {name!r} in namespace {self.namespace}") from None
            raise translate(error, self._where(name)) from None

    def wait(self, name: str, timeout: float | None = None) -> FineTuneRunStatus:
        """Block until the run has Succeeded, Failed or been Cancelled (watching the run)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self._get(name)
            if run_status(run).phase in TERMINAL:
                return run_status(run)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"run {name!r} is still {run_status(run).phase} after "
                                   f"{timeout:g} s")
            try:
                for event in watch_events(
                        self.custom.list_namespaced_custom_object, run["metadata"][
                            "resourceVersion"], int(min(left or 30, 30)) + 1, group=GROUP,
                        version=VERSION, namespace=self.namespace, plural=PLURAL,
                        field_selector=f"metadata.name={name}"):
                    if event["type"] == "DELETED":
                        raise UserError(f"run {name!r} was deleted while waiting for it")
                    if event["type"] != "BOOKMARK" and \
                            run_status(event["object"]).phase in TERMINAL:
                        return run_status(event["object"])
            except Gone:
                continue

    # logs ----------------------------------------------------------------------------------
    def _pods(self, name: str, step: str, node: int = 0) -> list[dict[str, Any]]:
        """The step's pods, oldest first; of a multi-node train step, those of `node` (a
        one-node step's pods have no completion index)."""
        document = raw(self.core.list_namespaced_pod, self.namespace,
                       label_selector=f"{RUN_LABEL}={name},{STEP_LABEL}={step}")
        pods = [pod for pod in document.get("items", []) if node_of(pod) in (None, node)]
        return sorted(pods, key=lambda pod: pod["metadata"].get("creationTimestamp") or "")

    def _pod_log(self, pod: str, container: str, **options: Any) -> Any:
        return self.core.read_namespaced_pod_log(pod, self.namespace, container=container,
                                                 **options)

    def _steps(self, name: str, step: str | None) -> tuple[dict[str, Any], list[str]]:
        run = self._get(name)
        try:
            steps = run_spec(run).steps
        except ValidationError:
            steps = []
        return run, [step] if step else steps

    def logs(self, name: str, step: str | None = None, node: int = 0) -> str:
        run, steps = self._steps(name, step)
        status, folder = run_status(run), RunFolder.named(self.settings.home, name)
        parts = []
        for current in steps:
            running = status.steps.get(current) and status.steps[current].state == "running"
            node_here = node if current == "train" else 0
            log, text = folder.log(current, node_here), None
            if log.exists() and not running:
                text = log.read_text(encoding="utf-8", errors="replace")
            for pod in reversed(self._pods(name, current, node_here) if text is None else []):
                try:
                    text = self._pod_log(pod["metadata"]["name"], container_of(pod, current))
                    break
                except ApiException as error:
                    if error.status not in (400, 404):  # not started / gone
                        raise translate(error, self._where(name)) from None
            if text is not None:
                parts.append(f"==> {current} <==\n{text}")
        return "".join(parts)

    def follow(self, name: str, step: str | None = None, node: int = 0) -> Iterator[str]:
        """Each step's log from its pod as it is written, step after step, until the run ends."""
        _, steps = self._steps(name, step)
        for current in steps:
            streamed: set[str] = set()
            while True:
                status = self.status(name)
                state = status.steps.get(current)
                node_here = node if current == "train" else 0
                pods = [p for p in self._pods(name, current, node_here) if p["metadata"]["name"]
                        not in streamed and p.get("status", {}).get("phase") != "Pending"]
                if pods:  # the newest that has started (a replaced pod continues the step)
                    pod = pods[-1]["metadata"]["name"]
                    streamed.add(pod)
                    yield from self._stream(pod, container_of(pods[-1], current))
                    continue
                if status.phase in TERMINAL or (state and state.state in ("succeeded",
                                                                         "failed")):
                    break
                time.sleep(POLL_S)

    def _stream(self, pod: str, container: str) -> Iterator[str]:
        try:
            response = self._pod_log(pod, container, follow=True, _preload_content=False)
        except ApiException as error:
            if error.status in (400, 404):
                return
            raise translate(error, self._where(pod)) from None
        try:
            for chunk in response.stream(amt=None, decode_content=True):
                if chunk:
                    yield chunk.decode("utf-8", errors="replace")
        finally:
            response.release_conn()


def container_of(pod: dict[str, Any], step: str) -> str:
    """The step's container: named after the step, or `node` in a TrainJob's pods (the
    Trainer's runtime names it)."""
    containers = (pod.get("spec") or {}).get("containers") or []
    names = [c.get("name") for c in containers if isinstance(c, dict)]
    return step if step in names or not names else str(names[0])
