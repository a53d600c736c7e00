"""A loopback emulator of the Hugging Face Hub, for tests (standard library only, plus a fixture).

The real ``huggingface_hub`` client — and through it ``datasets`` and ``transformers`` — talks to
it over real HTTP when ``HF_ENDPOINT`` points at ``HubEmulator.url``, so publishing code runs
unchanged. Usage::

    with HubEmulator() as hub:            # or the ``hub_emulator`` fixture
        subprocess.run([...], env=hub.client_env(hf_home=tmp_path), check=True)
        assert hub.repo("alice/model").private
        assert hub.occurrences(DEFAULT_TOKEN) == []

Environment and import order: ``huggingface_hub`` (and ``datasets``, ``transformers``) read
``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_HUB_DISABLE_XET`` once, at import, and the pytest
process has usually imported them long before a test starts its emulator on a random port. So:
- code that only takes the endpoint from the environment (``datasets.load_dataset``,
  ``from_pretrained``, the ``voxtune`` CLI) runs in a subprocess with ``env=hub.client_env(...)``;
- in-process tests pass ``endpoint=hub.url`` explicitly (``HfApi(endpoint=...)``,
  ``hf_hub_download(..., endpoint=...)``, ``snapshot_download(..., endpoint=...)``).

Upload paths: like the real Hub, ``/preupload`` answers ``"lfs"`` for files of ``lfs_threshold``
bytes (10 MB) or more and for paths the revision's ``.gitattributes`` tracks with LFS (a new
repo's covers ``*.safetensors``, ``*.parquet``, ``*.wav`` …), ``"regular"`` otherwise. Regular
files travel base64-inlined in the NDJSON commit. For LFS files the client uses the LFS batch API
(``basic`` transfer: PUT, then verify) only when it runs with ``HF_HUB_DISABLE_XET=1``;
otherwise it takes the Xet protocol, which is not emulated (its ``xet-write-token`` request gets a
501 saying so). ``lfs_threshold=None`` answers ``"regular"`` to everything, which serves clients
with Xet on — but breaks ``datasets``' ``push_to_hub``, which deletes each parquet shard right
after ``preupload_lfs_files`` and so relies on the Hub answering ``"lfs"`` for it. Downloads never
involve Xet (no Xet headers are sent).

Like the real Hub: repos are public unless the create request says private; a private repo is a
404 ``RepoNotFound`` for everyone but its namespace's users; an unknown token is a 401 on every
endpoint; a name clash is a 409; each commit is atomic and gets a new 40-hex oid; a new repo has
an "initial commit" holding ``.gitattributes``. Known simplifications: no pull requests, tags,
gating, Xet, multipart LFS or pagination; ``/api/validate-yaml`` accepts everything; a Space
"runs" as soon as it exists, on the hardware last requested.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

DEFAULT_USER = "alice"
DEFAULT_TOKEN = "hf_emulator_alice_write_token"  # a sentinel: tests grep outputs for it
LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub's own size cut-off for "lfs" in /preupload
REPO_TYPES = ("model", "dataset", "space")
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
API_TYPES = {f"{t}s": t for t in REPO_TYPES}  # "/api/models/..." → "model"
INITIAL_GITATTRIBUTES = b"".join(
    f"*.{ext} filter=lfs diff=lfs merge=lfs -text\n".encode()
    for ext in ("bin", "safetensors", "pt", "parquet", "arrow", "wav", "flac", "mp3", "zip")
)


class HubError(Exception):
    """An HTTP error answered the way the Hub does: JSON body, ``X-Error-Code``/``-Message``."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class NotEmulated(HubError):
    """A request no route matches: a 404, and recorded in ``HubEmulator.unhandled``."""

    def __init__(self, method: str, path: str):
        super().__init__(404, f"not emulated: {method} {path}")


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob (what the Hub reports as a regular file's ``oid``/ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class StoredFile:
    """One file (shared by the commits that keep it); ``lfs`` when it came through LFS."""

    data: bytes
    lfs: bool = False

    @cached_property  # hashes are cached: a 20 MB file is listed and resolved many times
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @cached_property
    def pointer(self) -> bytes:
        """The git-lfs pointer file that git stores in place of an LFS file's bytes."""
        return (b"version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n"
                % (self.sha256.encode(), len(self.data)))

    @cached_property
    def oid(self) -> str:
        return git_blob_oid(self.pointer if self.lfs else self.data)

    def tree_entry(self, path: str) -> dict:
        entry = {"type": "file", "path": path, "size": len(self.data), "oid": self.oid}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.data),
                            "pointerSize": len(self.pointer)}
        return entry


