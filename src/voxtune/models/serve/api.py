"""The HTTP API of `voxtune serve`: OpenAI's transcription endpoint, plus what operators and the UI
need.

    POST /v1/audio/transcriptions   multipart: file, model, language, response_format
                                    (json | text | verbose_json), prompt, temperature
    GET  /v1/models                 the tuned model and, when it can be served, its base
    POST /compare                   multipart: file, language → base and tuned transcripts (Try-it)
    GET  /healthz · /readyz         alive · ready for more (the worker runs, the queue has room)
    GET  /metrics                   Prometheus text format

Errors have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, so every client
shows the message: 400 unreadable audio, a clip over the model's audio window, an unknown field
value; 404 an unknown model; 413 an upload over the size limit; 503 a full queue; 504 a request
that waited past its timeout. `prompt` and `temperature` are accepted and ignored: decoding is
always greedy with the run's max_new_tokens, the settings the model card's WER was measured with.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from voxtune.models.serve.batcher import Batcher, Expired, QueueFull
from voxtune.models.serve.metrics import ServeMetrics
from voxtune.models.serve.pair import Pair, Target

log = logging.getLogger("voxtune.serve")
RESPONSE_FORMATS = ("json", "text", "verbose_json")
ENDPOINTS = ("/v1/audio/transcriptions", "/v1/models", "/compare", "/healthz", "/readyz",
             "/metrics")


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 20 * 2**20  # ≈2 min of 44.1-kHz 16-bit stereo WAV
    request_timeout_s: float = 120.0  # queueing plus generation
    max_batch: int = 8  # clips per generate call; 1 turns batching off
    max_wait_s: float = 0.01  # how long the worker waits for a batch to fill
    max_queue: int = 64


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def document(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param,
                          "code": self.code}}


@dataclass(frozen=True)
class Clip:
    rate: int
    samples: Any

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def decode_audio(data: bytes, filename: str) -> Clip:
    """Uploaded bytes (WAV, FLAC, OGG, MP3…) → samples; ApiError 400 when they are no audio."""
    import soundfile

    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=False)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise ApiError(400, f"{filename}: not readable audio ({error}); send WAV, FLAC, OGG or "
                       "MP3", "invalid_audio", "file") from None
    if len(samples) == 0:
        raise ApiError(400, f"{filename}: the audio is empty", "invalid_audio", "file")
    return Clip(rate, samples)


def language_of(fields: dict[str, str]) -> str | None:
    """The request's ISO 639-1 code, or None (detect); ApiError 400 for anything else. Any code
    passes (a run may have taught the model a language beyond Voxtral's eight)."""
    language = fields.get("language", "").strip().lower()
    if language in ("", "auto"):
        return None
    if not re.fullmatch(r"[a-z]{2}", language):
        raise ApiError(400, f"language {fields['language']!r} is not an ISO 639-1 code (two "
                       "letters such as en, or omit it to detect the language)",
                       "invalid_language", "language")
    return language


def check_length(clip: Clip, window_seconds: float, filename: str) -> None:
    if clip.seconds > window_seconds:
        raise ApiError(400, f"{filename}: the clip is {clip.seconds:.1f} s; this model "
                       f"transcribes up to {window_seconds:g} s per request (split longer "
                       "recordings)", "audio_too_long", "file")


def build_app(pair: Pair, limits: Limits) -> FastAPI:
    """The FastAPI app serving `pair`; its batcher runs while the app does (lifespan)."""
    batcher = Batcher(pair.transcribe_batch, max_batch=limits.max_batch,
                      max_wait_s=limits.max_wait_s, max_queue=limits.max_queue)
    metrics = ServeMetrics(batcher.depth)
    batcher.on_batch = metrics.batch.observe
    names = pair.names()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        batcher.close()

    app = FastAPI(title="voxtune serve", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.batcher, app.state.metrics = batcher, metrics

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        endpoint = request.url.path if request.url.path in ENDPOINTS else "other"
        if endpoint not in ("/metrics", "/healthz", "/readyz"):  # scrapes and probes
            metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        return response

    @app.exception_handler(ApiError)
    async def refuse(request: Request, error: ApiError) -> JSONResponse:
        endpoint = request.url.path if request.url.path in ENDPOINTS else "other"
        metrics.errors.labels(endpoint, error.code).inc()
        headers = {"Retry-After": "1"} if error.status == 503 else None
        return JSONResponse(error.document(), error.status, headers=headers)

    async def upload(request: Request) -> tuple[Clip, dict[str, str]]:
        """The multipart form's audio (checked) and its other fields."""
        declared = int(request.headers.get("content-length") or 0)
        if declared > limits.max_upload_bytes:  # refused before reading the body
            raise too_large(declared)
        try:
            form = await request.form()
        except Exception as error:  # not multipart, or a broken body
            raise ApiError(400, f"send multipart/form-data with a `file` field ({error})",
                           "invalid_request") from None
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise ApiError(400, "missing the `file` field (the audio to transcribe)",
                           "missing_file", "file")
        data = await file.read()
        if len(data) > limits.max_upload_bytes:
            raise too_large(len(data))
        name = file.filename or "file"
        clip = await run_in_threadpool(decode_audio, data, name)
        check_length(clip, pair.window_seconds, name)
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        return clip, fields

    def too_large(size: int) -> ApiError:
        return ApiError(413, f"the upload is {size / 2**20:.1f} MiB; the limit is "
                        f"{limits.max_upload_bytes / 2**20:.3g} MiB", "file_too_large", "file")

    async def transcribe(target: Target, clip: Clip, language: str | None) -> Any:
        try:
            future = batcher.submit(target, (clip.rate, clip.samples), language,
                                    limits.request_timeout_s)
        except QueueFull as error:
            raise ApiError(503, f"the server is busy ({error}); retry shortly",
                           "queue_full") from None
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future),
                                            limits.request_timeout_s)
        except (TimeoutError, asyncio.TimeoutError, Expired):  # distinct before Python 3.11
            future.cancel()
            raise ApiError(504, f"no transcript within {limits.request_timeout_s:g} s (the "
                           "server is overloaded)", "timeout") from None
        except Exception as error:  # the model failed on this clip: say so, keep serving
            log.exception("transcription failed")
            raise ApiError(500, f"transcription failed: {type(error).__name__}: {error}",
                           "transcription_failed") from None
        metrics.audio.labels(model_name(target)).inc(clip.seconds)
        return result

    def model_name(target: Target) -> str:
        return next(name for name, each in names.items() if each == target)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        clip, fields = await upload(request)
        model = fields.get("model", "")
        if model not in names:
            raise ApiError(404, f"model {model!r} is not served here; choose one of "
                           f"{', '.join(names)} (GET /v1/models)", "model_not_found", "model")
        response_format = fields.get("response_format") or "json"
        if response_format not in RESPONSE_FORMATS:
            raise ApiError(400, f"response_format {response_format!r} is not supported; use "
                           f"{', '.join(RESPONSE_FORMATS)}", "unsupported_format",
                           "response_format")
        language = language_of(fields)
        transcript = await transcribe(names[model], clip, language)
        if response_format == "text":
            return PlainTextResponse(transcript.text)
        if response_format == "json":
            return JSONResponse({"text": transcript.text})
        return JSONResponse({"task": "transcribe", "language": language or "auto",
                             "duration": round(clip.seconds, 3), "text": transcript.text,
                             "segments": [], "hit_max_length": transcript.hit_max_length})

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        created = int(time.time())
        listed = [{"id": name, "object": "model", "created": created, "owned_by": "voxtune",
                   **({"parent": pair.base_name} if target == "tuned" and pair.base_name
                      else {})} for name, target in names.items()]
        return {"object": "list", "data": listed}

    @app.post("/compare")
    async def compare(request: Request) -> dict[str, Any]:
        clip, fields = await upload(request)
        language = language_of(fields)
        jobs = [transcribe("tuned", clip, language)]
        if pair.serves_base:
            jobs.append(transcribe("base", clip, language))
        done = await asyncio.gather(*jobs)
        return {"tuned": done[0].text, "base": done[1].text if len(done) > 1 else None,
                "model": pair.name, "description": pair.tuned.description,
                "base_model": pair.base_name,
                "duration": round(clip.seconds, 3)}

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        alive = batcher.alive()
        return JSONResponse({"status": "ok" if alive else "the model worker stopped",
                             **pair.health()}, 200 if alive else 503)

    @app.get("/readyz")
    async def readyz() -> PlainTextResponse:
        if not batcher.alive():
            return PlainTextResponse("the model worker stopped\n", 503)
        if batcher.full():
            return PlainTextResponse("busy: the queue is full\n", 503)
        return PlainTextResponse("ok\n")

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
