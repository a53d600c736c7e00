"""A loopback emulator of the Kubernetes API server, for tests (standard library + PyYAML).

The official ``kubernetes`` client and ``kubectl`` talk to it over real HTTP, so the code under
test runs unchanged; the tests play the Job controller, the scheduler and the kubelet through the
Python API below (``complete_job``, ``fail_job``, ``add_job_pod``, ``unschedulable`` …).

Why not PyPI ``kmock``: it is asyncio-based while the official client is synchronous (its server
would have to run in a thread with its own loop anyway), its pytest plugin pulls in pytest-asyncio
for the whole suite, and it lacks most of what a controller relies on (uid, resourceVersion
conflicts, watch from a resourceVersion, label/field selectors, generateName, the /status
subresource, garbage collection, pod logs) — a subclass would have replaced nearly all of it.

What is emulated, on purpose, like the real API server:
- one global, increasing resourceVersion; a write that changes nothing keeps it (no watch event);
- PUT/patch with a stale resourceVersion → 409 Conflict; POST of an existing name → 409;
- ``/status`` is the only way to change ``.status`` (of Jobs, Pods and custom resources), and the
  main endpoint ignores ``.status``; ``metadata.generation`` grows on every non-status change;
- strategic-merge-patch is rejected (415) for custom resources, as the real server does;
- Job defaults and checks (labels, selector, podReplacementPolicy) and immutable ``spec.template``;
- deleting a Job without ``propagationPolicy`` orphans its pods (batch/v1's legacy default), with
  ``Background``/``Foreground`` the owned objects go too (ownerReferences, recursively);
- watch: JSON lines over chunked HTTP, from a resourceVersion, ``timeoutSeconds``, 410 Gone when
  the history has been compacted (``compact()``);
- reading the log of a pod that has not started → 400, as the kubelet answers;
- for kubectl: discovery, server-side Table printing (CRD printer columns), a minimal OpenAPI v3.
Known simplifications: strategic merge = JSON merge patch (lists are replaced, not merged by key),
no schema validation or pruning of custom resources, no authn/authz, watches filter by the object's
current labels (no synthetic DELETED when an object stops matching a selector).
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import json
import random
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
CRDS = "customresourcedefinitions.apiextensions.k8s.io"
WATCH_TICK_S = 0.5  # how often an idle watch/log stream checks for a stop or a gone client


@dataclass(frozen=True, eq=False)
class Resource:
    """One served resource type (what discovery lists and the URL router resolves)."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    has_status: bool = True  # a /status subresource; the main endpoint then ignores .status
    custom: bool = False  # served from a CRD: no strategic merge, DELETE returns the object
    short_names: tuple[str, ...] = ()
    columns: tuple[dict, ...] = ()  # CRD additionalPrinterColumns (for `kubectl get`)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:  # how the real server names it in messages: jobs.batch
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


FINETUNERUN = Resource("voxtune.io", "v1alpha1", "finetuneruns", "FineTuneRun", custom=True,
                       short_names=("ftr",))
# The multi-node engines, served when a test passes them (as if Kubeflow Trainer or JobSet were
# installed); the tests play their controllers with the group methods below.
TRAINJOB = Resource("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob", custom=True)
JOBSET = Resource("jobset.x-k8s.io", "v1alpha2", "jobsets", "JobSet", custom=True)
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
BUILTIN = (
    Resource("", "v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",)),
    Resource("", "v1", "pods", "Pod", short_names=("po",)),
    Resource("", "v1", "events", "Event", has_status=False, short_names=("ev",)),
    Resource("", "v1", "configmaps", "ConfigMap", has_status=False, short_names=("cm",)),
    Resource("batch", "v1", "jobs", "Job"),
    Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions",
             "CustomResourceDefinition", namespaced=False, short_names=("crd", "crds")),
)


class ApiError(Exception):
    """Becomes a meta/v1 Status response, the shape the client turns into ApiException."""

    def __init__(self, code: int, reason: str, message: str,
                 res: Resource | None = None, name: str | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.res, self.name = code, reason, message, res, name

    def status(self) -> dict:
        details = {"name": self.name, "group": self.res.group, "kind": self.res.plural} \
            if self.res else {}
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code,
                "details": {k: v for k, v in details.items() if v}}


def _not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found', res, name)


def _invalid(res: Resource, name: str, detail: str) -> ApiError:
    kind = f"{res.kind}.{res.group}" if res.group else res.kind
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {detail}', res, name)


@dataclass
class Reply:
    code: int = 200
    body: Any = None  # JSON-able, or str for text/plain
    stream: Iterator[bytes] | None = None  # chunked streaming (watch, log follow)
    content_type: str = "application/json"


@dataclass
class Change:
    """One entry of the watch history (what etcd would keep until compaction)."""

    rv: int
    resource: str  # Resource.qualified
    type: str  # ADDED / MODIFIED / DELETED
    obj: dict


@dataclass
class RequestRecord:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    code: int = 0


# --- patches and selectors ------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge, null deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _strip_directives(patch: Any) -> Any:
    """Drop strategic-merge directives ($setElementOrder/…, $patch, $retainKeys) that kubectl
    sends, so treating the patch as a merge patch does not store them as fields."""
    if isinstance(patch, dict):
        return {k: _strip_directives(v) for k, v in patch.items() if not k.startswith("$")}
    if isinstance(patch, list):
        return [_strip_directives(v) for v in patch]
    return patch


