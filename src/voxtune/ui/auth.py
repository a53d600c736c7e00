"""Who is using the UI: no auth (the single user "local"), a users file, or a trusted proxy."""

from __future__ import annotations

import hmac
import ipaddress
import re
import socket
from collections.abc import Callable
from typing import Any

from voxtune.errors import UserError
from voxtune.ui.settings import UiSettings

LOCAL_USER = "local"
USER_SLUG = re.compile(r"[^a-z0-9]+")
MAX_USER_LENGTH = 16  # run names (≤40) are `<user>-<name>`; leaves room for the name


def sanitise_user(name: str) -> str:
    """A user name as it appears in folder and run names: lowercase letters, digits and '-'."""
    slug = USER_SLUG.sub("-", name.strip().lower()).strip("-")[:MAX_USER_LENGTH].strip("-")
    if not slug:
        raise UserError(f"user name {name!r} has no letters or digits")
    return slug


def read_users(settings: UiSettings) -> dict[str, str]:
    """`user:password` lines of the users file; blank lines and `#` comments are skipped."""
    if settings.users_file is None:
        raise UserError("VOXTUNE_UI_AUTH=password needs VOXTUNE_UI_USERS_FILE (user:password "
                        "lines)")
    try:
        lines = settings.users_file.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise UserError(f"VOXTUNE_UI_USERS_FILE {settings.users_file}: {error.strerror}") from None
    users = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user.strip() or not password:
            raise UserError(f"{settings.users_file}:{number}: expected user:password")
        users[user.strip()] = password
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


def user_of(request: Any, settings: UiSettings) -> str:
    """The sanitised user of a Gradio request (the workspace and run-name prefix)."""
    if settings.auth == "none":
        return LOCAL_USER
    name = getattr(request, "username", None)
    if not name:  # Gradio refuses unauthenticated requests before this; never guess a user
        raise UserError("not signed in")
    return sanitise_user(name)


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
