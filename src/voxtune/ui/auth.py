"""Who is using the UI: no auth (the single user "local"), a users file, or a trusted proxy."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import socket
from collections.abc import Callable
from typing import Any

from voxtune.errors import UserError
from voxtune.ui.settings import UiSettings

LOCAL_USER = "local"  # auth=none: the one user; a plain key, so single-user setups keep it
NOT_SLUG = re.compile(r"[^a-z0-9]+")
USER_KEY = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")  # what user_key (and LOCAL_USER) look like
SLUG_LENGTH = 12
HASH_LENGTH = 8  # hex digits of sha256: a clash needs the same slug *and* the same 32 bits
MAX_KEY_LENGTH = SLUG_LENGTH + 1 + HASH_LENGTH  # run names (≤40) are `<key>-<name>`


def normalised(name: str) -> str:
    """How a user name reads to people: lowercase letters and digits, anything else one '-'."""
    return NOT_SLUG.sub("-", name.strip().lower()).strip("-")


def user_key(name: str) -> str:
    """A user's workspace folder and run-name prefix: a readable slug plus a hash of the exact
    name, so `Carol` and `carol`, or alice.smith@example.com and @example.org, never share one."""
    slug = normalised(name)[:SLUG_LENGTH].strip("-")
    if not slug:
        raise UserError(f"user name {name!r} has no letters or digits")
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:HASH_LENGTH]}"


def read_users(settings: UiSettings) -> dict[str, str]:
    """`user:password` lines of the users file; blank lines and `#` comments are skipped."""
    if settings.users_file is None:
        raise UserError("VOXTUNE_UI_AUTH=password needs VOXTUNE_UI_USERS_FILE (user:password "
                        "lines)")
    try:
        lines = settings.users_file.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise UserError(f"VOXTUNE_UI_USERS_FILE {settings.users_file}: {error.strerror}") from None
    users: dict[str, str] = {}
    first_seen: dict[str, tuple[int, str]] = {}  # normalised name → (line, name)
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, password = line.partition(":")
        user = user.strip()
        if not sep or not user or not password:
            raise UserError(f"{settings.users_file}:{number}: expected user:password")
        user_key(user)  # a name without letters or digits: refused now, not at its first login
        # Names that differ only in case or punctuation look like one person on every page.
        if (earlier := first_seen.get(normalised(user))) is not None:
            raise UserError(f"{settings.users_file}:{number}: user {user!r} reads the same as "
                            f"{earlier[1]!r} on line {earlier[0]} (case and punctuation are "
                            "ignored); give each person a distinct name")
        first_seen[normalised(user)] = (number, user)
        users[user] = password
    if not users:
        raise UserError(f"{settings.users_file}: no users")
    return users


def password_check(users: dict[str, str]) -> Callable[[str, str], bool]:
    """Gradio's `auth` callable; compares in constant time."""
    def check(user: str, password: str) -> bool:
        expected = users.get(user)
        return expected is not None and hmac.compare_digest(expected.encode(), password.encode())

    return check


def proxy_user(settings: UiSettings) -> Callable[[Any], str | None]:
    """Gradio's `auth_dependency`: the user name the proxy sent, None (refused) without one."""
    def user(request: Any) -> str | None:
        return request.headers.get(settings.proxy_header) or None

    return user


def signed_in_name(request: Any, settings: UiSettings) -> str:
    """The name the user of a Gradio request signed in with (LOCAL_USER without auth)."""
    if settings.auth == "none":
        return LOCAL_USER
    name = getattr(request, "username", None)
    if not name:  # Gradio refuses unauthenticated requests before this; never guess a user
        raise UserError("not signed in")
    return name


def user_of(request: Any, settings: UiSettings) -> str:
    """The user key of a Gradio request (the workspace and run-name prefix)."""
    name = signed_in_name(request, settings)
    return LOCAL_USER if settings.auth == "none" else user_key(name)


def is_loopback(host: str) -> bool:
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return False
    return all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)


def check_bind(host: str, settings: UiSettings) -> None:
    """Refuse to serve other machines without auth unless told that something else guards it."""
    if settings.auth == "none" and not settings.allow_remote_without_auth \
            and not is_loopback(host):
        raise UserError(f"--host {host} is reachable from other machines and VOXTUNE_UI_AUTH is "
                        "none: set VOXTUNE_UI_AUTH=password (with VOXTUNE_UI_USERS_FILE) or proxy, "
                        "or VOXTUNE_UI_ALLOW_REMOTE_WITHOUT_AUTH=true if something in front "
                        "authenticates")
