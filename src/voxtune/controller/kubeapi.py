"""The thin layer over the official `kubernetes` client shared by the controller and the
Kubernetes executor: connecting, raw JSON lists and watches, a list+watch cache (Informer), the
controller's work queue, and errors translated once."""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import os
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from voxtune.errors import RetryableError, UserError

log = logging.getLogger("voxtune.controller")
MAX_BACKOFF_S = 60.0
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# What a flaky network or a restarting API server raises besides ApiException.
TRANSIENT = (ApiException, urllib3.exceptions.HTTPError, OSError)
BUSY = (429, 500, 502, 503, 504)  # statuses that say: try again later


class Gone(Exception):
    """410: the watch's resourceVersion was compacted away; list again."""


def connect(kubeconfig: str | Path | None = None,
            namespace: str | None = None) -> tuple[ApiClient, str]:
    """An ApiClient and the namespace to use: `kubeconfig` (else $KUBECONFIG, else
    ~/.kube/config), or the pod's service account when running in a cluster."""
    path = kubeconfig or os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config"
    try:
        if kubeconfig or os.environ.get("KUBECONFIG") or Path(path).exists():
            client = config.new_client_from_config(config_file=str(path))
            _, context = config.list_kube_config_contexts(config_file=str(path))
            default = (context or {}).get("context", {}).get("namespace")
        else:
            config.load_incluster_config()
            client = ApiClient()
            default = SERVICE_ACCOUNT_NAMESPACE.read_text().strip() \
                if SERVICE_ACCOUNT_NAMESPACE.exists() else None
    except (config.ConfigException, OSError) as error:
        raise UserError(f"cannot configure access to Kubernetes ({path}): {error}") from None
    return client, namespace or default or "default"


def raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call a client method and return the JSON document (no model deserialisation)."""
    response = call(*args, _preload_content=False, **kwargs)
    return json.loads(response.data)


def watch_events(list_call: Callable[..., Any], resource_version: str, timeout_seconds: int,
                 on_response: Callable[[Any], None] | None = None,
                 **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Watch events (type + raw object) from `resource_version` until the server ends the
    watch; raises Gone when that version is too old. `on_response` gets the HTTP response, so
    another thread can close it to stop the watch."""
    response = list_call(watch=True, resource_version=resource_version,
                         timeout_seconds=timeout_seconds, allow_watch_bookmarks=True,
                         _preload_content=False, **kwargs)
    if on_response:
        on_response(response)
    try:
        for line in iter_resp_lines(response):
            if not line:
                continue
            event = json.loads(line)
            if event["type"] == "ERROR":
                status = event["object"]
                if status.get("code") == 410:
                    raise Gone(status.get("message", ""))
                raise ApiException(status=status.get("code"), reason=status.get("message"))
            yield event
    finally:
        response.close()
        response.release_conn()


def reason(error: ApiException) -> str:
    """The API server's message of an ApiException (its Status body), else its reason."""
    try:
        return json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(error.reason or error)


def translate(error: Exception, what: str) -> Exception:
    """One clear UserError for what a user can act on, a RetryableError for what may pass
    (API server down, overloaded, unreachable); anything else unchanged.
    `what` names the object, e.g. "run default/my-voice"."""
    if isinstance(error, ApiException):
        if error.status == 404:
            return UserError(f"{what}: not found")
        if error.status in (401, 403):
            return UserError(f"{what}: not allowed ({reason(error)}); check your kubeconfig "
                             "user's RBAC")
        if error.status in (400, 422):
            return UserError(f"{what}: rejected by the API server: {reason(error)}")
        if error.status in BUSY:
            return RetryableError(f"{what}: the API server answered {error.status} "
                                  f"({reason(error)})")
        return error
    if isinstance(error, (urllib3.exceptions.HTTPError, OSError)):
        cause = getattr(error, "reason", None) or error  # urllib3 wraps the socket error
        return RetryableError(f"{what}: cannot reach the Kubernetes API ({cause}); check the "
                              "cluster address in your kubeconfig")
    return error


def backoff(failures: int) -> float:
    """0.5 s, 1 s, 2 s … at most 60 s, with jitter so retries do not march in step."""
    return min(MAX_BACKOFF_S, 0.5 * 2 ** max(failures - 1, 0)) * random.uniform(0.8, 1.2)