@dataclass
class Commit:
    oid: str
    title: str
    description: str
    parent: str | None
    author: str
    date: str
    files: dict[str, StoredFile]  # the full tree after this commit

    def contents(self) -> dict[str, bytes]:
        return {path: stored.data for path, stored in self.files.items()}


@dataclass
class Repo:
    """One repository: branches point into a commit graph; every commit holds its full tree."""

    repo_type: str
    repo_id: str
    private: bool
    sdk: str | None = None
    created_at: str = field(default_factory=_now)
    branches: dict[str, str] = field(default_factory=dict)  # branch name → commit oid
    commits: dict[str, Commit] = field(default_factory=dict)  # oid → commit

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]

    @property
    def url_path(self) -> str:
        return URL_PREFIX[self.repo_type] + self.repo_id

    def resolve(self, revision: str) -> Commit:
        """A branch name or a full commit oid → that commit (404 ``RevisionNotFound`` else)."""
        oid = self.branches.get(revision, revision)
        if oid not in self.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[oid]

    def files(self, revision: str = "main") -> dict[str, bytes]:
        """Path → bytes of every file at ``revision``."""
        return self.resolve(revision).contents()

    def history(self, revision: str = "main") -> list[Commit]:
        """Commits reachable from ``revision``, newest first (the initial commit is last)."""
        chain, oid = [], self.resolve(revision).oid
        while oid is not None:
            chain.append(self.commits[oid])
            oid = self.commits[oid].parent
        return chain


@dataclass
class RequestRecord:
    """What the emulator saw of one request; the ``Authorization`` value is never kept."""

    method: str
    path: str  # with the query string
    headers: dict[str, str]
    status: int = 0


