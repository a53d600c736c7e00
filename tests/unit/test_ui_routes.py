"""Every route the UI server exposes, called without signing in (and then signed in) over real
HTTP, in password mode, with a sentinel HF_TOKEN in the server's environment and HF_ENDPOINT
at the Hub emulator: a route either asks for the login or answers without anyone's data, and
nothing reaches the Hub on a caller's behalf.

The routes come from the running FastAPI app itself, so a route a Gradio upgrade adds is
called too; a path parameter this file has no plausible value for fails the test."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from tests.emulators.hub import HubEmulator
from tests.helpers import free_port, speechlike, write_audio
from voxtune.ui.auth import user_key
from voxtune.ui.workspace import Workspace

SENTINEL = "hf_server_token_sentinel_0123456789"  # the server's HF_TOKEN: must never leave it
PASSWORD = "alice-password-sentinel"
TRANSCRIPT = "alice private transcript sentinel"
# Gradio's path parameters → a plausible value each (a real clip's path where a file is meant)
PATH_VALUES = {
    "api_name": "greet", "endpoint": "greet", "record_id": "0000000000000000000001",
    "asset_id": "asset-0", "event_id": "0" * 32, "session_hash": "abcdefghij",
    "run": "0", "component_id": "1", "segment_id": "0", "ext": "ts", "id": "1",
    "environment": "prod", "type": "index", "file_name": "index.js", "size": "192",
    "key": "not-the-key",
}
QUERY = {"bucket": "operator/voxtune-runs", "session_hash": "abcdefghij", "upload_id": "u1",
         "limit": "5", "fn_index": "0"}  # extra query parameters are ignored by FastAPI
BODY = {"bucket_id": "operator/voxtune-runs", "data": [], "fn_index": 0, "event_data": None,
        "session_hash": "abcdefghij", "event_id": "0" * 32, "trigger_id": 1, "hash": "0",
        "code": "", "prompt": "", "username": "alice", "password": "wrong"}
PARAMETER = re.compile(r"{(\w+)(?::\w+)?}")
FILE_PARAMETERS = {"path", "path_or_url", "url_path"}


def serve_for_test(routes_file: str) -> None:
    """The child process: the UI as `voxtune ui` launches it; writes its routes, then serves
    until its stdin is closed."""
    from fastapi.routing import iter_route_contexts

    from voxtune.client import Client
    from voxtune.spec import Settings
    from voxtune.ui.app import launch, login_options
    from voxtune.ui.demo import DemoServers
    from voxtune.ui.handlers import Context
    from voxtune.ui.settings import UiSettings

    settings, home = UiSettings(), Settings().home
    ctx = Context(Client("local"), settings, home, DemoServers(home / "ui"))
    app = launch(ctx, "127.0.0.1", int(os.environ["TEST_UI_PORT"]), login_options(settings),
                 block=False)
    routes = [(sorted(route.methods or {"GET"}), route.path)
              for route in iter_route_contexts(app.server_app.routes)]
    Path(routes_file).write_text(json.dumps(routes))
    sys.stdin.read()
    app.close()


@dataclass
class Answer:
    status: int
    text: str  # status line, headers and (the start of) the body


@dataclass
class UiServer:
    port: int
    routes: list[tuple[list[str], str]]

    def call(self, method: str, path: str, cookie: str = "") -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            body = json.dumps(BODY) if method in ("POST", "PUT", "PATCH") else None
            headers = {"Content-Type": "application/json", **({"Cookie": cookie} if cookie
                                                                else {})}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            head = f"{response.status} {response.reason}\n{response.headers}"
            if "text/event-stream" in response.headers.get("content-type", ""):
                connection.sock.settimeout(2)  # a stream: what it says first is enough
            try:
                content = response.read1(1 << 20) if method != "HEAD" else b""
            except TimeoutError:
                content = b""
            return Answer(response.status, head + content.decode(errors="replace"))
        finally:
            connection.close()

    def sign_in(self, user: str, password: str) -> str:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("POST", "/login", urlencode({"username": user,
                                                            "password": password}),
                               {"Content-Type": "application/x-www-form-urlencoded"})
            response = connection.getresponse()
            response.read()
            assert response.status == 200, response.status
            cookies = response.headers.get_all("set-cookie") or []
            return "; ".join(cookie.split(";", 1)[0] for cookie in cookies)
        finally:
            connection.close()


@pytest.fixture
def password_ui(tmp_path: Path, voxtune_home: Path) -> Iterator[tuple[UiServer, HubEmulator]]:
    users = tmp_path / "users.txt"
    users.write_text(f"alice:{PASSWORD}\nbob:builder\n")
    with HubEmulator(tokens={SENTINEL: "operator"}) as hub:
        port, routes_file = free_port(), tmp_path / "routes.json"
        env = {**hub.client_env(token=SENTINEL, hf_home=str(tmp_path / "hf")),
               "VOXTUNE_HOME": str(voxtune_home), "VOXTUNE_UI_AUTH": "password",
               "VOXTUNE_UI_USERS_FILE": str(users), "TEST_UI_PORT": str(port),
               "GRADIO_RUN_HISTORY": "True"}  # what launch() must override
        process = subprocess.Popen(
            [sys.executable, "-c", "from tests.unit.test_ui_routes import serve_for_test; "
             f"serve_for_test({str(routes_file)!r})"], stdin=subprocess.PIPE, env=env,
            cwd=Path(__file__).resolve().parents[2])
        try:
            deadline = time.monotonic() + 120  # importing gradio on a busy 2-core machine
            while not routes_file.is_file():
                assert process.poll() is None, "the UI server exited"
                assert time.monotonic() < deadline, "the UI server did not start"
                time.sleep(0.2)
            yield UiServer(port, [tuple(route) for route in json.loads(routes_file.read_text())]
                           ), hub
        finally:
            process.stdin.close()  # the child closes the app and exits
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def concrete(path: str, clip: Path) -> str:
    """`path` with each parameter filled in; a file parameter gets alice's clip."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in FILE_PARAMETERS:
            return quote(str(clip))
        assert name in PATH_VALUES, f"route {path}: add a plausible value for {{{name}}}"
        return PATH_VALUES[name]

    return PARAMETER.sub(value, path)


