"""The controller process: watches FineTuneRuns, their Jobs and pods, and applies `reconcile`.

    voxtune controller --namespace ml --config /etc/voxtune/controller.yaml --port 8080
    curl localhost:8080/healthz ; curl localhost:8080/metrics

Thin on purpose: every decision is in `reconcile` (pure). This loop only
1. keeps caches of the namespace's FineTuneRuns, and of the Jobs and pods labelled
   voxtune.io/run, each by list + watch from the list's resourceVersion (relist on 410 Gone);
   asks the API's discovery which multi-node engines it serves (TrainJob, JobSet) at start
   and at every resync, and watches those too (an engine installed later is picked up);
2. puts the run's name on a work queue whenever one of its objects changes, and every run
   again every --resync-seconds (level-triggered: a missed event only delays);
3. per run: fetches events of waiting pods and the few log tails reconcile asks for, calls
   reconcile, creates/deletes/patches Jobs (409 on create = already there) and writes the
   status subresource (a 409 Conflict just means "reconcile again");
4. backs off on API errors (per watch and per run, exponentially, at most 60 s);
5. serves /healthz, /readyz and Prometheus /metrics; stops cleanly on SIGTERM.
Run one replica (the Deployment uses strategy Recreate); there is no leader election.
"""

from __future__ import annotations

import collections
import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubernetes.client import ApiClient, ApisApi, BatchV1Api, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from voxtune.controller.crd import GROUP, PLURAL, RUN_LABEL, VERSION, run_status
from voxtune.controller.engines import ENGINES, Engine
from voxtune.controller.jobs import JobSettings
from voxtune.controller.kubeapi import TRANSIENT, Informer, WorkQueue, backoff, raw, reason
from voxtune.controller.observe import iso
from voxtune.controller.reconcile import (
    Action,
    CreateJob,
    CreateObject,
    Decision,
    DeleteJob,
    DeleteObject,
    Observed,
    reconcile,
    wanted_events,
    wanted_logs,
)
from voxtune.controller.status_words import finish
from voxtune.run.process import LOG_TAIL_LINES
from voxtune.run.status import StepStatus
from voxtune.run.steps import PHASES

log = logging.getLogger("voxtune.controller")
# Queued is the local executor's alone: a FineTuneRun never is.
# a create refused with one of these stays refused however often it is retried: a webhook's or
# the schema's "invalid" (400, 422), RBAC's "forbidden" (403), a kind no longer served (404:
# its CRD was removed after discovery found it)
REFUSED = frozenset({400, 403, 404, 422})
CLUSTER_PHASES = tuple(phase for phase in PHASES if phase != "Queued")
DURATION_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200)