def json_patch(doc: Any, ops: list[dict]) -> Any:
    """RFC 6902 subset: add, remove, replace, test (enough for optimistic-lock patches)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~")
                          for p in op["path"].split("/")[1:]]
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        index: Any = last
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
        if op["op"] == "test":
            if node[index] != op["value"]:
                raise ApiError(422, "Invalid", f"the test operation failed at {op['path']}")
        elif op["op"] == "remove":
            del node[index]
        elif op["op"] == "add" and isinstance(node, list):
            node.insert(index, op["value"])
        elif op["op"] in ("add", "replace"):
            node[index] = op["value"]
        else:
            raise ApiError(400, "BadRequest", f"json patch op {op['op']!r} is not supported")
    return doc


def parse_label_selector(text: str) -> list[tuple[str, str, set[str]]]:
    """`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a` joined by commas."""
    requirements = []
    for part in re.split(r",(?![^()]*\))", text or ""):
        part = part.strip()
        if not part:
            continue
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", part):
            values = {v.strip() for v in m[3].split(",") if v.strip()}
            requirements.append((m[1], m[2], values))
        elif m := re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)", part):
            requirements.append((m[1], "notin" if m[2] == "!=" else "in", {m[3]}))
        elif m := re.fullmatch(r"(!?)\s*([\w./-]+)", part):
            requirements.append((m[2], "!" if m[1] else "exists", set()))
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
    return requirements


def labels_match(labels: dict[str, str], requirements: list[tuple[str, str, set[str]]]) -> bool:
    for key, op, values in requirements:
        present = key in labels
        ok = {"in": present and labels.get(key) in values,
              "notin": not present or labels.get(key) not in values,
              "exists": present, "!": not present}[op]
        if not ok:
            return False
    return True


def _lookup(obj: Any, path: str) -> Any:
    """A dotted path with optional [n] indexes: .status.conditions[0].type (printer columns)."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            obj = obj[int(part[1:-1])] if isinstance(obj, list) and len(obj) > int(part[1:-1]) \
                else None
        else:
            obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def fields_match(obj: dict, selector: str) -> bool:
    """Field selectors (`metadata.name=x`, `involvedObject.name=x`, `status.phase!=Failed`).
    Any dotted field is accepted, a little more than the real server allows per resource."""
    for part in filter(None, (p.strip() for p in (selector or "").split(","))):
        m = re.fullmatch(r"([\w.]+)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector: {part!r}")
        value = _lookup(obj, m[1])
        equal = ("" if value is None else str(value)) == m[3]
        if equal != (m[2] != "!="):
            return False
    return True


