"""Requests in, small batches out: the bounded queue between `voxtune serve`'s HTTP handlers and
the one thread that runs the model.

The model is not safe to share between threads, and one generate call over several clips costs
far less than one per clip, so every transcription goes through here: a request waits in a
bounded queue (full: the client is told to come back, rather than every request getting slow),
the worker takes the oldest and whatever else arrives within `max_wait_s`, up to `max_batch`,
and runs them as one batch per model (tuned or base). A request whose deadline has passed by
the time it would run is dropped, not computed for a client that has gone.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any


class QueueFull(RuntimeError):
    """Every queue slot is taken: the server is busy."""


class Expired(TimeoutError):
    """The request waited longer than its deadline and was not run."""


@dataclass
class Job:
    target: str  # which model ("tuned" or "base")
    audio: Any
    language: str | None
    deadline: float  # time.monotonic() after which nobody waits for the answer
    future: Future = field(default_factory=Future)


# (target, audios, languages) -> one result per audio, in order
RunBatch = Callable[[str, list[Any], list[str | None]], list[Any]]


class Batcher:
    def __init__(self, run_batch: RunBatch, *, max_batch: int = 8, max_wait_s: float = 0.01,
                 max_queue: int = 64, on_batch: Callable[[int], None] = lambda size: None
                 ) -> None:
        self.run_batch, self.max_batch, self.max_wait_s = run_batch, max_batch, max_wait_s
        self.on_batch = on_batch  # told each batch's size (the metrics' histogram)
        self._queue: queue.Queue[Job | None] = queue.Queue(max_queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="voxtune-serve-batcher",
                                        daemon=True)

    def start(self) -> Batcher:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        with suppress(queue.Full):  # a full queue: the worker is not waiting anyway
            self._queue.put_nowait(None)  # wakes the worker
        self._thread.join(5)

    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def depth(self) -> int:
        """Requests waiting (not yet in a running batch)."""
        return self._queue.qsize()

    def full(self) -> bool:
        return self._queue.full()

    def submit(self, target: str, audio: Any, language: str | None, timeout_s: float) -> Future:
        """Queue one transcription; its Future holds the result, or raises Expired or what the
        model raised. QueueFull when no slot is free."""
        job = Job(target, audio, language, time.monotonic() + timeout_s)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self._queue.maxsize} requests are already waiting") from None
        return job.future

    def _next_batch(self) -> list[Job]:
        first = self._queue.get()
        if first is None:
            return []
        batch, closes = [first], time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, closes - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                break
            batch.append(job)
        return batch

    def _loop(self) -> None:
        while not self._stop.is_set():
            now, runnable = time.monotonic(), []
            for job in self._next_batch():
                if job.deadline < now:
                    job.future.set_exception(Expired("waited past its deadline in the queue"))
                elif job.future.set_running_or_notify_cancel():  # False: the client gave up
                    runnable.append(job)
            for target in dict.fromkeys(job.target for job in runnable):
                group = [job for job in runnable if job.target == target]
                self.on_batch(len(group))
                try:
                    results = self.run_batch(target, [job.audio for job in group],
                                             [job.language for job in group])
                except Exception as error:  # the clients get it; the worker goes on
                    for job in group:
                        job.future.set_exception(error)
                else:
                    for job, result in zip(group, results, strict=True):
                        job.future.set_result(result)