def test_no_route_gives_away_data_or_the_servers_token(password_ui, voxtune_home: Path,
                                                        tmp_path: Path) -> None:
    server, hub = password_ui
    alice = Workspace(voxtune_home, user_key("alice"))
    row = alice.add(write_audio(tmp_path / "a.wav", speechlike(1.0)), TRANSCRIPT, "en")
    clip = alice.recordings / row["audio_path"]
    secrets = [SENTINEL, PASSWORD, TRANSCRIPT]
    assert len(server.routes) > 30  # Gradio's own routes are all there to be called

    calls = sorted([(method, concrete(path, clip) + "?" + urlencode(QUERY))
                    for methods, path in server.routes for method in methods],
                   key=lambda call: "/logout" in call[1])  # signed in: log out last
    anonymous = {call: server.call(*call) for call in calls}
    leaks = [f"{method} {path} → {answer.status}: {secret}"
             for (method, path), answer in anonymous.items() for secret in secrets
             if secret in answer.text]
    assert leaks == []
    # whatever else a route says without the login, it does not talk to the Hub as someone
    assert [f"{r.method} {r.path} ({r.headers.get('authorization')})" for r in hub.requests] == []
    assert anonymous[("GET", "/config?" + urlencode(QUERY))].status == 401

    cookie = server.sign_in("alice", PASSWORD)  # signed in, still no Hub calls, no token
    signed_in = {call: server.call(*call, cookie=cookie) for call in calls if call[0] == "GET"}
    assert signed_in[("GET", "/config?" + urlencode(QUERY))].status == 200
    assert [f"GET {path}" for (_, path), answer in signed_in.items()
            if SENTINEL in answer.text] == []
    assert [f"{r.method} {r.path}" for r in hub.requests] == []
    # the traffic summary of every user's requests is not for other users
    assert signed_in[("GET", "/monitoring/summary?" + urlencode(QUERY))].status == 403