class HubEmulator:
    """The emulated Hub: ``start()``/``stop()`` (or ``with``), ``.url``, and inspection state.

    ``tokens`` maps each valid token to its user; ``orgs`` maps a user to the organisations it may
    write to; ``lfs_threshold`` chooses upload modes (module docstring). Inspection: ``repos``
    (by ``(repo_type, repo_id)``; ``repo()``/``list_repos()``), ``lfs_objects`` (sha256 →
    bytes), ``space_secrets``/``space_variables`` (repo id → key → value), ``space_hardware``
    (repo id → flavor last requested), ``requests`` (RequestRecord list), ``unhandled``
    (requests no route matched) and ``occurrences(text)``.
    """

    def __init__(self, tokens: dict[str, str] | None = None, *,
                 orgs: dict[str, list[str]] | None = None,
                 lfs_threshold: int | None = LFS_THRESHOLD,
                 host: str = "127.0.0.1", port: int = 0):
        self.tokens = dict(tokens) if tokens is not None else {DEFAULT_TOKEN: DEFAULT_USER}
        self.orgs = {user: list(names) for user, names in (orgs or {}).items()}
        self.lfs_threshold = lfs_threshold
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.space_secrets: dict[str, dict[str, str]] = {}
        self.space_variables: dict[str, dict[str, str]] = {}
        self.space_hardware: dict[str, str] = {}
        self.requests: list[RequestRecord] = []
        self.unhandled: list[RequestRecord] = []
        self._announced_lfs: dict[str, int] = {}  # oid → size, from batch requests
        self._lock = threading.RLock()  # one lock: every commit is atomic, reads see whole ones
        self._commit_counter = 0
        handler = type("HubHandler", (_Handler,), {"emulator": self})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.url = f"http://{host}:{self._server.server_address[1]}"

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> HubEmulator:
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-emulator",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- inspection -----------------------------------------------------------------------
    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def list_repos(self, repo_type: str | None = None) -> list[Repo]:
        return [r for (kind, _), r in sorted(self.repos.items()) if repo_type in (None, kind)]

    def client_env(self, token: str | None = DEFAULT_TOKEN, *, hf_home: str | None = None,
                   base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a subprocess whose Hub clients must talk to this emulator.

        Xet is disabled (LFS is the large-file path we emulate), offline switches are cleared, the
        loopback host bypasses any proxy, and ``HF_HOME`` (cache, stored token) goes to ``hf_home``
        so a developer's real token never leaks in. ``token=None`` means anonymous.
        """
        env = dict(os.environ if base is None else base)
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE",
                     "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            env.pop(name, None)
        host = urlsplit(self.url).hostname or "127.0.0.1"
        # The ETag timeout is raised because a busy 2-core test machine can miss the default 10 s.
        env.update(HF_ENDPOINT=self.url, HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
                   HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_ETAG_TIMEOUT="30",
                   NO_PROXY=",".join(filter(None, [host, "localhost", env.get("NO_PROXY")])))
        env["no_proxy"] = env["NO_PROXY"]
        if token is not None:
            env["HF_TOKEN"] = token
        if hf_home is not None:
            env["HF_HOME"] = str(hf_home)
        return env

    def occurrences(self, text: str) -> list[str]:
        """Where ``text`` (e.g. a token) appears in anything sent to the Hub, except Space
        secrets — the one place a token may legitimately go. Empty list = no leak."""
        needle, found = text.encode(), []
        with self._lock:
            for record in self.requests:
                where = f"request {record.method} {record.path}"
                found += [where] if text in record.path else []
                found += [f"{where} header {k}" for k, v in record.headers.items() if text in v]
            for repo in self.repos.values():
                for commit in repo.commits.values():
                    if text in commit.title or text in commit.description:
                        found.append(f"{repo.url_path} commit message {commit.oid}")
                    found += [f"{repo.url_path}:{path}"
                              for path, stored in commit.files.items() if needle in stored.data]
            found += [f"lfs object {oid}" for oid, data in self.lfs_objects.items()
                      if needle in data]
            found += [f"space {repo_id} variable {key}"
                      for repo_id, variables in self.space_variables.items()
                      for key, value in variables.items() if text in key or text in value]
        return list(dict.fromkeys(found))  # a file kept by later commits is reported once

    # ---- request plumbing -----------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: dict[str, str],
               body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Answer one request: (status, headers, body). Runs on the server's threads."""
        headers = {name.lower(): value for name, value in headers.items()}
        record = RequestRecord(method, raw_path, self._redacted(headers))
        with self._lock:
            self.requests.append(record)
        try:
            user = self._user(headers)
            try:
                status, reply_headers, reply = self._route(method, raw_path, headers, body, user)
            except (KeyError, ValueError, TypeError) as error:
                raise HubError(400, f"malformed request: {error!r}") from error
        except NotEmulated as error:
            with self._lock:
                self.unhandled.append(record)
            status, reply_headers, reply = _error_reply(error)
        except HubError as error:
            status, reply_headers, reply = _error_reply(error)
        record.status = status
        return status, reply_headers, reply

    def _redacted(self, headers: dict[str, str]) -> dict[str, str]:
        """Headers minus the token: ``Authorization`` shows whose token it was, nothing more."""
        clean = dict(headers)
        if "authorization" in clean:
            token = clean["authorization"].removeprefix("Bearer ").strip()
            user = self.tokens.get(token)
            clean["authorization"] = f"<token of {user}>" if user else "<invalid token>"
        return clean

    def _user(self, headers: dict[str, str]) -> str | None:
        if "authorization" not in headers:
            return None
        token = headers["authorization"].removeprefix("Bearer ").strip()
        if token not in self.tokens:
            # This exact message makes the client report "invalid token" instead of "not found".
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def _may_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and namespace in (user, *self.orgs.get(user, []))

    def _readable(self, repo_type: str, repo_id: str, user: str | None) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self._may_write(user, repo.namespace)):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _writable(self, repo_type: str, repo_id: str, user: str | None) -> Repo:
        repo = self._readable(repo_type, repo_id, user)
        if user is None:
            raise HubError(401, "You must be authenticated to write to this repo")
        if not self._may_write(user, repo.namespace):
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def _route(self, method: str, raw_path: str, headers: dict[str, str], body: bytes,
               user: str | None) -> tuple[int, dict[str, str], bytes]:
        split = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        # Split before unquoting: a revision like "refs%2Fpr%2F1" is one segment.
        segments = [unquote(s) for s in split.path.strip("/").split("/")]
        with self._lock:
            if segments[0] == "api":
                return self._api(method, segments[1:], query, body, user)
            if segments[0] == "_lfs" and len(segments) == 2 and method == "PUT":
                return self._lfs_put(segments[1], body)
            repo_type = "model"
            if segments[0] in ("datasets", "spaces"):
                repo_type, segments = API_TYPES[segments[0]], segments[1:]
            if len(segments) >= 3 and segments[2] == "resolve" and method in ("GET", "HEAD"):
                repo = self._readable(repo_type, "/".join(segments[:2]), user)
                return self._resolve(repo, segments[3], "/".join(segments[4:]), headers)
            if len(segments) == 6 and segments[1].endswith(".git") and method == "POST":
                repo_id = f"{segments[0]}/{segments[1].removesuffix('.git')}"
                repo = self._writable(repo_type, repo_id, user)
                if segments[2:] == ["info", "lfs", "objects", "batch"]:
                    return self._lfs_batch(repo, json.loads(body))
                if segments[2:] == ["info", "lfs", "objects", "verify"]:
                    return self._lfs_verify(json.loads(body))
        raise NotEmulated(method, split.path)

    def _api(self, method: str, segments: list[str], query: dict[str, str], body: bytes,
             user: str | None) -> tuple[int, dict[str, str], bytes]:
        try:  # JSON for most endpoints; the commit's NDJSON and paths-info's form are read later
            payload = json.loads(body) if body else {}
        except ValueError:
            payload = {}
        route = (method, *segments)
        if route == ("GET", "whoami-v2"):
            return self._whoami(user)
        if route == ("POST", "repos", "create"):
            return self._create_repo(payload, user)
        if route == ("DELETE", "repos", "delete"):
            return self._delete_repo(payload, user)
        if route == ("POST", "validate-yaml"):
            return _json({"errors": [], "warnings": []})  # no schema check: see module docstring
        if len(segments) < 3 or segments[0] not in API_TYPES:
            raise NotEmulated(method, "/api/" + "/".join(segments))
        repo_type, repo_id, rest = API_TYPES[segments[0]], "/".join(segments[1:3]), segments[3:]
        action = rest[0] if rest else ""
        if method == "GET" and (not rest or (action == "revision" and len(rest) == 2)):
            repo = self._readable(repo_type, repo_id, user)
            return _json(self._repo_info(repo, rest[1] if rest else "main"))
        if method == "GET" and action == "tree" and len(rest) >= 2:
            repo = self._readable(repo_type, repo_id, user)
            return _json(self._tree(repo, rest[1], "/".join(rest[2:]), query))
        if method == "POST" and action == "paths-info" and len(rest) == 2:
            repo = self._readable(repo_type, repo_id, user)
            form = parse_qs(body.decode())
            return _json(self._paths_info(repo, rest[1], form.get("paths", [])))
        if method == "GET" and rest == ["refs"]:
            return _json(self._refs(self._readable(repo_type, repo_id, user)))
        if method == "GET" and action == "commits" and len(rest) == 2:
            repo = self._readable(repo_type, repo_id, user)
            return _json([_commit_json(c) for c in repo.history(rest[1])])
        if "xet-write-token" in rest or "xet-read-token" in rest:
            raise HubError(501, "Xet is not emulated: run the client with HF_HUB_DISABLE_XET=1")
        repo = self._writable(repo_type, repo_id, user)  # everything below writes
        if method == "POST" and action == "preupload" and len(rest) == 2:
            return _json(self._preupload(repo, rest[1], payload))
        if method == "POST" and action == "commit" and len(rest) == 2:
            if query.get("create_pr"):
                raise HubError(400, "pull requests are not emulated")
            return _json(self._commit(repo, rest[1], body, user))
        if method == "POST" and action == "branch" and len(rest) == 2:
            return self._branch(repo, rest[1], payload)
        if method == "PUT" and rest == ["settings"]:
            if "private" in payload or "visibility" in payload:
                repo.private = payload.get("private", payload.get("visibility") == "private")
            return _json({"private": repo.private})
        if repo_type == "space" and rest:
            return self._space(repo, method, action, payload)
        raise NotEmulated(method, "/api/" + "/".join(segments))

    # ---- account and repos ----------------------------------------------------------------
    def _whoami(self, user: str | None) -> tuple[int, dict[str, str], bytes]:
        if user is None:
            raise HubError(401, "Invalid username or password.")
        orgs = [{"type": "org", "name": name, "roleInOrg": "write"}
                for name in self.orgs.get(user, [])]
        return _json({"type": "user", "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                      "name": user, "fullname": user, "email": f"{user}@example.invalid",
                      "orgs": orgs, "auth": {"type": "access_token", "accessToken": {
                          "displayName": "emulator", "role": "write"}}})

    def _create_repo(self, payload: dict, user: str | None) -> tuple[int, dict[str, str], bytes]:
        repo_type = payload.get("type") or "model"
        namespace = payload.get("organization") or user
        repo_id = f"{namespace}/{payload.get('name')}"
        if repo_type not in REPO_TYPES or not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
            raise HubError(400, f"Invalid repo type or name: {repo_type} {repo_id}")
        if user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        if not self._may_write(user, namespace):
            raise HubError(403, f"You don't have the rights to create a repo under {namespace}")
        url = f"{self.url}/{URL_PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            # The real Hub answers a clash with 409 (+ the url); exist_ok is a client-side switch.
            return _json({"error": f"You already created this {repo_type} repo", "url": url},
                         status=409)
        if repo_type == "space" and not payload.get("sdk"):
            raise HubError(400, "A Space needs an sdk")
        private = payload.get("private", payload.get("visibility") == "private")  # public default
        repo = Repo(repo_type, repo_id, private=bool(private), sdk=payload.get("sdk"))
        self._add_commit(repo, "main", None, {".gitattributes": StoredFile(INITIAL_GITATTRIBUTES)},
                         "initial commit", "", user)
        self.repos[(repo_type, repo_id)] = repo
        if repo_type == "space":
            self.space_secrets[repo_id] = {s["key"]: s["value"] for s in payload.get("secrets", [])}
            self.space_variables[repo_id] = {
                v["key"]: v["value"] for v in payload.get("variables", [])}
            self.space_hardware[repo_id] = payload.get("hardware") or "cpu-basic"
        return _json({"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self, payload: dict, user: str | None) -> tuple[int, dict[str, str], bytes]:
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or user}/{payload.get('name')}"
        self._writable(repo_type, repo_id, user)
        del self.repos[(repo_type, repo_id)]
        for store in (self.space_secrets, self.space_variables, self.space_hardware):
            store.pop(repo_id, None)
        return _json({})

    def _repo_info(self, repo: Repo, revision: str) -> dict:
        commit = repo.resolve(revision)
        info = {"_id": hashlib.sha1(repo.url_path.encode()).hexdigest()[:24], "id": repo.repo_id,
                "author": repo.namespace, "sha": commit.oid, "lastModified": commit.date,
                "createdAt": repo.created_at, "private": repo.private, "gated": False,
                "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                "siblings": [{"rfilename": path, "size": len(stored.data), "blobId": stored.oid,
                              **({"lfs": {"sha256": stored.sha256, "size": len(stored.data),
                                          "pointerSize": len(stored.pointer)}}
                                 if stored.lfs else {})}
                             for path, stored in sorted(commit.files.items())]}
        if repo.repo_type == "space":
            info.update(sdk=repo.sdk, runtime=self._runtime(repo.repo_id))
        return info

    def _tree(self, repo: Repo, revision: str, folder: str, query: dict[str, str]) -> list[dict]:
        files = repo.resolve(revision).files
        recursive = query.get("recursive", "").lower() in ("1", "true")
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        entries: dict[str, dict] = {}
        for path, stored in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix):].split("/")
            # Every folder between the listed one and the file is an entry of its own.
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                sub = prefix + "/".join(parts[:depth])
                entries.setdefault(sub, _folder_entry(sub))
            if recursive or len(parts) == 1:
                entries[path] = stored.tree_entry(path)
        if prefix and not entries:
            raise HubError(404, f"{folder} does not exist on {revision}", "EntryNotFound")
        return list(entries.values())

    def _paths_info(self, repo: Repo, revision: str, paths: list[str]) -> list[dict]:
        files, found = repo.resolve(revision).files, []
        for path in (p.strip("/") for p in paths):
            if path in files:
                found.append(files[path].tree_entry(path))
            elif any(name.startswith(f"{path}/") for name in files):
                found.append(_folder_entry(path))
        return found  # missing paths are left out, as on the Hub

    def _refs(self, repo: Repo) -> dict:
        return {"branches": [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": oid}
                             for name, oid in sorted(repo.branches.items())],
                "converts": [], "tags": [], "pullRequests": []}

    def _branch(self, repo: Repo, name: str, payload: dict) -> tuple[int, dict[str, str], bytes]:
        if name in repo.branches:
            raise HubError(409, f"Reference refs/heads/{name} already exists")
        repo.branches[name] = repo.resolve(payload.get("startingPoint") or "main").oid
        return _json({})

    # ---- uploads --------------------------------------------------------------------------
    def _preupload(self, repo: Repo, revision: str, payload: dict) -> dict:
        files = repo.resolve(revision).files
        tracked = _lfs_patterns(files.get(".gitattributes"))
        answers = []
        for item in payload.get("files", []):
            lfs = self.lfs_threshold is not None and (
                item["size"] >= self.lfs_threshold or _matches(item["path"], tracked))
            existing = files.get(item["path"])
            # The client skips files whose remote oid equals its local one (sha256 for LFS).
            remote = existing and (existing.sha256 if existing.lfs else existing.oid)
            answers.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular",
                            "shouldIgnore": False, "oid": remote or None})
        return {"files": answers, "commitOid": repo.resolve(revision).oid}

    def _commit(self, repo: Repo, revision: str, body: bytes, user: str) -> dict:
        """Apply an NDJSON commit all-or-nothing: everything is checked before anything lands."""
        if revision not in repo.branches:
            raise HubError(404, f"Invalid rev id: {revision} (commits go to branches)",
                           "RevisionNotFound")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "a commit starts with a header line")
        header, head = lines[0]["value"], repo.branches[revision]
        if header.get("parentCommit") not in (None, head):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(repo.commits[head].files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            path = value.get("path", "")
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"unsupported encoding for {path}")
                files[path] = StoredFile(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                if value.get("oid") not in self.lfs_objects:
                    raise HubError(422, f"LFS object {value.get('oid')} for {path} was never "
                                   "uploaded")
                files[path] = StoredFile(self.lfs_objects[value["oid"]], lfs=True)
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"{path} does not exist", "EntryNotFound")
            elif key == "deletedFolder":
                folder = path.rstrip("/") + "/"
                files = {p: f for p, f in files.items() if not p.startswith(folder)}
            else:
                raise HubError(400, f"unknown commit operation {key!r}")
        commit = self._add_commit(repo, revision, head, files, header.get("summary") or "",
                                  header.get("description") or "", user)
        return {"success": True, "commitOid": commit.oid, "pullRequestUrl": None,
                "commitUrl": f"{self.url}/{repo.url_path}/commit/{commit.oid}"}

    def _add_commit(self, repo: Repo, branch: str, parent: str | None,
                    files: dict[str, StoredFile], title: str, description: str,
                    author: str) -> Commit:
        self._commit_counter += 1
        seed = json.dumps([repo.url_path, parent, title, self._commit_counter,
                           sorted((p, f.oid) for p, f in files.items())])
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), title, description, parent,
                        author, _now(), files)
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit

    def _lfs_batch(self, repo: Repo, payload: dict) -> tuple[int, dict[str, str], bytes]:
        if payload.get("operation") != "upload":
            raise HubError(400, "only LFS uploads are emulated")
        objects = []
        for item in payload.get("objects", []):
            entry = {"oid": item["oid"], "size": item["size"]}
            if item["oid"] not in self.lfs_objects:  # already stored → no actions, client skips
                self._announced_lfs[item["oid"]] = item["size"]
                verify = f"{self.url}/{repo.url_path}.git/info/lfs/objects/verify"
                entry.update(authenticated=True, actions={
                    "upload": {"href": f"{self.url}/_lfs/{item['oid']}"},
                    "verify": {"href": verify, "header": {}}})
            objects.append(entry)
        return _json({"transfer": "basic", "objects": objects},
                     content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, oid: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        # Like a pre-signed storage URL: no token, but only for objects announced in a batch.
        # Storage is by content: two files with the same bytes in one commit announce the same
        # object twice and the client PUTs it twice, which succeeds twice.
        if oid not in self._announced_lfs and oid not in self.lfs_objects:
            raise HubError(403, f"upload of {oid} was not announced")
        size = self._announced_lfs.get(oid, len(self.lfs_objects.get(oid, b"")))
        if hashlib.sha256(body).hexdigest() != oid or len(body) != size:
            raise HubError(400, f"uploaded bytes do not match {oid}")
        self.lfs_objects[oid] = body
        self._announced_lfs.pop(oid, None)
        return 200, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}, b""

    def _lfs_verify(self, payload: dict) -> tuple[int, dict[str, str], bytes]:
        data = self.lfs_objects.get(payload.get("oid", ""))
        if data is None or len(data) != payload.get("size"):
            raise HubError(404, f"LFS object {payload.get('oid')} not found")
        return _json({"success": True})

    # ---- downloads ------------------------------------------------------------------------
    def _resolve(self, repo: Repo, revision: str, path: str,
                 headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        commit = repo.resolve(revision)
        stored = commit.files.get(path)
        if stored is None:
            raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound",
                           headers={"X-Repo-Commit": commit.oid})
        data = stored.data
        etag = f'"{stored.sha256 if stored.lfs else stored.oid}"'
        reply = {"X-Repo-Commit": commit.oid, "ETag": etag, "Accept-Ranges": "bytes",
                 "Content-Type": "application/octet-stream"}
        if stored.lfs:  # the Hub would redirect to a CDN; we serve the bytes ourselves
            reply.update({"X-Linked-Etag": etag, "X-Linked-Size": str(len(data))})
        wanted = headers.get("range")
        if wanted is None:
            return 200, reply, data
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
        if match is None or match.groups() == ("", ""):
            raise HubError(416, f"unsupported Range {wanted}",
                           headers={"Content-Range": f"bytes */{len(data)}"})
        first, last = match.groups()
        if first:
            start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
        else:  # "bytes=-N": the last N bytes
            start, end = max(len(data) - int(last), 0), len(data) - 1
        if start >= len(data) or start > end:
            raise HubError(416, f"Range {wanted} not satisfiable",
                           headers={"Content-Range": f"bytes */{len(data)}"})
        reply["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return 206, reply, data[start:end + 1]

    # ---- Spaces ---------------------------------------------------------------------------
    def _runtime(self, repo_id: str) -> dict:
        hardware = self.space_hardware.get(repo_id, "cpu-basic")
        return {"stage": "RUNNING", "hardware": {"current": hardware, "requested": hardware},
                "gcTimeout": None, "storage": None, "devMode": False}

    def _space(self, repo: Repo, method: str, action: str,
               payload: dict) -> tuple[int, dict[str, str], bytes]:
        repo_id = repo.repo_id
        secrets = self.space_secrets.setdefault(repo_id, {})
        variables = self.space_variables.setdefault(repo_id, {})
        if action == "secrets" and method == "GET":  # values are write-only, as on the Hub
            return _json({key: {"key": key, "updatedAt": _now()} for key in secrets})
        if action in ("secrets", "variables") and method in ("POST", "DELETE"):
            store = secrets if action == "secrets" else variables
            if method == "POST":
                store[payload["key"]] = payload["value"]
            else:
                store.pop(payload["key"], None)
        if action == "variables" and method in ("GET", "POST", "DELETE"):
            return _json({key: {"value": value, "updatedAt": _now()}
                          for key, value in variables.items()})
        if action == "secrets" and method in ("POST", "DELETE"):
            return _json({})
        if action == "hardware" and method == "POST":
            self.space_hardware[repo_id] = payload["flavor"]
            return _json(self._runtime(repo_id))
        if action == "runtime" and method == "GET":
            return _json(self._runtime(repo_id))
        raise NotEmulated(method, f"/api/spaces/{repo_id}/{action}")


def _error_reply(error: HubError) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json", **error.headers,
               "X-Error-Message": error.message.encode("ascii", "replace").decode()}
    if error.code:
        headers["X-Error-Code"] = error.code
    return error.status, headers, json.dumps({"error": error.message}).encode()


