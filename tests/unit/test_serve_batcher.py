"""`voxtune serve`'s batcher: requests that arrive together run as one batch per model, a full
queue refuses at once, a request past its deadline is dropped, a failing batch fails only its
own requests. The batch function is a plain one that records its calls."""

from __future__ import annotations

import threading
import time
from concurrent.futures import wait

import pytest

from voxtune.models.serve.batcher import Batcher, Expired, QueueFull


class Recorder:
    """Upper-cases each clip's text; can be held at the door to let requests pile up."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, target: str, audios: list[str], languages: list[str | None]
                 ) -> list[str]:
        self.gate.wait(10)
        if "boom" in audios:
            raise ValueError("the model failed")
        self.calls.append((target, audios))
        return [f"{target}:{audio.upper()}:{language}" for audio, language
                in zip(audios, languages, strict=True)]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def test_requests_waiting_together_run_as_one_batch_per_model(recorder: Recorder) -> None:
    recorder.gate.clear()
    batcher = Batcher(recorder, max_batch=8, max_wait_s=0.05).start()
    try:
        first = batcher.submit("tuned", "a", "en", 10)  # taken at once; holds the worker
        time.sleep(0.2)
        rest = [batcher.submit(target, clip, None, 10)
                for target, clip in (("tuned", "b"), ("base", "c"), ("tuned", "d"))]
        assert batcher.depth() == 3
        recorder.gate.set()
        wait([first, *rest], timeout=10)
        assert first.result() == "tuned:A:en"
        assert [f.result() for f in rest] == ["tuned:B:None", "base:C:None", "tuned:D:None"]
        assert recorder.calls == [("tuned", ["a"]), ("tuned", ["b", "d"]), ("base", ["c"])]
    finally:
        batcher.close()


def test_batching_off_runs_one_clip_per_call(recorder: Recorder) -> None:
    recorder.gate.clear()
    batcher = Batcher(recorder, max_batch=1).start()
    try:
        futures = [batcher.submit("tuned", clip, None, 10) for clip in "abc"]
        recorder.gate.set()
        wait(futures, timeout=10)
        assert [len(audios) for _, audios in recorder.calls] == [1, 1, 1]
    finally:
        batcher.close()


def test_a_full_queue_refuses_and_a_late_request_is_dropped(recorder: Recorder) -> None:
    recorder.gate.clear()
    batcher = Batcher(recorder, max_batch=1, max_queue=2).start()
    try:
        running = batcher.submit("tuned", "a", None, 10)
        time.sleep(0.2)  # the worker holds "a"; two slots left
        late = batcher.submit("tuned", "b", None, 0.05)
        batcher.submit("tuned", "c", None, 10)
        assert batcher.full()
        with pytest.raises(QueueFull, match="2 requests are already waiting"):
            batcher.submit("tuned", "d", None, 10)
        time.sleep(0.1)  # "b" is past its deadline before the worker is free
        recorder.gate.set()
        assert running.result(10) == "tuned:A:None"
        with pytest.raises(Expired):
            late.result(10)
        assert ("tuned", ["b"]) not in recorder.calls
    finally:
        batcher.close()


def test_a_failing_batch_fails_its_requests_and_the_worker_goes_on(recorder: Recorder) -> None:
    batcher = Batcher(recorder).start()
    try:
        with pytest.raises(ValueError, match="the model failed"):
            batcher.submit("tuned", "boom", None, 10).result(10)
        assert batcher.submit("tuned", "ok", None, 10).result(10) == "tuned:OK:None"
        assert batcher.alive()
    finally:
        batcher.close()
    assert not batcher.alive()
