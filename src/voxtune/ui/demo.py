"""Try-it's model server: `voxtune serve` as a subprocess of the UI, or the in-cluster demo.

Locally the UI starts one `voxtune serve MODEL` at a time (a model is large; the next model
replaces it) on a free loopback port, waits until it answers, and stops it when the UI exits —
also when the UI is killed outright: the server is started with PR_SET_PDEATHSIG, which the
kernel ties to the *thread* that started it, so every server is started from one spawner
thread that lives as long as the UI process (never from the Gradio worker thread handling the
click, which may end while the server should go on).
The UI only speaks HTTP to it, so the UI process never imports torch.
"""

from __future__ import annotations

import atexit
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from voxtune.errors import UserError
from voxtune.processes import die_with_parent
from voxtune.run.process import tail

START_TIMEOUT_S = 600  # loading a 3B model from a cold Hub cache takes minutes
REQUEST_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DemoServers:
    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self._lock = threading.Lock()
        self._model: str | None = None
        self._process: subprocess.Popen | None = None
        self._url = ""
        # one worker thread that stays until the process ends: the parent of every server
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="voxtune-demo-spawner")
        atexit.register(self.stop)

    def spawn(self, command: list[str], log_path: Path) -> subprocess.Popen:
        """Start `command` (output to `log_path`) so that it dies with this process, from
        whichever thread asks."""
        def start() -> subprocess.Popen:
            with open(log_path, "ab") as log:
                return subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    preexec_fn=functools.partial(die_with_parent, signal.SIGTERM, os.getpid()))

        return self._spawner.submit(start).result()

    def ensure(self, model: str) -> str:
        """The URL of a server for `model`, starting it (and stopping another) if needed."""
        with self._lock:
            if self._model == model and self._process and self._process.poll() is None:
                return self._url
            self._stop()
            port = free_port()
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / "serve.log"
            log_path.write_bytes(b"")  # this server's output only
            self._process = self.spawn(
                [sys.executable, "-m", "voxtune", "serve", model, "--port", str(port)], log_path)
            self._model, self._url = model, f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + START_TIMEOUT_S
            while not self._healthy():
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self._stop()
                    raise UserError(f"the model server for {model} did not start:\n"
                                    f"{tail(log_path, 8)}")
                time.sleep(0.5)
            return self._url

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self._url}/healthz", timeout=2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._process, self._model = None, None

    @staticmethod
    def transcribe(url: str, audio: Path, language: str) -> dict[str, Any]:
        """Base and tuned transcripts of the clip from the model server at `url`: one /compare
        call to `voxtune serve`, or OpenAI transcription calls to an engine without it (vLLM)."""
        import httpx

        language = "" if language in (None, "auto") else language
        try:
            with httpx.Client(base_url=url.rstrip("/"), timeout=REQUEST_TIMEOUT_S) as http:
                reply = http.post("/compare", data={"language": language},
                                  files={"file": (audio.name, audio.read_bytes())})
                if reply.status_code == 404:
                    return openai_compare(http, audio, language)
                return checked(reply).json()
        except httpx.HTTPError as error:
            raise UserError(f"cannot reach the model server at {url}: {error}") from None


def checked(reply: Any) -> Any:
    """The reply, or UserError with the server's message (OpenAI's error shape)."""
    if reply.is_success:
        return reply
    try:
        detail = reply.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        detail = reply.text.strip() or reply.reason_phrase
    raise UserError(f"the model server refused the clip: {detail}")


def openai_compare(http: Any, audio: Path, language: str) -> dict[str, Any]:
    """/compare's answer from plain OpenAI calls: the tuned model is the one whose `parent` is
    listed (a LoRA adapter on vLLM, served beside its base) or the only one (merged weights)."""
    models = checked(http.get("/v1/models")).json()["data"]
    tuned = next((m for m in models if m.get("parent")), models[0])
    base = tuned.get("parent") if any(m["id"] == tuned.get("parent") for m in models) else None

    def text(model: str) -> str:
        fields = {"model": model, **({"language": language} if language else {})}
        reply = http.post("/v1/audio/transcriptions", data=fields,
                          files={"file": (audio.name, audio.read_bytes())})
        return checked(reply).json()["text"]

    return {"tuned": text(tuned["id"]), "base": text(base) if base else None,
            "model": tuned["id"], "base_model": base or tuned.get("parent") or ""}
