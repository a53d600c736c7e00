"""Publishing to the Hugging Face Hub: one atomic commit per repository, private by default.

The token comes from HF_TOKEN or a mounted secret file (VOXTUNE_HF_TOKEN_FILE) — never from an
argument — and goes nowhere but the Authorization header (and a demo Space's secret only when a
run asks for that: publish.space_token write). A private model's demo Space gets a read-only
token instead, from HF_SPACE_TOKEN or VOXTUNE_HF_SPACE_TOKEN_FILE, when the operator provides
one. Hub errors become UserError (exit 2: token, rights, name clash) or RetryableError
(exit 75: network, Hub overload); their messages never carry the token.

A repository is reused only when voxtune published it before (it holds the marker file); each
publish is then one commit that replaces the whole file set, deleting what the new set lacks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from voxtune.errors import RetryableError, UserError
from voxtune.publish.bundle import files_under
from voxtune.spec import Settings

HF_SCHEME = "hf://"
TOKEN_SECRET = "HF_TOKEN"  # the Space reads its private model with this (huggingface_hub's name)
SPACE_TOKEN_ENV = "HF_SPACE_TOKEN"  # the read-only token for Spaces (the publish Job's env)
REPO_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}$")
KEEP = (".gitattributes",)  # files a commit never deletes


class PublishSettings(Settings):
    """Where the publish step finds its secrets (VOXTUNE_* environment)."""

    hf_token_file: Path | None = Field(None, description="File holding the Hugging Face write "
                                       "token (a mounted Secret); HF_TOKEN wins when set.")
    hf_space_token_file: Path | None = Field(None, description="File holding the read-only "
                                             "token a private model's demo Space gets as its "
                                             "HF_TOKEN secret; HF_SPACE_TOKEN wins when set. "
                                             "Neither: the Space gets no token.")


@dataclass(frozen=True)
class HubTarget:
    """`hf://owner/name[@branch]`; owner empty means the token's own account."""

    owner: str
    name: str
    revision: str | None = None

    @property
    def repo_id(self) -> str:
        return f"{self.owner}/{self.name}"


def parse_target(destination: str) -> HubTarget | None:
    """`hf://owner/name[@branch]` or `hf://name` → HubTarget; anything else → None (a folder)."""
    if not destination.startswith(HF_SCHEME):
        return None
    repo, _, revision = destination[len(HF_SCHEME):].partition("@")
    owner, _, name = repo.rpartition("/")
    if not all(REPO_NAME.match(part) for part in filter(None, (owner, name))) or not name \
            or "/" in owner or (revision == "" and "@" in destination):
        raise UserError(f"--to {destination}: use hf://owner/name, hf://name (your account) "
                        "or hf://owner/name@branch")
    return HubTarget(owner, name, revision or None)


def repo_id(text: str, owner: str) -> str:
    """A Space or dataset id given as `owner/name`, `hf://owner/name` or just `name`."""
    text = text.removeprefix(HF_SCHEME)
    found_owner, _, name = text.rpartition("/")
    if not REPO_NAME.match(name) or (found_owner and not REPO_NAME.match(found_owner)):
        raise UserError(f"{text!r} is not a Hub repository id (owner/name)")
    return f"{found_owner or owner}/{name}"