class Informer:
    """A cache of one kind of object kept current by list + watch, indexed by run name."""

    def __init__(self, kind: str, list_call: Callable[..., Any], index: Callable[[dict], str],
                 on_change: Callable[[dict], None], stop: threading.Event,
                 on_error: Callable[[str], None], watch_timeout_s: int) -> None:
        self.kind, self.list_call, self.index, self.on_change = kind, list_call, index, on_change
        self.stop, self.on_error, self.watch_timeout_s = stop, on_error, watch_timeout_s
        self.synced = threading.Event()
        self._lock = threading.Lock()
        self._items: dict[str, dict] = {}
        self._by_run: dict[str, set[str]] = defaultdict(set)
        self._response: Any = None
        self.thread = threading.Thread(target=self._run, name=f"watch-{kind}", daemon=True)

    def get(self, name: str) -> dict | None:
        with self._lock:
            return self._items.get(name)

    def of_run(self, run: str) -> list[dict]:
        with self._lock:
            return [self._items[name] for name in sorted(self._by_run.get(run, ()))]

    def all(self) -> list[dict]:
        with self._lock:
            return list(self._items.values())

    def put(self, obj: dict, base: str | None) -> None:
        """Store an object this process just wrote, so the next reconcile sees it before the
        watch brings it — unless the watch has brought it already, or a later version: the
        cache no longer holding `base`, the version the write started from (None: the object
        was absent), says so. Storing it then would hide that later version (a Job that
        completed while its create was answered) until the object next changes."""
        name = obj["metadata"]["name"]
        with self._lock:
            cached = self._items.get(name)
            if (cached["metadata"].get("resourceVersion") if cached else None) == base:
                self._store_locked(name, obj)

    def close(self) -> None:
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # already closed
                response.shutdown()  # unblocks the watch thread's read

    def _store(self, name: str, obj: dict | None) -> None:
        with self._lock:
            self._store_locked(name, obj)

    def _store_locked(self, name: str, obj: dict | None) -> None:
        old = self._items.pop(name, None)
        if old is not None:
            self._by_run[self.index(old)].discard(name)
        if obj is not None:
            self._items[name] = obj
            self._by_run[self.index(obj)].add(name)

    def _run(self) -> None:
        failures = 0
        while not self.stop.is_set():
            try:
                version = self._list()
                self.synced.set()
                failures = 0
                while not self.stop.is_set():
                    version = self._watch(version)
            except Gone:
                log.info("%s watch expired; listing again", self.kind)
            except TRANSIENT as error:
                if self.stop.is_set():
                    return
                failures += 1
                self.on_error(self.kind)
                log.warning("%s list/watch failed (%s); retrying", self.kind, error)
                self.stop.wait(backoff(failures))

    def _list(self) -> str:
        document = raw(self.list_call)
        fresh = {obj["metadata"]["name"]: obj for obj in document.get("items", [])}
        with self._lock:
            before = dict(self._items)
        for name in set(before) | set(fresh):
            if before.get(name) != fresh.get(name):
                self._store(name, fresh.get(name))
                self.on_change(fresh.get(name) or before[name])
        return document["metadata"]["resourceVersion"]

    def _watch(self, version: str) -> str:
        for event in watch_events(self.list_call, version, self.watch_timeout_s,
                                  on_response=lambda r: setattr(self, "_response", r)):
            obj = event["object"]
            version = obj["metadata"].get("resourceVersion", version)
            if event["type"] == "BOOKMARK":
                continue
            name = obj["metadata"]["name"]
            self._store(name, None if event["type"] == "DELETED" else obj)
            self.on_change(obj)
            if self.stop.is_set():
                break
        return version


class WorkQueue:
    """Run names to reconcile, each at most once in the queue, earliest due first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def add(self, name: str, delay: float = 0.0) -> None:
        due = time.monotonic() + delay
        with self._cond:
            if name in self._due and self._due[name] <= due:
                return
            self._due[name] = due
            heapq.heappush(self._heap, (due, name))
            self._cond.notify()

    def get(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
                    heapq.heappop(self._heap)  # superseded by an earlier entry
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    _, name = heapq.heappop(self._heap)
                    del self._due[name]
                    return name
                wait = min(deadline, self._heap[0][0] if self._heap else deadline) - now
                if now >= deadline:
                    return None
                self._cond.wait(max(wait, 0.0))

    def __len__(self) -> int:
        with self._cond:
            return len(self._due)
