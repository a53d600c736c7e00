"""Try-it against a server without /compare (the chart's vLLM demo): base and tuned transcripts
come from OpenAI transcription calls, one per model `/v1/models` lists, and a refusal shows the
server's message. The server is a loopback HTTP emulator of vLLM's OpenAI routes (its 404 for
unknown routes, its model list with `parent` for a LoRA adapter)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.helpers import speechlike, write_audio
from voxtune.errors import UserError
from voxtune.ui.demo import DemoServers

BASE = "mistralai/Voxtral-Mini-3B-2507"


class VllmLike(BaseHTTPRequestHandler):
    models: ClassVar[list[dict]] = []

    def reply(self, code: int, document: dict) -> None:
        body = json.dumps(document).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            return self.reply(200, {"object": "list", "data": self.models})
        self.reply(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode("latin-1")
        if self.path != "/v1/audio/transcriptions":
            return self.reply(404, {"detail": "Not Found"})
        model = re.search(r'name="model"\r\n\r\n([^\r]*)', body)[1]
        language = re.search(r'name="language"\r\n\r\n([^\r]*)', body)
        if "RIFF" not in body:
            return self.reply(400, {"error": {"message": "no audio in the upload",
                                              "type": "invalid_request_error"}})
        self.reply(200, {"text": f"{model} heard {language[1] if language else 'auto'}"})

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def vllm_like() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), VllmLike)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_audio(tmp_path / "clip.wav", speechlike(1.0))


def test_a_lora_adapter_on_vllm_is_compared_with_its_base(vllm_like: str, clip: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setattr(VllmLike, "models", [{"id": BASE, "object": "model"},
                                             {"id": "my-voice@2", "parent": BASE}])
    result = DemoServers.transcribe(vllm_like, clip, "en")
    assert result == {"tuned": "my-voice@2 heard en", "base": f"{BASE} heard en",
                      "model": "my-voice@2", "base_model": BASE}


def test_a_merged_model_on_vllm_has_no_base_transcript(vllm_like: str, clip: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(VllmLike, "models", [{"id": "my-voice@3", "object": "model"}])
    result = DemoServers.transcribe(vllm_like, clip, "auto")
    assert result["tuned"] == "my-voice@3 heard auto" and result["base"] is None


def test_the_servers_refusal_is_shown(vllm_like: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(VllmLike, "models", [{"id": "my-voice@3", "object": "model"}])
    notes = tmp_path / "notes.wav"
    notes.write_text("not audio")
    with pytest.raises(UserError, match="refused the clip: no audio in the upload"):
        DemoServers.transcribe(vllm_like, notes, "en")


def test_an_unreachable_server_is_a_clear_error(clip: Path) -> None:
    with pytest.raises(UserError, match=r"cannot reach the model server at http://127\.0\.0\.1:9"):
        DemoServers.transcribe("http://127.0.0.1:9", clip, "en")