def read_secret_file(path: Path, variable: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise UserError(f"{variable}={path}: cannot read the token file "
                        f"({error.strerror or type(error).__name__})") from None
    if not value:
        raise UserError(f"{variable}={path}: the token file is empty")
    return value


def read_token(settings: PublishSettings) -> str:
    """The publishing token: HF_TOKEN, else the file VOXTUNE_HF_TOKEN_FILE names."""
    value = _token_from("HF_TOKEN", settings.hf_token_file, "VOXTUNE_HF_TOKEN_FILE")
    if value:
        return value
    raise UserError("publishing to the Hugging Face Hub needs a write token: set HF_TOKEN, or "
                    "mount it as a file and set VOXTUNE_HF_TOKEN_FILE to its path (never pass "
                    "a token as an argument)")


def read_space_token(settings: PublishSettings) -> str | None:
    """The read-only token for demo Spaces: HF_SPACE_TOKEN, else the file
    VOXTUNE_HF_SPACE_TOKEN_FILE names, else None (never the publishing token)."""
    return _token_from(SPACE_TOKEN_ENV, settings.hf_space_token_file,
                       "VOXTUNE_HF_SPACE_TOKEN_FILE")


def _token_from(variable: str, file: Path | None, file_variable: str) -> str | None:
    value = os.environ.get(variable, "").strip()
    if value:
        return value
    return read_secret_file(file, file_variable) if file else None


@contextmanager
def hub_errors(action: str, token: str | None = None) -> Iterator[None]:
    """Translate what the Hub client raises into the step's two kinds of failure."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    def clean(text: str) -> str:
        text = " ".join(str(text).split())
        return text.replace(token, "***") if token else text

    try:
        yield
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        reason = clean(error.server_message or str(error).splitlines()[0])
        if status == 401:
            raise UserError(f"{action}: the Hub rejected the token (401): check HF_TOKEN or "
                            "the token file; publishing needs a write token") from None
        if status == 403:
            raise UserError(f"{action}: the token may not do this (403): {reason}") from None
        if status == 409:
            raise UserError(f"{action}: name clash (409): {reason}") from None
        if status in (408, 429) or (status or 0) >= 500:
            raise RetryableError(f"{action}: the Hub is unavailable ({status}): {reason}") \
                from None
        raise UserError(f"{action}: the Hub answered {status}: {reason}") from None
    except HFValidationError as error:
        raise UserError(f"{action}: {clean(str(error).splitlines()[0])}") from None
    except (httpx2.TransportError, ConnectionError, TimeoutError) as error:
        raise RetryableError(f"{action}: cannot reach the Hugging Face Hub "
                             f"({type(error).__name__})") from None


@dataclass(frozen=True)
class RepoState:
    exists: bool
    private: bool | None = None
    files: tuple[str, ...] = ()


class Hub:
    """A thin client: one HfApi with an explicit token (so no stored login is ever used)."""

    def __init__(self, token: str, endpoint: str | None = None):
        from huggingface_hub import HfApi

        self.token = token
        self.api = HfApi(endpoint=endpoint, token=token, library_name="voxtune")

    def user(self) -> str:
        with hub_errors("checking the token", self.token):
            return self.api.whoami()["name"]

    def state(self, repo: str, repo_type: str) -> RepoState:
        from huggingface_hub.errors import RepositoryNotFoundError

        with hub_errors(f"reading {repo_type} {repo}", self.token):
            try:
                info = self.api.repo_info(repo, repo_type=repo_type)
            except RepositoryNotFoundError:
                return RepoState(exists=False)
            files = self.api.list_repo_files(repo, repo_type=repo_type)
        return RepoState(True, bool(info.private), tuple(files))

    def check(self, repo: str, repo_type: str, private: bool, marker: str) -> RepoState:
        """Refuse to publish into a repo voxtune did not make, or of the other visibility."""
        state = self.state(repo, repo_type)
        if not state.exists:
            return state
        foreign = [name for name in state.files if name not in KEEP]
        if foreign and marker not in state.files:
            raise UserError(f"{repo_type} {repo} already exists and holds files voxtune did not "
                            f"publish (no {marker}); choose another name")
        if state.private != private:
            asked, found = ("private", "public") if private else ("public", "private")
            raise UserError(f"{repo_type} {repo} exists and is {found}, but {asked} was asked "
                            f"for; change its visibility on the Hub or choose another name")
        return state

    def create(self, repo: str, repo_type: str, *, private: bool,
               space_sdk: str | None = None) -> None:
        """Create the repo unless it exists (a no-op then: visibility is checked before)."""
        with hub_errors(f"creating {repo_type} {repo}", self.token):
            self.api.create_repo(repo, repo_type=repo_type, private=private, exist_ok=True,
                                 space_sdk=space_sdk)

    def commit_folder(self, repo: str, repo_type: str, folder: Path, *, private: bool,
                      message: str, description: str = "", revision: str | None = None,
                      space_sdk: str | None = None) -> str:
        """Create the repo if needed and replace its files with `folder`'s in ONE commit.

        Returns the commit URL.
        """
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        self.create(repo, repo_type, private=private, space_sdk=space_sdk)
        with hub_errors(f"publishing {repo_type} {repo}", self.token):
            if revision and revision != "main":
                self.api.create_branch(repo, repo_type=repo_type, branch=revision,
                                       exist_ok=True)
            current = self.api.list_repo_files(repo, repo_type=repo_type, revision=revision)
            new = files_under(folder)
            operations = [CommitOperationAdd(path_in_repo=path,
                                             path_or_fileobj=str(folder / path))
                          for path in new]
            operations += [CommitOperationDelete(path_in_repo=path) for path in current
                           if path not in new and path not in KEEP]
            commit = self.api.create_commit(repo, operations, repo_type=repo_type,
                                            revision=revision, commit_message=message,
                                            commit_description=description)
        return commit.commit_url

    def space_settings(self, space: str, *, token: str | None, hardware: str | None) -> bool:
        """Set the Space's HF_TOKEN secret to `token`, or remove it when None, and request its
        hardware. Returns whether a secret was removed.

        Each publish leaves exactly the token the spec chose, like the file set: a token an
        earlier publish gave the Space (earlier voxtune versions gave it the write token) must
        not linger there."""
        with hub_errors(f"configuring Space {space}", self.token):
            removed = False
            if token is not None:
                self.api.add_space_secret(space, TOKEN_SECRET, token,
                                          description="reads the private model (voxtune)")
            elif TOKEN_SECRET in self.api.get_space_secrets(space):
                self.api.delete_space_secret(space, TOKEN_SECRET)
                removed = True
            if hardware:
                self.api.request_space_hardware(space, hardware)
        return removed
