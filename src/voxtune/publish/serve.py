"""`voxtune serve MODEL_REF`: a fine-tuned model behind a tiny JSON HTTP API, base vs tuned.

    voxtune serve my-voice@2 --port 7861          # local registry NAME[@VERSION]
    voxtune serve runs/me/final                   # a folder (run folder, final/, registry version)
    voxtune serve alice/my-voice                  # a Hub id (a private repo reads HF_TOKEN)
    curl -s localhost:7861/healthz                # {"model": "...", "base": "...", ...}
    curl -s --data-binary @clip.wav 'localhost:7861/transcribe?language=en'
                                                  # {"tuned": "...", "base": "...", ...}

The UI's Try-it calls this: locally the UI starts it as a subprocess, in the cluster it is the
demo Deployment (VOXTUNE_UI_DEMO_URL), so the UI itself never imports torch. It transcribes
with voxtune.publish.inference, the same code the generated Space runs. A LoRA model's base
transcript comes from the same weights with the adapter disabled; a merged or fully tuned model
loads its base beside it. The base is built through voxtune.train.model, so tiny-random presets
(which are no Hub ids) work too. The model is loaded before the port opens: a readiness probe
or the UI sees the port only when transcription works.
"""

from __future__ import annotations

import argparse
import io
import json
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from voxtune.errors import ExitCode, UserError
from voxtune.publish import inference
from voxtune.publish.bundle import FINAL, SPEC
from voxtune.spec import RunSpec, Settings, read_yaml

MAX_AUDIO_BYTES = 20 * 1024 * 1024  # ~2 min of 44.1-kHz 16-bit stereo WAV; Try-it clips are short


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve", help="Serve a fine-tuned model over HTTP (base vs tuned transcripts); what "
        "the UI's Try-it and the in-cluster demo call.",
        epilog="example: voxtune serve my-voice@2 --port 7861")
    parser.add_argument("model", help="Local registry NAME[@VERSION], a model or run folder, "
                        "or a Hub id.")
    parser.add_argument("--host", default="127.0.0.1", help="Interface; 0.0.0.0 in a pod.")
    parser.add_argument("--port", type=int, default=7861)
    parser.set_defaults(handler=_serve)


def resolve_model(reference: str, home: Path) -> str:
    """A folder holding the model, or the Hub id as given."""
    from voxtune.publish.registry import Registry
    from voxtune.publish.step import REGISTRY

    path = Path(reference).expanduser()
    if path.is_dir():
        return str((path / FINAL if (path / FINAL).is_dir() else path).resolve())
    registry = Registry(home / REGISTRY)
    name = reference.replace("/", "@", 1).partition("@")[0]
    if registry.versions(name) and "/" not in reference:
        return str(registry.find(reference).path)
    if path.exists() or reference.startswith((".", "/", "~")) or reference.count("/") != 1:
        raise UserError(f"{reference}: not a registry model, a model folder or a Hub id "
                        "(see `voxtune models list`)")
    return reference


def trained_spec(source: str) -> RunSpec | None:
    """The spec.yaml published with every voxtune model (None for models from elsewhere)."""
    path = Path(source) / SPEC
    if not Path(source).is_dir():
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            path = Path(hf_hub_download(source, SPEC))
        except EntryNotFoundError:
            return None
    return RunSpec.model_validate(read_yaml(path)) if path.is_file() else None


@dataclass
class Pair:
    """The fine-tuned model and where its base transcripts come from."""

    tuned: inference.LoadedModel
    base: inference.LoadedModel | None  # None: the tuned model with its adapter disabled
    base_name: str

    def transcribe(self, audio: Any, language: str | None) -> dict[str, str]:
        tuned = inference.transcribe(self.tuned, audio, language)
        if self.base is None:
            with self.tuned.model.disable_adapter():
                base = inference.transcribe(self.tuned, audio, language)
        else:
            base = inference.transcribe(self.base, audio, language)
        return {"tuned": tuned, "base": base, "model": self.tuned.description,
                "base_model": self.base_name}


def load_pair(source: str) -> Pair:
    from voxtune.train.model import load

    spec = trained_spec(source)
    adapter = inference.adapter_config(source) is not None
    base_name = spec.base_model if spec else None
    if adapter:
        built = load(base_name)[0] if base_name else None
        tuned = inference.load_model(source, base_model=base_name, base=built)
        return Pair(tuned, None, tuned.base or "")
    if base_name is None:
        raise UserError(f"{source}: a merged or fully tuned model without spec.yaml; the base "
                        "to compare with is unknown")
    tuned = inference.load_model(source)
    model, processor = load(base_name)
    base = inference.LoadedModel(model.to(tuned.model.device).eval(), processor, base_name, None)
    return Pair(tuned, base, base_name)


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


def _serve(args: argparse.Namespace) -> int:
    source = resolve_model(args.model, Settings().home)
    try:
        pair = load_pair(source)
    except inference.ModelLoadError as error:
        raise UserError(str(error)) from None
    server = ThreadingHTTPServer((args.host, args.port), make_handler(pair))
    print(f"serving {pair.tuned.description} (base: {pair.base_name}) on "
          f"http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return ExitCode.OK
