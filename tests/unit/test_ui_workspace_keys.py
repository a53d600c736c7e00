"""Each account gets its own workspace: user keys are injective, and a users file whose names
read the same is refused at startup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gradio as gr
import pytest

from tests.helpers import speechlike, write_audio
from voxtune.errors import UserError
from voxtune.ui.auth import USER_KEY, read_users, user_key, user_of
from voxtune.ui.handlers import run_name
from voxtune.ui.settings import UiSettings
from voxtune.ui.workspace import Workspace

# pairs the old key (lowercased, punctuation → '-', cut to 16) gave one workspace
USED_TO_COLLIDE = [("Carol", "carol"), ("alice.smith@example.com", "alice.smith@example.org"),
                   ("bob smith", "bob-smith"), ("a" * 30, "a" * 31)]


@pytest.mark.parametrize(("first", "second"), USED_TO_COLLIDE,
                         ids=["case", "email-domain", "punctuation", "long"])
def test_names_that_read_alike_get_their_own_keys(first: str, second: str) -> None:
    assert user_key(first) != user_key(second)
    for name in (first, second):
        key = user_key(name)
        assert USER_KEY.fullmatch(key) and key == user_key(name)  # a folder name, and stable
        run_name(key, "x" * 18)  # the Train tab's longest name still makes a valid run name


def test_a_readable_slug_leads_the_key() -> None:
    assert user_key("Alice.Smith@example.com").startswith("alice-smith-")


@pytest.mark.parametrize("auth", ["password", "proxy"])
def test_accounts_that_used_to_collide_do_not_share_clips(auth: str, voxtune_home: Path,
                                                          tmp_path: Path) -> None:
    settings = UiSettings(auth=auth)
    clip = write_audio(tmp_path / "c.wav", speechlike(1.0))
    for first, second in USED_TO_COLLIDE:
        mine = Workspace(voxtune_home, user_of(gr.Request(username=first), settings))
        mine.add(clip, f"{first} speaking", "en")
        theirs = Workspace(voxtune_home, user_of(gr.Request(username=second), settings))
        assert theirs.clips() == {} and mine.root != theirs.root


@pytest.mark.parametrize("key", ["../bob", "bob/../../x", "", "Bob"],
                         ids=["parent", "nested", "empty", "uppercase"])
def test_a_workspace_key_cannot_name_another_folder(key: str, voxtune_home: Path) -> None:
    with pytest.raises(UserError, match="not a valid user name"):
        Workspace(voxtune_home, key)


@pytest.mark.parametrize(("lines", "message"), [
    ("alice:1\nCarol:2\ncarol:3\n", r":3: user 'carol' reads the same as 'Carol' on line 2"),
    ("alice.smith:1\nAlice-Smith:2\n", r":2: user 'Alice-Smith' reads the same as 'alice.smith'"),
    ("bob:1\nbob:2\n", r":2: user 'bob' reads the same as 'bob' on line 1"),
    ("...:1\n", "has no letters or digits"),
], ids=["case", "punctuation", "twice", "no-letters"])
def test_users_file_refuses_names_that_read_alike(lines: str, message: str,
                                                  tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(lines)
    with pytest.raises(UserError, match=message):
        read_users(UiSettings(auth="password", users_file=path))


def test_ui_with_such_a_users_file_stops_with_one_line(tmp_path: Path,
                                                       voxtune_home: Path) -> None:
    path = tmp_path / "users"
    path.write_text("Carol:one\ncarol:two\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VOXTUNE_UI_")},
           "VOXTUNE_UI_AUTH": "password", "VOXTUNE_UI_USERS_FILE": str(path)}
    done = subprocess.run([sys.executable, "-m", "voxtune", "ui"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "'carol' reads the same as 'Carol' on line 1" in done.stderr