class Metrics:
    """The controller's Prometheus series: runs by phase (read from the cache at each scrape),
    finished steps' durations, reconciles, API errors and Jobs created."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        on = {"registry": self.registry}
        self._runs = Gauge("voxtune_runs", "FineTuneRuns by phase.", ["phase"], **on)
        self._durations = Histogram("voxtune_step_duration_seconds", "Duration of finished "
                                    "steps.", ["step"], buckets=DURATION_BUCKETS, **on)
        self.api_errors = Counter("voxtune_api_errors", "Failed list/watch calls, by kind.",
                                  ["kind"], **on)
        self.reconcile_errors = Counter("voxtune_reconcile_errors", "Reconciles that failed "
                                        "(retried with backoff).", **on)
        self.reconciles = Counter("voxtune_reconciles", "Reconciles run.", **on)
        self.reconcile_seconds = Counter("voxtune_reconcile_seconds", "Time spent "
                                         "reconciling.", **on)
        self.jobs_created = Counter("voxtune_jobs_created", "Jobs created.", **on)

    def step_finished(self, step: str, seconds: float) -> None:
        self._durations.labels(step).observe(seconds)

    def render(self, runs: list[dict]) -> str:
        phases = collections.Counter(run_phase(run) for run in runs)
        for phase in CLUSTER_PHASES:
            self._runs.labels(phase).set(phases.get(phase, 0))
        return generate_latest(self.registry).decode()


def run_phase(run: dict) -> str:
    return run_status(run).phase  # whatever the API holds: an unreadable phase is Pending


class Controller:
    def __init__(self, api: ApiClient, namespace: str, settings: JobSettings,
                 resync_s: float = 60.0, watch_timeout_s: int = 300,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.namespace, self.settings, self.resync_s, self.clock = namespace, settings, \
            resync_s, clock
        self.batch, self.core, self.custom = BatchV1Api(api), CoreV1Api(api), \
            CustomObjectsApi(api)
        self.apis = ApisApi(api)
        self.served: frozenset[str] = frozenset()  # group/versions, from discovery
        self.stop_event = threading.Event()
        self.queue = WorkQueue()
        self.metrics = Metrics()
        self._failures: collections.Counter[str] = collections.Counter()

        def by_name(obj: dict) -> str:
            return obj["metadata"]["name"]

        def by_label(obj: dict) -> str:
            return (obj["metadata"].get("labels") or {}).get(RUN_LABEL, "")

        def informer(kind: str, call: Callable[..., Any], run_of: Callable[[dict], str]
                     ) -> Informer:
            def enqueue(obj: dict) -> None:  # a change to any object of a run: reconcile it
                if run_of(obj):
                    self.queue.add(run_of(obj))
            def count_error(kind: str) -> None:
                self.metrics.api_errors.labels(kind).inc()
            return Informer(kind, call, run_of, enqueue, self.stop_event, count_error,
                            watch_timeout_s)

        ns = namespace
        self.runs = informer("finetuneruns", lambda **kw: self.custom.list_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, **kw), by_name)
        self.jobs = informer("jobs", lambda **kw: self.batch.list_namespaced_job(
            ns, label_selector=RUN_LABEL, **kw), by_label)
        self.pods = informer("pods", lambda **kw: self.core.list_namespaced_pod(
            ns, label_selector=RUN_LABEL, **kw), by_label)
        self.informers = (self.runs, self.jobs, self.pods)
        self.groups: dict[str, Informer] = {}  # engine name → its objects, once served
        self._informer = informer
        self._worker = threading.Thread(target=self._work, name="reconcile", daemon=True)

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> Controller:
        for each in self.informers:
            each.thread.start()
        self.discover()
        self._worker.start()
        return self

    def discover(self) -> None:
        """Which group/versions the API serves (GET /apis), and a watch of every multi-node
        engine among them; a failed discovery keeps what was known."""
        try:
            groups = self.apis.get_api_versions().groups or []
        except TRANSIENT as error:
            log.warning("API discovery failed (%s); keeping what was known", error)
            return
        self.served = frozenset(version.group_version for group in groups
                                for version in group.versions or [])
        for engine in ENGINES.values():
            if engine.api_version in self.served and engine.name not in self.groups:
                self.groups[engine.name] = self._group_informer(engine)
                self.groups[engine.name].thread.start()
                log.info("%s is served: multi-node runs can use it", engine.api_version)

    def _group_informer(self, engine: Engine) -> Informer:
        ns = self.namespace

        def by_label(obj: dict) -> str:
            return (obj["metadata"].get("labels") or {}).get(RUN_LABEL, "")

        return self._informer(engine.plural, lambda **kw: self.custom.list_namespaced_custom_object(
            engine.group, engine.version, ns, engine.plural, label_selector=RUN_LABEL, **kw),
            by_label)

    def _served_and_watched(self) -> frozenset[str]:
        """What reconcile may choose from: an engine counts once its cache is complete."""
        unsynced = {ENGINES[name].api_version for name, informer in self.groups.items()
                    if not informer.synced.is_set()}
        return self.served - unsynced

    def ready(self) -> bool:
        return all(each.synced.is_set() for each in self.informers)

    def healthy(self) -> bool:
        return not self.stop_event.is_set() and self._worker.is_alive() and all(
            each.thread.is_alive() for each in (*self.informers, *self.groups.values()))

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the reconcile in progress, then stop watching."""
        self.stop_event.set()
        self.queue.add("")  # wakes the worker
        for each in (*self.informers, *self.groups.values()):
            each.close()
        self._worker.join(timeout)
        for each in (*self.informers, *self.groups.values()):
            each.thread.join(1.0)

    def _work(self) -> None:
        for each in self.informers:  # reconcile against complete caches only
            while not each.synced.wait(0.2):
                if self.stop_event.is_set():
                    return
        next_resync = 0.0
        while not self.stop_event.is_set():
            if time.monotonic() >= next_resync:
                self.discover()
                for run in self.runs.all():
                    self.queue.add(run["metadata"]["name"])
                next_resync = time.monotonic() + self.resync_s
            name = self.queue.get(timeout=min(1.0, self.resync_s))
            if not name or self.stop_event.is_set():
                continue
            started = time.perf_counter()
            try:
                self.reconcile_run(name)
                self._failures.pop(name, None)
            except Exception as error:  # API trouble, or a bug: the other runs go on
                self._failures[name] += 1
                self.metrics.reconcile_errors.inc()
                if isinstance(error, TRANSIENT):
                    log.warning("reconcile %s/%s failed (%s); retrying", self.namespace, name,
                                error)
                else:
                    log.exception("reconcile %s/%s crashed; retrying", self.namespace, name)
                self.queue.add(name, backoff(self._failures[name]))
            self.metrics.reconciles.inc()
            self.metrics.reconcile_seconds.inc(time.perf_counter() - started)

    # one run -----------------------------------------------------------------------------
    def reconcile_run(self, name: str) -> None:
        run = self.runs.get(name)
        if run is None or run["metadata"].get("deletionTimestamp"):
            return  # deleted: the garbage collector removes its Jobs
        groups = [obj for informer in self.groups.values() for obj in informer.of_run(name)]
        observed = Observed(jobs=self.jobs.of_run(name), pods=self.pods.of_run(name),
                            groups=groups)
        observed = Observed(observed.jobs, observed.pods, self._events(observed),
                            self._log_tails(run, observed), groups,
                            self._served_and_watched())
        decision = reconcile(run, observed, self.settings, self.clock())
        if decision.unreadable:
            log.warning("run %s/%s: ignoring what cannot be read of its status (%s); going on "
                        "from the rest and its Jobs", self.namespace, name,
                        "; ".join(decision.unreadable))
        for action in decision.actions:
            if refused := self._apply(action):
                # retrying cannot help (a webhook or policy said no, or RBAC lacks a verb):
                # the run says why instead of waiting for ever
                status = decision.status
                for step in status.steps.values():
                    if step.state == "running":
                        step.state, step.finished = "failed", iso(self.clock())
                finish(status, "Failed", "Rejected", refused, iso(self.clock()))
                decision = Decision(decision.actions, status, True, decision.unreadable)
                break
        if decision.changed:
            self._record_durations(run, decision.status.steps)
            body = {**run, "status": decision.status.document()}
            try:
                written = self.custom.replace_namespaced_custom_object_status(
                    GROUP, VERSION, self.namespace, PLURAL, name, body)
            except ApiException as error:
                if error.status == 409:  # changed meanwhile: the watch brings the new version
                    self.queue.add(name, 0.2)
                    return
                if error.status == 404:
                    return
                raise
            self.runs.put(written, run["metadata"].get("resourceVersion"))

    def _apply(self, action: Action) -> str | None:
        """Carry out `action`; why the API refused it, when it refused a create for good."""
        ns = self.namespace
        try:
            if isinstance(action, CreateObject):
                engine = action.engine
                created = self.custom.create_namespaced_custom_object(
                    engine.group, engine.version, ns, engine.plural, action.document)
                self.groups[engine.name].put(created, None)
                self.metrics.jobs_created.inc()
                log.info("created %s %s/%s", engine.kind, ns, action.name)
            elif isinstance(action, DeleteObject):
                engine = action.engine
                self.custom.delete_namespaced_custom_object(
                    engine.group, engine.version, ns, engine.plural, action.name,
                    propagation_policy="Background")
                log.info("deleted %s %s/%s", engine.kind, ns, action.name)
            elif isinstance(action, CreateJob):
                self.jobs.put(raw(self.batch.create_namespaced_job, ns, action.job), None)
                self.metrics.jobs_created.inc()
                log.info("created Job %s/%s", ns, action.name)
            elif isinstance(action, DeleteJob):
                self.batch.delete_namespaced_job(action.name, ns,
                                                 propagation_policy="Background")
                log.info("deleted Job %s/%s", ns, action.name)
            else:
                self.batch.patch_namespaced_job(action.name, ns, {
                    "spec": {"ttlSecondsAfterFinished": action.ttl_seconds}})
        except ApiException as error:
            creates = isinstance(action, (CreateJob, CreateObject))
            # 409 on create: it exists (a restart, a stale cache); 404: already gone.
            if (error.status == 409 and creates) or (error.status == 404 and not creates):
                return None
            # a full quota frees up as other work ends: that one is retried
            if creates and error.status in REFUSED and "exceeded quota" not in reason(error):
                kind = action.engine.kind if isinstance(action, CreateObject) else "Job"
                return (f"the Kubernetes API refused to create {kind} {ns}/{action.name}: "
                        f"{error.status} {reason(error)}")
            raise
        return None

    def _events(self, observed: Observed) -> list[dict]:
        events: list[dict] = []
        for involved in wanted_events(observed):
            events += raw(self.core.list_namespaced_event, self.namespace,
                          field_selector=f"involvedObject.name={involved}").get("items", [])
        return events

    def _log_tails(self, run: dict, observed: Observed) -> dict[str, str]:
        tails = {}
        for pod in wanted_logs(run, observed):
            try:
                tails[pod] = self.core.read_namespaced_pod_log(
                    pod, self.namespace, tail_lines=LOG_TAIL_LINES)
            except ApiException as error:
                if error.status not in (400, 404):  # not started yet / gone
                    raise
        return tails

    def _record_durations(self, run: dict, steps: dict[str, Any]) -> None:
        before = run_status(run).steps
        for step, state in steps.items():
            was = before.get(step, StepStatus())
            if state.state in ("succeeded", "failed") and was.state not in ("succeeded",
                                                                           "failed"):
                start, end = _time(state.started), _time(state.finished)
                if start and end:
                    self.metrics.step_finished(step, (end - start).total_seconds())


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


