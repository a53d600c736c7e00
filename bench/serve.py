"""`voxtune serve` under load: requests/s and p50/p95 latency at 1, 4 and 16 concurrent clients,
with dynamic batching on (`--max-batch 8`) and off (`--max-batch 1`), on this machine's CPU.

    make bench                                      # also runs .venv/bin/python bench/serve.py
    .venv/bin/python bench/serve.py --requests 48 --max-new-tokens 32

The server is the real one (FastAPI + uvicorn, the batcher, the OpenAI route) in a process of
its own, serving the tiny-random preset (the real processor and its 30-s window, random
weights, so every transcript runs to `--max-new-tokens`); the clients are threads posting the
bundled espeak-ng sample clips with the official `openai` client. Batching on and off each
get a server of their own; both stay up and take turns, in alternating order, each turn after
a few warm-up requests. The baseline is batching off, measured in the same run; the ratio is
batching on's throughput against it: batching off is one generate call per request, the way
the upstream Space (a Gradio handler calling generate per clip) and voxtune's first server
transcribed. `clips/call` is the mean batch the server ran, read from its own /metrics
(`voxtune_serve_batch_size`). Recorded figures: docs/benchmarks.md, "Serving".
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: the preset is built locally

# --- defaults (sized so that this takes a few minutes on 2 shared CPU cores) -------------------
REQUESTS = 24  # per setting (concurrency × batching)
CONCURRENCY = (1, 4, 16)
MAX_NEW_TOKENS = 32  # random weights never stop early: this is the generated length
WARMUP = 2
LISTENING = re.compile(r"on (http://127\.0\.0\.1:\d+)")


def serve_preset(max_batch: int, max_new_tokens: int) -> None:
    """The server process: the tiny-random preset behind `voxtune serve`'s app."""
    from voxtune.models.inference import LoadedModel
    from voxtune.models.load import load
    from voxtune.models.serve import Limits, serve_pair
    from voxtune.models.serve.pair import Pair

    model, processor = load("tiny-random")  # built on first use
    pair = Pair(LoadedModel(model, processor, "tiny-random", None), None, "", max_new_tokens,
                "skip", "benchmark", "tiny-random")
    serve_pair(pair, host="127.0.0.1", port=0,
               limits=Limits(max_batch=max_batch, max_queue=256, request_timeout_s=600))


def start_server(max_batch: int, max_new_tokens: int) -> tuple[subprocess.Popen, str]:
    from voxtune.processes import die_with_parent

    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(max_batch), "--max-new-tokens",
         str(max_new_tokens)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=functools.partial(die_with_parent, signal.SIGTERM, os.getpid()))
    assert server.stdout is not None
    for line in server.stdout:
        if found := LISTENING.search(line):
            return server, found[1]
    raise SystemExit(f"the server exited with {server.wait()} before listening")


def clips() -> list[bytes]:
    from voxtune.data.synth import copy_samples

    with tempfile.TemporaryDirectory(prefix="voxtune-bench-serve-") as scratch:
        folder = copy_samples(Path(scratch)).parent
        return [path.read_bytes() for path in sorted(folder.glob("*.ogg"))]


def load(url: str, audio: list[bytes], requests: int, concurrency: int) -> dict[str, float]:
    """Requests/s and latency percentiles of `requests` transcriptions from `concurrency`
    clients."""
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)

    def one(index: int) -> float:
        started = time.perf_counter()
        client.audio.transcriptions.create(model="tiny-random", language="en",
                                           file=("clip.wav", audio[index % len(audio)]))
        return time.perf_counter() - started

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(WARMUP)))
        before = batches(url)
        started = time.perf_counter()
        latencies = sorted(pool.map(one, range(requests)))
        wall = time.perf_counter() - started
        after = batches(url)
    return {"rps": requests / wall, "p50": statistics.median(latencies),
            "p95": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
            "batch": (after[0] - before[0]) / (after[1] - before[1])}


def batches(url: str) -> tuple[float, float]:
    """Clips and generate calls so far, from the server's own /metrics (batch-size histogram)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "/metrics", timeout=60) as scraped:
        samples = {sample.name: sample.value for family in
                   text_string_to_metric_families(scraped.read().decode())
                   for sample in family.samples}
    return samples["voxtune_serve_batch_size_sum"], samples["voxtune_serve_batch_size_count"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args()
    if args.serve:
        return serve_preset(args.serve, args.max_new_tokens)

    audio = clips()
    results: dict[tuple[int, int], dict[str, float]] = {}
    servers = {max_batch: start_server(max_batch, args.max_new_tokens) for max_batch in (1, 8)}
    try:
        # both servers stay up and take turns, in alternating order, so that other work on a
        # shared machine weighs on both alike
        for turn, concurrency in enumerate(CONCURRENCY):
            for max_batch in ((1, 8) if turn % 2 == 0 else (8, 1)):
                results[max_batch, concurrency] = load(servers[max_batch][1], audio,
                                                       args.requests, concurrency)
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(30)

    print(f"voxtune serve, tiny-random on CPU ({os.cpu_count()} cores), {args.requests} "
          f"requests per row, {args.max_new_tokens} new tokens per clip")
    print(f"{'clients':>7}  {'batching':>9}  {'req/s':>6}  {'p50 s':>6}  {'p95 s':>6}  "
          f"{'clips/call':>10}  {'vs off':>6}")
    for concurrency in CONCURRENCY:
        for max_batch, label in ((1, "off"), (8, "on (≤8)")):
            row = results[max_batch, concurrency]
            ratio = row["rps"] / results[1, concurrency]["rps"]
            print(f"{concurrency:>7}  {label:>9}  {row['rps']:6.2f}  {row['p50']:6.3f}  "
                  f"{row['p95']:6.3f}  {row['batch']:10.2f}  {ratio:5.2f}×")


if __name__ == "__main__":
    main()
