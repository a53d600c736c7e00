"""Controller speed: reconcile 1,000 runs (pure function, goal ≤ 1 s of CPU) and the latency from
`submit` to the step's Job existing, against the loopback API emulator.

    .venv/bin/python bench/controller.py                 # --runs 1000 --submits 50

(a) reconcile: 1,000 FineTuneRuns in an even mix of states — new (a Job is built), preparing,
    training with a progress line, waiting on an unschedulable GPU pod (with its event),
    failed with a log tail, and finished (only TTL checks) — each reconciled once per pass; CPU
    time (process_time) of the whole pass, best and median of --repeats passes.
(b) submit → Job: the controller (watches + work queue) and the Kubernetes executor in this
    process, the emulator over loopback HTTP; the time from calling submit to the prepare Job
    being stored, one run at a time, median and 95th percentile. The resync period is 60 s, so
    this is the watch-driven path, not polling.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voxtune.controller.jobs import JobSettings  # noqa: E402
from voxtune.controller.reconcile import Observed, reconcile  # noqa: E402

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
EARLIER = "2026-03-01T11:00:00Z"
STATES = ("new", "preparing", "training", "unschedulable", "failed", "succeeded")


def synthetic(index: int) -> tuple[dict, Observed]:
    """One run and what the cluster shows for it, in state STATES[index % 6]."""
    name, state = f"run-{index:04d}", STATES[index % len(STATES)]
    uid = f"uid-{index}"
    steps = {"prepare": {"state": "succeeded", "job": f"{name}-prepare"}}
    run = {"metadata": {"name": name, "namespace": "default", "uid": uid, "generation": 1},
           "spec": {"base_model": "tiny-random", "steps": ["prepare", "train"],
                    "data": {"sources": [{"kind": "jsonl", "path": "data.jsonl"}]}},
           "status": {"name": name, "phase": "Training", "steps": steps}}

    def job(step: str, outcome: str | None = None) -> dict:
        conditions = [{"type": outcome, "status": "True", "reason": "X",
                       "lastTransitionTime": EARLIER}] if outcome else []
        return {"metadata": {"name": f"{name}-{step}", "uid": f"{uid}-{step}",
                             "labels": {"voxtune.io/run": name, "voxtune.io/step": step},
                             "ownerReferences": [{"uid": uid}]},
                "spec": {"ttlSecondsAfterFinished": 60}, "status": {
                    "conditions": conditions, "startTime": EARLIER}}

    def pod(step: str, phase: str, **status: object) -> dict:
        return {"metadata": {"name": f"{name}-{step}-x", "creationTimestamp": EARLIER,
                             "labels": {"voxtune.io/step": step},
                             "ownerReferences": [{"uid": f"{uid}-{step}"}]},
                "status": {"phase": phase, **status}}

    if state == "new":
        del run["status"]
        return run, Observed()
    if state == "preparing":
        run["status"]["steps"] = {"prepare": {"state": "running"}}
        return run, Observed([job("prepare")], [pod("prepare", "Running")])
    train = {"state": "running", "started": EARLIER, "job": f"{name}-train"}
    run["status"]["steps"] = {**steps, "train": train}
    if state == "training":
        return run, Observed([job("prepare", "Complete"), job("train")],
                             [pod("train", "Running")], log_tails={
                                 f"{name}-train-x": "{'loss': 0.5}\nprogress train 120/300 "
                                                    "elapsed=60.0s remaining=90.0s\n"})
    if state == "unschedulable":
        message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
        return run, Observed([job("train")], [pod("train", "Pending", conditions=[
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": message}])], events=[{
                 "metadata": {"creationTimestamp": EARLIER}, "reason": "FailedScheduling",
                 "involvedObject": {"name": f"{name}-train-x"}, "message": message}])
    if state == "failed":
        terminated = {"exitCode": 2, "message": json.dumps(
            {"exit_code": 2, "metrics": {}, "log_tail": "error: bad config\n" * 5})}
        return run, Observed([job("train", "Failed")], [pod(
            "train", "Failed", containerStatuses=[{"name": "train",
                                                   "state": {"terminated": terminated}}])])
    run["status"] = {"name": name, "phase": "Succeeded", "steps": {
        **steps, "train": {**train, "state": "succeeded"}}}
    return run, Observed([job("prepare", "Complete"), job("train", "Complete")])


def bench_reconcile(runs: int, repeats: int) -> tuple[list[float], Counter[str]]:
    settings = JobSettings()
    cases = [synthetic(i) for i in range(runs)]
    outcomes = Counter(f"{d.status.phase}/{d.status.reason or '-'}" for d in (
        reconcile(run, observed, settings, NOW) for run, observed in cases))
    passes = []
    for _ in range(repeats):
        started = time.process_time()
        for run, observed in cases:
            reconcile(run, observed, settings, NOW)
        passes.append(time.process_time() - started)
    return passes, outcomes


def bench_submit(submits: int) -> list[float]:
    from tests.emulators.kube import KubeEmulator

    from voxtune.controller.crd import custom_resource_definition
    from voxtune.controller.operator import Controller
    from voxtune.executors.kubernetes import KubernetesExecutor
    from voxtune.spec import RunSpec

    latencies = []
    with KubeEmulator() as kube:
        kube.register_crd(custom_resource_definition())
        controller = Controller(kube.api_client(), "default", JobSettings()).start()
        executor = KubernetesExecutor(api_client=kube.api_client(), namespace="default")
        try:
            while not controller.ready():
                time.sleep(0.01)
            for index in range(submits):
                name = f"bench-{index}"
                started = time.perf_counter()
                executor.submit(RunSpec(name=name, steps=["prepare"]))
                while kube.get("jobs", "default", f"{name}-prepare") is None:
                    time.sleep(0.0005)
                latencies.append(time.perf_counter() - started)
        finally:
            controller.stop()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--submits", type=int, default=50)
    args = parser.parse_args()

    passes, outcomes = bench_reconcile(args.runs, args.repeats)
    best, median = min(passes), statistics.median(passes)
    verdict = "meets" if best <= 1.0 else "MISSES"
    print(f"## Controller\n\n(a) reconcile {args.runs} runs ({', '.join(STATES)}, evenly): "
          f"best {best:.3f} s CPU, median {median:.3f} s over {args.repeats} passes "
          f"= {best / args.runs * 1e6:.0f} µs per run; {verdict} the ≤ 1 s goal\n"
          f"    decisions (phase/reason): {dict(sorted(outcomes.items()))}")
    latencies = sorted(bench_submit(args.submits))
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
    print(f"(b) submit → prepare Job stored, {args.submits} runs one at a time: median "
          f"{statistics.median(latencies) * 1e3:.1f} ms, p95 {p95 * 1e3:.1f} ms, max "
          f"{latencies[-1] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
