"""What `voxtune serve` tells Prometheus: requests, errors, latency, audio seconds, queue depth,
batch sizes. One registry per server (not the process-wide default), so tests and benchmarks can
run several in one process."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# A tiny model on a CPU answers in tens of milliseconds, Mini on a busy GPU in seconds.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)


class ServeMetrics:
    def __init__(self, queue_depth: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        on = {"registry": self.registry}
        self.requests = Counter("voxtune_serve_requests", "HTTP requests by endpoint and "
                                "status code.", ["endpoint", "code"], **on)
        self.errors = Counter("voxtune_serve_errors", "Requests refused or failed, by endpoint "
                              "and reason (the error code in the reply).",
                              ["endpoint", "reason"], **on)
        self.latency = Histogram("voxtune_serve_request_duration_seconds", "Time from request "
                                 "to reply, queueing included.", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, **on)
        self.audio = Counter("voxtune_serve_audio_seconds", "Seconds of audio transcribed, by "
                             "model.", ["model"], **on)
        self.batch = Histogram("voxtune_serve_batch_size", "Clips per generate call.",
                               buckets=BATCH_BUCKETS, **on)
        queue = Gauge("voxtune_serve_queue_depth", "Transcriptions waiting for the model.", **on)
        queue.set_function(queue_depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)
