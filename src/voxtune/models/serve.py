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
settings: the same code and settings as the card's WER and the generated Space. A LoRA model's
base transcript comes from the same weights with the adapter disabled; a merged or fully tuned
model loads its base beside it. The model is loaded before the port opens: a readiness probe
or the UI sees the port only when transcription works.
"""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from voxtune.errors import UserError
from voxtune.models.inference import LoadedModel, transcribe
from voxtune.models.load import load, load_tuned
from voxtune.run.layout import FINAL, registry_dir
from voxtune.spec import EvalSpec

MAX_AUDIO_BYTES = 20 * 1024 * 1024  # ~2 min of 44.1-kHz 16-bit stereo WAV; Try-it clips are short


def resolve_model(reference: str, home: Path) -> str:
    """A folder holding the model, or the Hub id as given."""
    from voxtune.publish.registry import Registry

    path = Path(reference).expanduser()
    if path.is_dir():
        return str((path / FINAL if (path / FINAL).is_dir() else path).resolve())
    registry = Registry(registry_dir(home))
    name = reference.replace("/", "@", 1).partition("@")[0]
    if registry.versions(name) and "/" not in reference:
        return str(registry.find(reference).path)
    if path.exists() or reference.startswith((".", "/", "~")) or reference.count("/") != 1:
        raise UserError(f"{reference}: not a registry model, a model folder or a Hub id "
                        "(see `voxtune models list`)")
    return reference


@dataclass
class Pair:
    """The fine-tuned model and where its base transcripts come from."""

    tuned: LoadedModel
    base: LoadedModel | None  # None: the tuned model with its adapter disabled
    base_name: str
    max_new_tokens: int  # the run's eval.max_new_tokens: as the card's WER was measured

    def transcribe(self, audio: Any, language: str | None) -> dict[str, str]:
        tuned = self._transcribe(self.tuned, audio, language)
        if self.base is None:
            with self.tuned.model.disable_adapter():
                base = self._transcribe(self.tuned, audio, language)
        else:
            base = self._transcribe(self.base, audio, language)
        return {"tuned": tuned, "base": base, "model": self.tuned.description,
                "base_model": self.base_name}

    def _transcribe(self, loaded: LoadedModel, audio: Any, language: str | None) -> str:
        return transcribe(loaded.model, loaded.processor, audio, language,
                          max_new_tokens=self.max_new_tokens).text


def load_pair(source: str) -> Pair:
    """The fine-tuned model, and its base: the same weights with the adapter disabled for a
    LoRA adapter, or the base loaded beside merged or fully tuned weights."""
    tuned, spec = load_tuned(source)
    max_new_tokens = (spec.eval if spec else EvalSpec()).max_new_tokens
    if tuned.base is not None:
        return Pair(tuned, None, tuned.base, max_new_tokens)
    if spec is None:
        raise UserError(f"{source}: a merged or fully tuned model without spec.yaml; the base "
                        "to compare with is unknown")
    model, processor = load(spec.base_model, tuned.model.dtype)
    base = LoadedModel(model.to(tuned.model.device), processor, spec.base_model, None)
    return Pair(tuned, base, spec.base_model, max_new_tokens)


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
            self._reply(HTTPStatus.OK, {"model": pair.tuned.description,
                                        "base_model": pair.base_name})

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