# --- HTTP: health and metrics -------------------------------------------------------------


def serve_http(controller: Controller, host: str, port: int) -> ThreadingHTTPServer:
    """/healthz (alive), /readyz (caches synced), /metrics (Prometheus text format)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                code, body = 200, controller.metrics.render(controller.runs.all())
                kind = CONTENT_TYPE_LATEST
            elif self.path in ("/healthz", "/livez"):
                ok = controller.healthy()
                code, body, kind = (200 if ok else 503), ("ok\n" if ok else "unhealthy\n"), \
                    "text/plain"
            elif self.path == "/readyz":
                ok = controller.ready()
                code, body, kind = (200 if ok else 503), ("ok\n" if ok else "syncing\n"), \
                    "text/plain"
            else:
                code, body, kind = 404, "not found\n", "text/plain"
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server


def run_forever(api: ApiClient, namespace: str, settings: JobSettings, host: str = "0.0.0.0",
                port: int = 8080, resync_s: float = 60.0) -> int:
    """`voxtune controller`: run until SIGTERM/SIGINT, then stop cleanly."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    disable_created_metrics()  # the series /metrics had before prometheus-client, no *_created
    controller = Controller(api, namespace, settings, resync_s=resync_s).start()
    server = serve_http(controller, host, port)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("watching FineTuneRuns in namespace %s; health and metrics on %s:%d",
             namespace, host, server.server_address[1])
    stop.wait()
    log.info("stopping")
    server.shutdown()
    controller.stop()
    return 0