_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def _label_problem(key: str, value: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN.fullmatch(prefix)):
        return f"metadata.labels: Invalid value: {key!r}: prefix must be a DNS subdomain"
    if not name or len(name) > 63 or not _LABEL_VALUE.fullmatch(name):
        return f"metadata.labels: Invalid value: {key!r}: name part must be a valid label"
    if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        return f"metadata.labels: Invalid value: {value!r}: must be no more than 63 characters " \
               "of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
    return None


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    seconds = int((datetime.now(timezone.utc) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


# --- the emulator ---------------------------------------------------------------------------

class KubeEmulator:
    """In-memory API server on 127.0.0.1. Use as a context manager or start()/stop().

    All state lives in ``_objects`` behind one condition variable, so HTTP handlers (one thread
    per connection), watch streams and the test's own calls see a single consistent history.
    """

    def __init__(self, custom_resources: tuple[Resource, ...] = (FINETUNERUN,),
                 namespaces: tuple[str, ...] = ("default",), history_limit: int = 100_000) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._resources: dict[str, Resource] = {}
        self._objects: dict[tuple[str, str, str], dict] = {}
        self._history: list[Change] = []
        self._compacted = 0  # watches from an older resourceVersion get 410 Gone
        self._history_limit = history_limit
        self._rv = 0
        self._logs: dict[tuple[str, str, str], str] = {}
        self._faults: list[tuple[str | None, str, int, list[int]]] = []
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self._stopping = False
        self.requests: list[RequestRecord] = []
        for res in (*BUILTIN, *custom_resources):
            self._resources[res.qualified] = res
        for ns in namespaces:
            self.create("namespaces", {"metadata": {"name": ns}})

    # lifecycle ----------------------------------------------------------------------------
    def start(self) -> KubeEmulator:
        emulator = self

        class Handler(_Handler):
            kube = emulator

        self._stopping = False
        class Server(ThreadingHTTPServer):
            # a real API server takes bursts of clients; socketserver's backlog of 5 resets
            # connections when a test opens many at once
            request_queue_size = 128

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         name="kube-emulator", daemon=True).start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()  # ends watch and log streams
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            for conn in list(self._connections):  # idle keep-alive connections
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._server = None

    def __enter__(self) -> KubeEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server, "start() the emulator first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def api_client(self) -> Any:
        """A kubernetes.client.ApiClient pointed at this emulator (no auth, no TLS)."""
        from kubernetes import client

        configuration = client.Configuration(host=self.url)
        return client.ApiClient(configuration)

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig for kubectl / ``kubernetes.config.load_kube_config`` (set KUBECONFIG)."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": "emulator"}}],
            "contexts": [{"name": "emulator", "context": {
                "cluster": "emulator", "user": "emulator", "namespace": namespace}}],
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # Python API for tests: generic objects ----------------------------------------------
    def resource(self, name: str) -> Resource:
        """By plural (`jobs`), qualified plural (`jobs.batch`) or kind (`Job`)."""
        with self._cond:
            for res in self._resources.values():
                if name in (res.plural, res.qualified, res.kind):
                    return res
        raise KeyError(f"unknown resource {name!r}")

    def get(self, resource: str, namespace: str | None, name: str) -> dict | None:
        res = self.resource(resource)
        with self._cond:
            obj = self._objects.get((res.qualified, namespace or "", name))
            return copy.deepcopy(obj)

    def list(self, resource: str, namespace: str | None = None, label_selector: str = "",
             field_selector: str = "") -> list[dict]:
        res = self.resource(resource)
        with self._cond:
            return copy.deepcopy(self._select(res, namespace, label_selector, field_selector))

    def create(self, resource: str, obj: dict, namespace: str | None = None,
               keep_status: bool = True) -> dict:
        """Create as the API server would, but (by default) keeping the given .status."""
        res = self.resource(resource)
        ns = (namespace or obj.get("metadata", {}).get("namespace")) if res.namespaced else None
        with self._cond:
            return copy.deepcopy(self._create(res, ns, obj, keep_status=keep_status))

    def patch(self, resource: str, namespace: str | None, name: str, patch: dict,
              status: bool = False) -> dict:
        """JSON-merge-patch the object (or, with status=True, its /status subresource)."""
        res = self.resource(resource)
        with self._cond:
            old = self._get(res, namespace, name)
            new = merge_patch(old, patch)
            return copy.deepcopy(self._update(res, old, new, "status" if status else None))

    def delete(self, resource: str, namespace: str | None, name: str,
               propagation: str = "Background") -> None:
        res = self.resource(resource)
        with self._cond:
            self._delete(res, self._get(res, namespace, name), propagation)

    def register_crd(self, crd: dict) -> Resource:
        """Serve the resource a CustomResourceDefinition describes (as creating it over HTTP)."""
        self.create("customresourcedefinitions", crd, keep_status=False)
        return self.resource(f"{crd['spec']['names']['plural']}.{crd['spec']['group']}")

    # Python API for tests: playing the Job controller, scheduler and kubelet -----------
    def job_pods(self, namespace: str, job: str) -> list[dict]:
        return self.list("pods", namespace, f"{JOB_NAME_LABEL}={job}")

    def add_job_pod(self, namespace: str, job: str, phase: str = "Pending",
                    conditions: list[dict] | None = None, exit_code: int | None = None,
                    reason: str | None = None, log: str | None = None,
                    name: str | None = None) -> dict:
        """A pod as the Job controller makes it: template labels + job-name, controller owner."""
        owner = self.get("jobs", namespace, job)
        if owner is None:
            raise KeyError(f"job {namespace}/{job} does not exist")
        template = owner["spec"]["template"]
        meta = copy.deepcopy(template.get("metadata", {}))
        meta.update(namespace=namespace, ownerReferences=[{
            "apiVersion": "batch/v1", "kind": "Job", "name": job,
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}])
        meta["name" if name else "generateName"] = name or f"{job}-"
        pod = {"metadata": meta, "spec": copy.deepcopy(template["spec"]),
               "status": self._pod_status(template["spec"], phase, conditions, exit_code, reason)}
        pod = self.create("pods", pod)
        if log is not None:
            self.set_pod_log(namespace, pod["metadata"]["name"], log)
        return pod

    def add_group_pods(self, namespace: str, resource: str, name: str,
                       phase: str = "Running") -> list[dict]:
        """The node pods of a JobSet (or of the JobSet a TrainJob's runtime makes): one per
        node, with the template's labels, the JobSet's name, the completion index and the
        attempt (status.restarts), as the JobSet and Job controllers make them."""
        group = self._need(resource, namespace, name)
        attempt = str((group.get("status") or {}).get("restarts", 0))
        if group["kind"] == "JobSet":
            (replicated,) = group["spec"]["replicatedJobs"]
            template = replicated["template"]["spec"]["template"]
            nodes, labels = replicated["template"]["spec"]["parallelism"], dict(
                template["metadata"]["labels"])
            pod_spec = template["spec"]
        else:
            trainer = group["spec"]["trainer"]
            (override,) = group["spec"]["podTemplateOverrides"]
            nodes, labels = trainer["numNodes"], dict(override["metadata"]["labels"])
            pod_spec = {"containers": [{"name": "node", "image": trainer["image"]}]}
        pods = []
        for node in range(nodes):
            meta = {"name": f"{name}-node-0-{node}-a{attempt}", "namespace": namespace,
                    "labels": {**labels, JOBSET_NAME_LABEL: name, COMPLETION_INDEX: str(node),
                               "jobset.sigs.k8s.io/restart-attempt": attempt},
                    "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                         "name": f"{name}-node-0", "uid": f"{name}-{attempt}",
                                         "controller": True}]}
            pods.append(self.create("pods", {"metadata": meta, "spec": copy.deepcopy(pod_spec),
                                             "status": self._pod_status(pod_spec, phase, None,
                                                                        None, None)}))
        return pods

    def restart_group(self, namespace: str, resource: str, name: str) -> dict:
        """What the JobSet controller does when a node's Job fails: every live pod of the group
        goes, status.restarts grows, and new pods (of the next attempt) are made."""
        for pod in self.list("pods", namespace, f"{JOBSET_NAME_LABEL}={name}"):
            if pod["status"]["phase"] not in ("Succeeded", "Failed"):
                self.set_pod_phase(namespace, pod["metadata"]["name"], "Failed", exit_code=1,
                                   reason="Error")
        restarts = (self._need(resource, namespace, name).get("status") or {}).get(
            "restarts", 0) + 1
        group = self.patch(resource, namespace, name, {"status": {"restarts": restarts}},
                           status=True)
        self.add_group_pods(namespace, resource, name)
        return group

    def finish_group(self, namespace: str, resource: str, name: str, condition: str,
                     reason: str, pod_exit_codes: dict[int, int] | None = None) -> dict:
        """The group's pods end (exit code per node, default 0 or 1) and its condition is set:
        Completed/Complete or Failed, as the JobSet or Trainer controller writes it."""
        ok = condition in ("Completed", "Complete")
        for pod in self.list("pods", namespace, f"{JOBSET_NAME_LABEL}={name}"):
            if pod["status"]["phase"] in ("Succeeded", "Failed"):
                continue
            node = int(pod["metadata"]["labels"][COMPLETION_INDEX])
            code = (pod_exit_codes or {}).get(node, 0 if ok else 1)
            self.set_pod_phase(namespace, pod["metadata"]["name"],
                               "Succeeded" if code == 0 else "Failed", exit_code=code,
                               reason="Completed" if code == 0 else "Error")
        return self.patch(resource, namespace, name, {"status": {"conditions": [{
            "type": condition, "status": "True", "reason": reason, "message": reason,
            "lastTransitionTime": _now()}]}}, status=True)

    def set_pod_phase(self, namespace: str, pod: str, phase: str,
                      conditions: list[dict] | None = None, exit_code: int | None = None,
                      reason: str | None = None) -> dict:
        spec = self._need("pods", namespace, pod)["spec"]
        status = self._pod_status(spec, phase, conditions, exit_code, reason)
        return self.patch("pods", namespace, pod, {"status": status}, status=True)

    def disrupt_pod(self, namespace: str, pod: str,
                    reason: str = "PreemptionByScheduler") -> dict:
        """A preempted/evicted pod: Failed with condition DisruptionTarget, exit code 137."""
        condition = {"type": "DisruptionTarget", "status": "True", "reason": reason,
                     "message": "Preempted in order to admit critical pod",
                     "lastTransitionTime": _now()}
        return self.set_pod_phase(namespace, pod, "Failed", [condition], exit_code=137,
                                  reason="Error")

    def unschedulable(self, namespace: str, pod: str, message: str = (
            "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are "
            "available: 3 No preemption victims found for incoming pod.")) -> dict:
        """The scheduler's verdict: PodScheduled=False/Unschedulable + a FailedScheduling event."""
        condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": message, "lastTransitionTime": _now()}
        self.set_pod_phase(namespace, pod, "Pending", [condition])
        return self.add_event(namespace, ("Pod", pod), "FailedScheduling", message,
                              component="default-scheduler")

    def image_pull_backoff(self, namespace: str, pod: str, message: str | None = None) -> dict:
        """The kubelet cannot pull the image: container waiting in ImagePullBackOff + event."""
        obj = self._need("pods", namespace, pod)
        image = obj["spec"]["containers"][0].get("image", "")
        message = message or f'Failed to pull image "{image}": not found'
        self.set_pod_phase(namespace, pod, "Pending", reason="ImagePullBackOff")
        return self.add_event(namespace, ("Pod", pod), "Failed", message)

    def add_event(self, namespace: str, involved: tuple[str, str] | dict, reason: str,
                  message: str, type: str = "Warning", component: str = "kubelet") -> dict:
        """A core/v1 Event about (kind, name) or about an object dict."""
        if isinstance(involved, dict):
            meta = involved["metadata"]
            ref = {"apiVersion": involved.get("apiVersion"), "kind": involved.get("kind"),
                   "name": meta["name"], "namespace": meta.get("namespace"), "uid": meta["uid"]}
        else:
            kind, name = involved
            try:
                obj = self.get(kind, namespace, name)
            except KeyError:  # a kind we do not serve
                obj = None
            ref = {"kind": kind, "name": name, "namespace": namespace,
                   **({"uid": obj["metadata"]["uid"], "apiVersion": obj["apiVersion"]}
                      if obj else {})}
        now = _now()
        event = {"metadata": {"generateName": f"{ref['name']}."}, "involvedObject": ref,
                 "reason": reason, "message": message, "type": type, "count": 1,
                 "firstTimestamp": now, "lastTimestamp": now, "source": {"component": component},
                 "reportingComponent": component}
        return self.create("events", event, namespace)

    def _live_pods(self, namespace: str, job: str) -> list[dict]:
        """The job's pods that have not terminated, or a new one (the Job controller's
        replacement, e.g. after a disruption)."""
        pods = [p for p in self.job_pods(namespace, job)
                if p["status"].get("phase") not in ("Succeeded", "Failed")]
        return pods or [self.add_job_pod(namespace, job)]

    def start_job(self, namespace: str, job: str) -> dict:
        """Job is running: its live pods (one is made if none) Running, status.active."""
        pods = self._live_pods(namespace, job)
        for pod in pods:
            self.set_pod_phase(namespace, pod["metadata"]["name"], "Running")
        return self.patch("jobs", namespace, job, {"status": {
            "active": len(pods), "ready": len(pods), "startTime": _now()}}, status=True)

    def complete_job(self, namespace: str, job: str) -> dict:
        """Job succeeded: its live pods (one is made if none) Succeeded and the conditions
        SuccessCriteriaMet + Complete, as the Job controller of 1.31+ writes them."""
        for pod in self._live_pods(namespace, job):
            self.set_pod_phase(namespace, pod["metadata"]["name"], "Succeeded", exit_code=0,
                               reason="Completed")
        now = _now()
        return self.patch("jobs", namespace, job, {"status": {
            "active": None, "ready": 0, "succeeded": 1, "startTime": now, "completionTime": now,
            "conditions": [self._job_condition("SuccessCriteriaMet", "CompletionsReached",
                                               "Reached expected number of succeeded pods"),
                           self._job_condition("Complete", "CompletionsReached",
                                               "Reached expected number of succeeded pods")]}},
            status=True)

    def fail_job(self, namespace: str, job: str, reason: str = "BackoffLimitExceeded",
                 exit_code: int = 1, message: str | None = None) -> dict:
        """Job failed: its live pods (one is made if none) Failed with exit_code and the
        conditions FailureTarget + Failed with reason (e.g. PodFailurePolicy). status.failed
        counts the failed pods without a DisruptionTarget condition."""
        for pod in self._live_pods(namespace, job):
            self.set_pod_phase(namespace, pod["metadata"]["name"], "Failed",
                               exit_code=exit_code, reason="Error")
        failed = [p for p in self.job_pods(namespace, job) if p["status"]["phase"] == "Failed"
                  and not any(c["type"] == "DisruptionTarget" for c in p["status"]["conditions"])]
        message = message or f"Job has reached the specified backoff limit ({reason})"
        return self.patch("jobs", namespace, job, {"status": {
            "active": None, "ready": 0, "failed": len(failed), "startTime": _now(),
            "conditions": [self._job_condition("FailureTarget", reason, message),
                           self._job_condition("Failed", reason, message)]}}, status=True)

    def set_pod_log(self, namespace: str, pod: str, text: str, container: str | None = None,
                    append: bool = False) -> None:
        with self._cond:
            key = (namespace, pod, container or self._first_container(namespace, pod))
            self._logs[key] = (self._logs.get(key, "") if append else "") + text
            self._cond.notify_all()  # wakes `follow` readers

    # Python API for tests: faults and history -------------------------------------------
    def fail_next(self, method: str | None, path_regex: str, code: int = 500,
                  times: int = 1) -> None:
        """The next `times` matching requests get a Status error (tests of retry/backoff)."""
        with self._cond:
            self._faults.append((method, path_regex, code, [times]))

    def compact(self) -> None:
        """Forget the watch history, as etcd compaction does: older resourceVersions → 410."""
        with self._cond:
            self._compacted, self._history = self._rv, []

    def requests_matching(self, method: str | None = None, path_regex: str = "") -> list[
            RequestRecord]:
        with self._cond:
            return [r for r in self.requests
                    if (method is None or r.method == method) and re.search(path_regex, r.path)]

    @property
    def resource_version(self) -> int:
        return self._rv

    # internals: storage -------------------------------------------------------------------
    def _need(self, resource: str, namespace: str | None, name: str) -> dict:
        obj = self.get(resource, namespace, name)
        if obj is None:
            raise KeyError(f"{resource} {namespace}/{name} does not exist")
        return obj

    def _get(self, res: Resource, ns: str | None, name: str) -> dict:
        obj = self._objects.get((res.qualified, ns or "", name))
        if obj is None:
            raise _not_found(res, name)
        return obj

    def _select(self, res: Resource, ns: str | None, labels: str = "",
                fields: str = "") -> list[dict]:
        requirements = parse_label_selector(labels)
        mine = sorted((k, o) for k, o in self._objects.items() if k[0] == res.qualified)
        return [obj for (_, obj_ns, _), obj in mine if (not ns or obj_ns == ns)
                and labels_match(obj["metadata"].get("labels") or {}, requirements)
                and fields_match(obj, fields)]

    def _commit(self, res: Resource, obj: dict, event: str) -> dict:
        """Every write goes through here: new resourceVersion, history entry, wake watchers."""
        self._rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._rv)
        key = (res.qualified, meta.get("namespace", ""), meta["name"])
        if event == "DELETED":
            self._objects.pop(key, None)
        else:
            self._objects[key] = obj
        self._history.append(Change(self._rv, res.qualified, event, copy.deepcopy(obj)))
        if len(self._history) > self._history_limit:
            drop = len(self._history) - self._history_limit // 2
            self._compacted = self._history[drop - 1].rv
            del self._history[:drop]
        self._cond.notify_all()
        return obj

    def _create(self, res: Resource, ns: str | None, body: dict, keep_status: bool = False,
                dry_run: bool = False) -> dict:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            if meta.get("namespace", ns) != ns:
                raise ApiError(400, "BadRequest", "the namespace of the provided object does "
                                                  "not match the namespace sent on the request")
            if ("namespaces", "", ns) not in self._objects:
                raise _not_found(self._resources["namespaces"], ns or "")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise _invalid(res, "", "metadata.name: Required value: name or generateName "
                                        "is required")
            while not meta.get("name") or (res.qualified, ns or "", meta["name"]) in \
                    self._objects:
                meta["name"] = meta["generateName"] + "".join(
                    random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        name = meta["name"]
        if len(name) > 253 or not _SUBDOMAIN.fullmatch(name):
            raise _invalid(res, name, f"metadata.name: Invalid value: {name!r}: a lowercase "
                                      "RFC 1123 subdomain must consist of lower case "
                                      "alphanumeric characters, '-' or '.'")
        if (res.qualified, ns or "", name) in self._objects:
            raise ApiError(409, "AlreadyExists", f'{res.qualified} "{name}" already exists',
                           res, name)
        if obj.get("kind", res.kind) != res.kind:
            raise ApiError(400, "BadRequest", f"a {obj['kind']} cannot be created as {res.kind}")
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        if res.has_status and not keep_status:
            obj.pop("status", None)  # only /status writes status
        meta.pop("resourceVersion", None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        self._defaults_and_checks(res, obj, None)
        if dry_run:
            return obj
        if res.qualified == CRDS:
            self._serve_crd(obj)
        return self._commit(res, obj, "ADDED")

    def _update(self, res: Resource, old: dict, new: dict, sub: str | None,
                dry_run: bool = False) -> dict:
        """PUT and every patch flavour end here, with the merged object."""
        new = copy.deepcopy(new)
        old_meta, meta = old["metadata"], new.setdefault("metadata", {})
        if meta.get("name", old_meta["name"]) != old_meta["name"]:
            raise ApiError(400, "BadRequest", f"the name of the object ({meta.get('name')}) does "
                                              f"not match the name on the URL ({old_meta['name']})")
        if meta.get("resourceVersion") and meta["resourceVersion"] != old_meta["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} '
                           f'"{old_meta["name"]}": the object has been modified; please apply '
                           "your changes to the latest version and try again", res,
                           old_meta["name"])
        if res.has_status and sub == "status":  # /status changes .status only
            status, new = new.get("status"), copy.deepcopy(old)
            new.pop("status", None)
            if status is not None:
                new["status"] = status
        elif res.has_status:  # the main endpoint ignores .status
            new.pop("status", None)
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        meta = new["metadata"]
        for key in ("uid", "creationTimestamp", "namespace", "generation", "resourceVersion",
                    "deletionTimestamp"):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        new["apiVersion"], new["kind"] = res.api_version, res.kind
        self._defaults_and_checks(res, new, old)
        if new == old:
            return old  # a no-op write: no new resourceVersion, no watch event

        def body(o: dict) -> dict:
            return {k: v for k, v in o.items() if k not in ("metadata", "status")}

        if body(new) != body(old):
            meta["generation"] = old_meta.get("generation", 1) + 1
        if dry_run:
            return new
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._delete(res, new, "Background")  # last finalizer removed
        if res.qualified == CRDS:
            self._serve_crd(new)
        return self._commit(res, new, "MODIFIED")

    def _delete(self, res: Resource, obj: dict, propagation: str | None,
                dry_run: bool = False) -> dict:
        if propagation is None:  # batch/v1 Jobs still default to orphaning their pods
            propagation = "Orphan" if res.qualified == "jobs.batch" else "Background"
        if dry_run:
            return obj
        if obj["metadata"].get("finalizers"):  # wait for whoever owns the finalizer
            if not obj["metadata"].get("deletionTimestamp"):
                obj = copy.deepcopy(obj)
                obj["metadata"]["deletionTimestamp"] = _now()
                self._commit(res, obj, "MODIFIED")
            return obj
        obj = self._commit(res, copy.deepcopy(obj), "DELETED")  # stored objects stay immutable
        self._collect_garbage(obj["metadata"]["uid"], propagation)
        if res.qualified == "namespaces":  # (the real one takes a while: Terminating)
            for key in [k for k in self._objects if k[1] == obj["metadata"]["name"]]:
                if key in self._objects:
                    self._delete(self._resources[key[0]], self._objects[key], "Background")
        if res.qualified == CRDS:
            served = self._resources.pop(f"{obj['spec']['names']['plural']}."
                                         f"{obj['spec']['group']}", None)
            for key in [k for k in self._objects if served and k[0] == served.qualified]:
                self._commit(served, self._objects[key], "DELETED")
        return obj

    def _collect_garbage(self, owner_uid: str, propagation: str) -> None:
        """What the garbage collector does after an owner goes (synchronously, here)."""
        live_uids = {o["metadata"]["uid"] for o in self._objects.values()}
        for key, obj in list(self._objects.items()):
            refs = obj["metadata"].get("ownerReferences") or []
            if key not in self._objects or not any(r.get("uid") == owner_uid for r in refs):
                continue
            res = self._resources[key[0]]
            if propagation == "Orphan":
                orphan = copy.deepcopy(obj)
                orphan["metadata"]["ownerReferences"] = [
                    r for r in refs if r.get("uid") != owner_uid] or None
                if orphan["metadata"]["ownerReferences"] is None:
                    del orphan["metadata"]["ownerReferences"]
                self._commit(res, orphan, "MODIFIED")
            elif not any(r.get("uid") in live_uids for r in refs if r.get("uid") != owner_uid):
                self._delete(res, obj, "Background")

    def _defaults_and_checks(self, res: Resource, obj: dict, old: dict | None) -> None:
        """The bits of server-side defaulting and validation a Job controller runs into."""
        meta = obj["metadata"]
        for key, value in (meta.get("labels") or {}).items():
            if problem := _label_problem(key, value):
                raise _invalid(res, meta["name"], problem)
        if res.qualified == "namespaces" and old is None:
            obj.setdefault("status", {"phase": "Active"})
        elif res.qualified == "pods" and old is None:
            obj.setdefault("status", {"phase": "Pending"})
        elif res.qualified == "jobs.batch":
            self._job_defaults(res, obj, old)

    def _job_defaults(self, res: Resource, job: dict, old: dict | None) -> None:
        name, spec = job["metadata"]["name"], job.setdefault("spec", {})
        if old is not None:
            if spec.get("template") != old["spec"].get("template"):
                raise _invalid(res, name, "spec.template: Invalid value: field is immutable")
            return
        pod_spec = spec.get("template", {}).get("spec", {})
        if not pod_spec.get("containers"):
            raise _invalid(res, name, "spec.template.spec.containers: Required value")
        if pod_spec.get("restartPolicy") not in ("Never", "OnFailure"):
            raise _invalid(res, name, "spec.template.spec.restartPolicy: Required value: valid "
                                      'values: "OnFailure", "Never"')
        if spec.get("podFailurePolicy"):
            if pod_spec["restartPolicy"] != "Never":
                raise _invalid(res, name, "spec.podFailurePolicy: Invalid value: only "
                                          '"Never" is supported with podFailurePolicy')
            if spec.setdefault("podReplacementPolicy", "Failed") != "Failed":
                raise _invalid(res, name, "spec.podReplacementPolicy: Not supported: when "
                                          'podFailurePolicy is specified, only "Failed" is '
                                          "supported")
        uid = job["metadata"]["uid"]
        for key, value in (("parallelism", 1), ("completions", 1), ("backoffLimit", 6),
                           ("completionMode", "NonIndexed"), ("suspend", False),
                           ("podReplacementPolicy", "TerminatingOrFailed")):
            spec.setdefault(key, value)
        spec["selector"] = {"matchLabels": {CONTROLLER_UID_LABEL: uid}}
        labels = spec["template"].setdefault("metadata", {}).setdefault("labels", {})
        labels.update({CONTROLLER_UID_LABEL: uid, JOB_NAME_LABEL: name, "controller-uid": uid,
                       "job-name": name})
        if len(name) > 63:
            raise _invalid(res, name, f"spec.template.labels: Invalid value: {name!r}: must be "
                                      "no more than 63 characters")
        job.setdefault("metadata", {}).setdefault("labels", dict(labels))
        job.setdefault("status", {})

    def _serve_crd(self, crd: dict) -> None:
        spec = crd["spec"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            names = spec["names"]
            res = Resource(spec["group"], version["name"], names["plural"], names["kind"],
                           namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                           has_status="status" in version.get("subresources", {}), custom=True,
                           short_names=tuple(names.get("shortNames", ())),
                           columns=tuple(version.get("additionalPrinterColumns", ())))
            self._resources[res.qualified] = res  # one version per group is enough here
        crd["status"] = {"acceptedNames": spec["names"], "storedVersions": [
            v["name"] for v in spec["versions"] if v.get("storage")], "conditions": [
            {"type": t, "status": "True", "reason": r, "lastTransitionTime": _now()}
            for t, r in (("NamesAccepted", "NoConflicts"), ("Established", "InitialNamesAccepted"))
        ]}

    def _first_container(self, namespace: str, pod: str) -> str:
        obj = self._objects.get(("pods", namespace, pod))
        containers = (obj or {}).get("spec", {}).get("containers") or [{"name": "main"}]
        return containers[0]["name"]

    @staticmethod
    def _pod_status(spec: dict, phase: str, conditions: list[dict] | None,
                    exit_code: int | None, reason: str | None) -> dict:
        state: dict = {"waiting": {"reason": reason or "ContainerCreating"}}
        if phase == "Running":
            state = {"running": {"startedAt": _now()}}
        elif exit_code is not None or phase in ("Succeeded", "Failed"):
            code = exit_code if exit_code is not None else (0 if phase == "Succeeded" else 1)
            state = {"terminated": {"exitCode": code, "reason": reason or "Error",
                                    "startedAt": _now(), "finishedAt": _now()}}
        return {"phase": phase, "conditions": conditions or [], "containerStatuses": [
            {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready":
             phase == "Running", "restartCount": 0, "started": phase == "Running",
             "state": state} for c in spec.get("containers", [])]}

    @staticmethod
    def _job_condition(kind: str, reason: str, message: str) -> dict:
        now = _now()
        return {"type": kind, "status": "True", "reason": reason, "message": message,
                "lastProbeTime": now, "lastTransitionTime": now}

    # internals: HTTP routing ------------------------------------------------------------
    def handle(self, record: RequestRecord, headers: Any, raw: bytes) -> Reply:
        method, path, query = record.method, record.path, record.query
        ctype = (headers.get("Content-Type") or "application/json").split(";")[0].strip()
        with self._cond:
            self.requests.append(record)
            for fault in self._faults:
                if fault[3][0] > 0 and fault[0] in (None, method) and re.search(fault[1], path):
                    fault[3][0] -= 1
                    raise ApiError(fault[2], "InternalError" if fault[2] >= 500 else
                                   "BadRequest", "injected fault")
        try:
            body = yaml.safe_load(raw) if ctype.endswith("yaml") and raw else \
                json.loads(raw) if raw else None
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"invalid body: {e}") from e
        if method == "GET" and (doc := self._discovery(path)) is not None:
            return Reply(body=doc)
        res, ns, name, sub = self._route(path)
        dry_run = query.get("dryRun") == "All"
        with self._cond:
            if method == "GET" and name is None:
                if query.get("watch") in ("true", "1", "True"):
                    return Reply(stream=self._watch(res, ns, query))
                return Reply(body=self._list_reply(res, ns, query, headers.get("Accept", "")))
            if method == "GET" and sub == "log":
                return self._log_reply(ns or "", name, query)
            if method == "GET":
                return Reply(body=self._maybe_table(res, [self._get(res, ns, name)], headers))
            if method == "POST" and name is None:
                return Reply(201, self._create(res, ns, body or {}, dry_run=dry_run))
            if method == "PUT" and name:
                return Reply(body=self._update(res, self._get(res, ns, name), body or {}, sub,
                                               dry_run))
            if method == "PATCH" and name:
                return Reply(body=self._patch(res, ns, name, ctype, body, sub, dry_run))
            if method == "DELETE":
                opts = body if isinstance(body, dict) else {}
                policy = query.get("propagationPolicy") or opts.get("propagationPolicy")
                if name is None:
                    for obj in self._select(res, ns, query.get("labelSelector", ""),
                                            query.get("fieldSelector", "")):
                        self._delete(res, obj, policy, dry_run)
                    return Reply(body={"kind": "Status", "apiVersion": "v1", "metadata": {},
                                       "status": "Success"})
                return Reply(body=self._delete_reply(res, ns, name, opts, policy, dry_run))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {path}")

    def _route(self, path: str) -> tuple[Resource, str | None, str | None, str | None]:
        m = re.fullmatch(r"/api/(v1)/(.+)", path) or re.fullmatch(r"/apis/([^/]+/[^/]+)/(.+)",
                                                                   path)
        if not m:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        group, _, version = m[1].rpartition("/")
        parts = m[2].split("/")
        with self._cond:
            served = {r.plural: r for r in self._resources.values()
                      if (r.group, r.version) == (group, version)}
        ns = None
        if len(parts) >= 3 and parts[0] == "namespaces" and parts[2] in served:
            ns, parts = parts[1], parts[2:]
        res = served.get(parts[0])
        sub = parts[2] if len(parts) > 2 else None
        if res is None or len(parts) > 3 or (ns and not res.namespaced) or \
                (sub and sub != ("log" if res.plural == "pods" else "status")) or \
                (sub == "status" and not res.has_status):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return res, ns, parts[1] if len(parts) > 1 else None, sub

    def _patch(self, res: Resource, ns: str | None, name: str, ctype: str, patch: Any,
               sub: str | None, dry_run: bool) -> dict:
        if ctype == "application/apply-patch+yaml":  # server-side apply: create or merge
            if (res.qualified, ns or "", name) not in self._objects:
                return self._create(res, ns, patch, dry_run=dry_run)
            ctype, patch = "application/merge-patch+json", _strip_directives(patch)
        old = self._get(res, ns, name)
        if ctype == "application/json-patch+json":
            new = json_patch(old, patch)
        elif ctype == "application/merge-patch+json":
            new = merge_patch(old, patch)
        elif ctype == "application/strategic-merge-patch+json" and not res.custom:
            new = merge_patch(old, _strip_directives(patch))  # lists replaced, not merged
        else:
            raise ApiError(415, "UnsupportedMediaType",
                           "the body of the request was in an unknown format - accepted media "
                           "types include: application/json-patch+json, "
                           "application/merge-patch+json, application/apply-patch+yaml")
        return self._update(res, old, new, sub, dry_run)

    def _delete_reply(self, res: Resource, ns: str | None, name: str, opts: dict,
                      policy: str | None, dry_run: bool) -> dict:
        obj = self._get(res, ns, name)
        for key in ("uid", "resourceVersion"):
            want = (opts.get("preconditions") or {}).get(key)
            if want and want != obj["metadata"][key]:
                raise ApiError(409, "Conflict", f"Precondition failed: {key} in precondition: "
                                                f"{want}, {key} in object meta: "
                                                f"{obj['metadata'][key]}", res, name)
        gone = self._delete(res, obj, policy, dry_run)
        if res.custom or res.plural == "pods":  # these answer with the object
            return gone
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": res.group, "kind": res.plural,
                            "uid": obj["metadata"]["uid"]}}

    def _list_reply(self, res: Resource, ns: str | None, query: dict, accept: str) -> dict:
        items = self._select(res, ns, query.get("labelSelector", ""),
                             query.get("fieldSelector", ""))
        start = int(query.get("continue") or 0)  # our continue token is an offset
        limit = int(query.get("limit") or 0) or len(items)
        page, rest = items[start:start + limit], items[start + limit:]
        if "as=Table" in accept:
            return self._table(res, page)
        meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
        if rest:
            meta.update({"continue": str(start + limit), "remainingItemCount": len(rest)})
        return {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta,
                "items": page}

    def _maybe_table(self, res: Resource, objs: list[dict], headers: Any) -> dict:
        return self._table(res, objs) if "as=Table" in headers.get("Accept", "") else objs[0]

    def _table(self, res: Resource, objs: list[dict]) -> dict:
        """Server-side printing for `kubectl get` (Name, CRD printer columns or a few
        built-in ones, Age)."""
        columns: list[tuple[str, str, Callable[[dict], Any]]] = [
            ("Name", "string", lambda o: o["metadata"]["name"])]
        if res.columns:
            for c in res.columns:
                path = c["jsonPath"]
                convert = _age if c.get("type") == "date" else (lambda v: v)
                columns.append((c["name"], c.get("type", "string"),
                                lambda o, p=path, f=convert: f(_lookup(o, p))))
        else:
            if res.plural == "pods":
                columns.append(("Status", "string", lambda o: o["status"].get("phase")))
            if res.plural == "jobs":
                columns.append(("Status", "string", lambda o: next((
                    c["type"] for c in o["status"].get("conditions", [])
                    if c["type"] in ("Complete", "Failed")), "Running")))
            columns.append(("Age", "string", lambda o: _age(o["metadata"].get(
                "creationTimestamp"))))
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": str(self._rv)},
                "columnDefinitions": [{"name": n, "type": t, "format": "name" if n == "Name"
                                       else "", "description": "", "priority": 0}
                                      for n, t, _ in columns],
                "rows": [{"cells": [get(o) for _, _, get in columns], "object": {
                    "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"]}} for o in objs]}

    def _watch(self, res: Resource, ns: str | None, query: dict) -> Iterator[bytes]:
        """Yields JSON lines, or b"" on idle ticks so the handler can notice a gone client."""
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = query.get("fieldSelector", "")
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        since = query.get("resourceVersion") or "0"

        def wanted(obj: dict) -> bool:
            meta = obj["metadata"]
            return (not ns or meta.get("namespace") == ns) and fields_match(obj, fields) and \
                labels_match(meta.get("labels") or {}, labels)

        def line(kind: str, obj: dict) -> bytes:
            return json.dumps({"type": kind, "object": obj}).encode() + b"\n"

        gone = line("ERROR", ApiError(410, "Expired", f"too old resource version: {since}")
                    .status())
        initial = query.get("sendInitialEvents") in ("true", "1", "True")
        with self._cond:  # never yield while holding the lock: a slow client would stall all
            if since == "0" or initial:  # "any version": the current state as ADDED first
                last, first = self._rv, [line("ADDED", copy.deepcopy(o))
                                         for o in self._select(res, ns) if wanted(o)]
            else:
                last, first = int(since), []
        yield from first
        if initial:  # the watch-list protocol marks the end of the initial state
            yield line("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version, "metadata": {
                "resourceVersion": str(last),
                "annotations": {"k8s.io/initial-events-end": "true"}}})
        while time.monotonic() < deadline and not self._stopping:
            with self._cond:
                self._cond.wait_for(lambda seen=last: self._rv > seen or self._stopping,
                                    timeout=min(WATCH_TICK_S, deadline - time.monotonic()))
                expired = last < self._compacted
                start = bisect.bisect_right(self._history, last, key=lambda c: c.rv)
                changes = [c for c in self._history[start:] if c.resource == res.qualified]
                last = self._rv
            if expired:  # the real server also answers 200 and sends the 410 as an event
                yield gone
                return
            sent = [line(c.type, c.obj) for c in changes if wanted(c.obj)]
            yield from sent or [b""]
        if query.get("allowWatchBookmarks") in ("true", "1", "True"):
            yield line("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version,
                                    "metadata": {"resourceVersion": str(last)}})

    def _log_reply(self, ns: str, pod: str, query: dict) -> Reply:
        obj = self._get(self._resources["pods"], ns, pod)
        container = query.get("container") or self._first_container(ns, pod)
        key = (ns, pod, container)
        if key not in self._logs and obj["status"].get("phase", "Pending") == "Pending":
            raise ApiError(400, "BadRequest", f'container "{container}" in pod "{pod}" is '
                                              "waiting to start: ContainerCreating")
        text = full = self._logs.get(key, "")
        if query.get("tailLines"):
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(query["tailLines"]):]) if int(query["tailLines"]) else ""
        if query.get("follow") not in ("true", "1", "True"):
            return Reply(body=text, content_type="text/plain")
        return Reply(stream=self._follow(key, text, len(full)), content_type="text/plain")

    def _follow(self, key: tuple[str, str, str], text: str, sent: int) -> Iterator[bytes]:
        """What is there, then what is appended, until the pod terminates or goes away."""
        yield text.encode()

        def done() -> bool:
            pod = self._objects.get(("pods", key[0], key[1]))
            return pod is None or pod["status"].get("phase") in ("Succeeded", "Failed")

        while not self._stopping:
            with self._cond:
                self._cond.wait_for(lambda n=sent: len(self._logs.get(key, "")) > n or done()
                                    or self._stopping, timeout=WATCH_TICK_S)
                log, finished = self._logs.get(key, ""), done()
            yield log[sent:].encode()
            sent = len(log)
            if finished:
                return

    def _discovery(self, path: str) -> dict | None:
        """/version, /api, /apis and the group/version resource lists kubectl asks for."""
        with self._cond:
            resources = list(self._resources.values())
        if path == "/version":
            return {"major": "1", "minor": "37", "gitVersion": "v1.37.0-voxtune-emulator",
                    "platform": "linux/amd64"}
        if path in ("/healthz", "/readyz", "/livez"):
            return {"status": "ok"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        groups: dict[str, list[str]] = {}
        for r in resources:
            if r.group and r.version not in groups.setdefault(r.group, []):
                groups[r.group].append(r.version)

        def group_doc(name: str) -> dict:
            versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in groups[name]]
            return {"name": name, "versions": versions, "preferredVersion": versions[0]}

        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1",
                    "groups": [group_doc(g) for g in groups]}
        if path == "/openapi/v3":
            prefixes = {r.prefix for r in resources}
            return {"paths": {p[1:]: {"serverRelativeURL": f"/openapi/v3{p}?hash={self._rv}"}
                              for p in prefixes}}
        if path.startswith("/openapi/v3/"):
            return self._openapi(path.removeprefix("/openapi/v3"), resources)
        if path.startswith("/apis/") and path.count("/") == 2 and path[6:] in groups:
            return {"kind": "APIGroup", "apiVersion": "v1", **group_doc(path[6:])}
        served = [r for r in resources if r.prefix == path]
        if not served:
            return None
        docs = []
        for r in served:
            verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update",
                     "watch"]
            docs.append({"name": r.plural, "singularName": r.kind.lower(), "namespaced":
                         r.namespaced, "kind": r.kind, "verbs": verbs,
                         "shortNames": list(r.short_names)})
            if r.has_status:
                docs.append({"name": f"{r.plural}/status", "singularName": "", "namespaced":
                             r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]})
        if path == "/api/v1":
            docs.append({"name": "pods/log", "singularName": "", "namespaced": True,
                         "kind": "Pod", "verbs": ["get"]})
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": path.removeprefix("/api/").removeprefix("/apis/"),
                "resources": docs}

    @staticmethod
    def _openapi(prefix: str, resources: list[Resource]) -> dict | None:
        """Just enough OpenAPI v3 for kubectl: each PATCH operation names its kind and accepts
        `fieldValidation`, so `kubectl apply` validates server-side (which we skip) instead of
        downloading /openapi/v2; no schemas, so kubectl builds patches from its own types (or
        a JSON merge patch for custom resources)."""
        paths = {}
        for r in resources:
            if r.prefix != prefix:
                continue
            item = f"{prefix}/namespaces/{{namespace}}/{r.plural}/{{name}}" if r.namespaced \
                else f"{prefix}/{r.plural}/{{name}}"
            gvk = {"group": r.group, "version": r.version, "kind": r.kind}
            paths[item] = {"patch": {
                "x-kubernetes-group-version-kind": gvk, "responses": {},
                "parameters": [{"name": "fieldValidation", "in": "query",
                                "schema": {"type": "string"}}],
                "requestBody": {"content": {t: {"schema": {"type": "object"}} for t in (
                    "application/json-patch+json", "application/merge-patch+json",
                    "application/apply-patch+yaml")}}}}
        if not paths:
            return None
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.37.0"},
                "paths": paths, "components": {"schemas": {}}}


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive (the client pools connections); chunked bodies for streams,
    since urllib3 only hands out a watch line by line when the response is chunked."""

    protocol_version = "HTTP/1.1"
    kube: KubeEmulator

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.kube._connections.add(self.connection)

    def finish(self) -> None:
        self.kube._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def _serve(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        record = RequestRecord(self.command, url.path.rstrip("/") or "/", query,
                               raw.decode(errors="replace"))
        try:
            reply = self.kube.handle(record, self.headers, raw)
        except ApiError as e:
            reply = Reply(e.code, e.status())
        except Exception as e:  # a bug in the emulator should show up as a 500, not a hang
            reply = Reply(500, ApiError(500, "InternalError", f"emulator: {e!r}").status())
        record.code = reply.code
        self.send_response(reply.code)
        self.send_header("Content-Type", reply.content_type)
        if reply.stream is None:
            data = reply.body.encode() if isinstance(reply.body, str) else \
                json.dumps(reply.body).encode()
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in reply.stream:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                elif self._client_gone():
                    break
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass
        self.close_connection = True

    def _client_gone(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        try:
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


@pytest.fixture
def kube_emulator() -> Iterator[KubeEmulator]:
    """A started emulator with the FineTuneRun resource and namespace `default`."""
    with KubeEmulator() as kube:
        yield kube