def _json(obj: object, status: int = 200,
          content_type: str = "application/json") -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": content_type}, json.dumps(obj).encode()


def _lfs_patterns(gitattributes: StoredFile | None) -> list[str]:
    lines = gitattributes.data.decode(errors="replace").splitlines() if gitattributes else []
    return [line.split()[0] for line in lines if "filter=lfs" in line.split()[1:]]


def _matches(path: str, patterns: list[str]) -> bool:
    """gitattributes matching, simplified: a pattern without "/" matches the file name."""
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(path if "/" in p else name, p.lstrip("/")) for p in patterns)


def _folder_entry(path: str) -> dict:
    return {"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()}


def _commit_json(commit: Commit) -> dict:
    return {"id": commit.oid, "title": commit.title, "message": commit.description,
            "authors": [{"user": commit.author}], "date": commit.date}


class _Handler(BaseHTTPRequestHandler):
    """Adapts http.server to ``HubEmulator.handle``; keep-alive, like the real Hub."""

    protocol_version = "HTTP/1.1"  # clients reuse connections; every reply sets Content-Length
    emulator: HubEmulator

    def _serve(self) -> None:
        status, headers, body = self.emulator.handle(
            self.command, self.path, dict(self.headers.items()), self._read_body())
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []  # streamed uploads (LFS PUT of a file object) arrive chunked
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: object) -> None:
        pass  # the emulator's own ``requests`` log replaces stderr noise


@pytest.fixture
def hub_emulator() -> Iterator[HubEmulator]:
    """A fresh, started Hub emulator per test (``DEFAULT_TOKEN`` belongs to ``DEFAULT_USER``)."""
    with HubEmulator() as hub:
        yield hub
