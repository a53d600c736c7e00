"""A fine-tuned model behind a tiny JSON HTTP API, base vs tuned: what `voxtune serve` runs.

    voxtune serve my-voice@2 --port 7861          # local registry NAME[@VERSION]
    voxtune serve runs/me/final                   # a folder (run folder, final/, registry version)
    voxtune serve alice/my-voice                  # a Hub id (a private repo reads HF_TOKEN)
    curl -s localhost:7861/healthz                # {"model": "...", "base": "...", ...}
    curl -s --data-binary @clip.wav 'localhost:7861/transcribe?language=en'
                                                  # {"tuned": "...", "base": "...", ...}

The UI's Try-it calls this: locally the UI starts `voxtune serve`, in the cluster it is the
demo Deployment (VOXTUNE_UI_DEMO_URL), so the UI itself never imports torch. It loads with
voxtune.models.load and transcribes with voxtune.models.inference, with the run's generation
settings: the same code and settings as the card's WER and the generated Space.

Base transcripts never cost a second full copy where memory does not hold one: a LoRA adapter's
come from the same weights with the adapter disabled; for merged or fully tuned weights the base
is loaded beside them only when the device's free memory holds it (`--base auto`, the default;
`load` forces it, `skip` turns base transcripts off — /healthz says which and why). The model is
loaded before the port opens: a readiness probe or the UI sees the port only when transcription
works.
"""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlparse

from voxtune.errors import UserError
from voxtune.models.inference import LoadedModel, transcribe
from voxtune.models.load import load, load_tuned
from voxtune.spec import EvalSpec

MAX_AUDIO_BYTES = 20 * 1024 * 1024  # ~2 min of 44.1-kHz 16-bit stereo WAV; Try-it clips are short
BaseChoice = Literal["auto", "load", "skip"]
BASE_CHOICES: tuple[BaseChoice, ...] = ("auto", "load", "skip")
# A second copy of the weights plus what generating one clip takes (KV cache, activations,
# allocator slack): measured ≈ 1.1× the weights for the tiny model, rounded up.
BASE_HEADROOM = 1.25
GIB = 2**30


def base_source(adapter: bool, weights_bytes: int, free_bytes: int | None,
                choice: BaseChoice) -> tuple[Literal["adapter", "load", "skip"], str]:
    """Where base transcripts come from, and why: the adapter disabled (no extra memory), the
    base loaded beside the tuned weights, or none. `free_bytes` None: unknown, so auto loads."""
    if adapter:
        return "adapter", "the tuned weights with the LoRA adapter disabled"
    if choice != "auto":
        return choice, f"--base {choice}"
    need = weights_bytes * BASE_HEADROOM
    if free_bytes is None or need <= free_bytes:
        return "load", "the base loaded beside the tuned weights"
    return "skip", (f"base transcripts are off: the base would need ≈{need / GIB:.1f} GiB and "
                    f"{free_bytes / GIB:.1f} GiB are free (serve an adapter, give the server "
                    "more memory, or force it with --base load)")


def free_memory_bytes(device: Any) -> int | None:
    """What the device can still hold: free GPU memory, or on the host the smaller of the
    kernel's MemAvailable and what the container's memory limit (cgroup v2) leaves."""
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    available: list[int] = []
    try:
        meminfo = Path("/proc/meminfo").read_text(encoding="utf-8")
        available += [int(line.split()[1]) * 1024 for line in meminfo.splitlines()
                      if line.startswith("MemAvailable:")]
        limit = Path("/sys/fs/cgroup/memory.max").read_text(encoding="utf-8").strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text(encoding="utf-8"))
            available.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(available) if available else None


def weights_bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@dataclass
class Pair:
    """The fine-tuned model and where its base transcripts come from."""

    tuned: LoadedModel
    base: LoadedModel | None  # loaded beside the tuned weights (base_from "load")
    base_name: str
    max_new_tokens: int  # the run's eval.max_new_tokens: as the card's WER was measured
    base_from: Literal["adapter", "load", "skip"] = "adapter"
    base_note: str = ""  # why base transcripts come from where they do (or not at all)

    def transcribe(self, audio: Any, language: str | None) -> dict[str, str | None]:
        tuned = self._transcribe(self.tuned, audio, language)
        base: str | None = None
        if self.base_from == "adapter":
            with self.tuned.model.disable_adapter():
                base = self._transcribe(self.tuned, audio, language)
        elif self.base is not None:
            base = self._transcribe(self.base, audio, language)
        return {"tuned": tuned, "base": base, "model": self.tuned.description,
                "base_model": self.base_name}

    def health(self) -> dict[str, str]:
        return {"model": self.tuned.description, "base_model": self.base_name,
                "base": self.base_from, "base_note": self.base_note}

    def _transcribe(self, loaded: LoadedModel, audio: Any, language: str | None) -> str:
        return transcribe(loaded.model, loaded.processor, audio, language,
                          max_new_tokens=self.max_new_tokens).text


def load_pair(source: str, base: BaseChoice = "auto") -> Pair:
    """The fine-tuned model, and where its base transcripts come from (`base_source`)."""
    tuned, spec = load_tuned(source)
    max_new_tokens = (spec.eval if spec else EvalSpec()).max_new_tokens
    if tuned.base is not None:
        where, note = base_source(True, 0, None, base)
        return Pair(tuned, None, tuned.base, max_new_tokens, where, note)
    base_name = spec.base_model if spec else ""
    where, note = base_source(False, weights_bytes(tuned.model),
                              free_memory_bytes(tuned.model.device), base)
    if where == "skip":
        return Pair(tuned, None, base_name, max_new_tokens, where, note)
    if spec is None:
        raise UserError(f"{source}: a merged or fully tuned model without spec.yaml; the base "
                        "to compare with is unknown (serve it with --base skip)")
    model, processor = load(spec.base_model, tuned.model.dtype)
    loaded = LoadedModel(model.to(tuned.model.device), processor, spec.base_model, None)
    return Pair(tuned, loaded, spec.base_model, max_new_tokens, where, note)


def decode_request(body: bytes) -> tuple[int, Any]:
    """Uploaded audio bytes (WAV, FLAC, OGG…) → (rate, samples), as inference accepts them."""
    import soundfile

    try:
        samples, rate = soundfile.read(io.BytesIO(body), dtype="float32", always_2d=False)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise ValueError(f"not readable audio ({error})") from None
    return rate, samples


def make_handler(pair: Pair) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()  # one generation at a time: the model is not shared-safe

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: HTTPStatus, document: dict[str, Any]) -> None:
            body = json.dumps(document, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if urlparse(self.path).path != "/healthz":
                return self._reply(HTTPStatus.NOT_FOUND, {"error": "GET /healthz or POST "
                                                          "/transcribe"})
            self._reply(HTTPStatus.OK, pair.health())

        def do_POST(self) -> None:
            url = urlparse(self.path)
            if url.path != "/transcribe":
                return self._reply(HTTPStatus.NOT_FOUND, {"error": "POST /transcribe"})
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_AUDIO_BYTES:
                return self._reply(HTTPStatus.BAD_REQUEST, {
                    "error": f"send 1 byte to {MAX_AUDIO_BYTES // 2**20} MB of audio"})
            language = parse_qs(url.query).get("language", ["auto"])[0]
            try:
                audio = decode_request(self.rfile.read(length))
                with lock:
                    result = pair.transcribe(audio, language)
            except ValueError as error:
                return self._reply(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            self._reply(HTTPStatus.OK, result)

        def log_message(self, format: str, *args: Any) -> None:
            print(f"serve: {self.address_string()} {format % args}", flush=True)

    return Handler
