"""A folder named as a data source in the UI must be the user's own or the operator's shared
data: the server can read every user's workspace, the users must not."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client as GradioClient
from gradio_client.exceptions import AppError

from tests.helpers import speechlike, write_audio
from voxtune.client import Client
from voxtune.errors import UserError
from voxtune.spec import GranarySource, HubSource
from voxtune.ui import sources, training
from voxtune.ui.app import launch, login_options
from voxtune.ui.auth import LOCAL_USER, user_key
from voxtune.ui.demo import DemoServers
from voxtune.ui.handlers import Context
from voxtune.ui.settings import UiSettings
from voxtune.ui.training import TrainForm
from voxtune.ui.workspace import SOURCES

ALICE, BOB = user_key("alice"), user_key("bob")


def context(home: Path, **settings: object) -> Context:
    return Context(Client("local", home=home), UiSettings(**settings), home,
                   DemoServers(home / "ui"))


@pytest.fixture
def folders(voxtune_home: Path, tmp_path: Path) -> dict[str, Path]:
    """Bob's published dataset, a folder in alice's workspace, a shared one, a symlink."""
    bob = voxtune_home / "users" / BOB / "dataset"
    mine = voxtune_home / "users" / ALICE / "imports" / "mine"
    shared = tmp_path / "shared" / "common-voice-sv"
    for folder in (bob, mine, shared):
        folder.mkdir(parents=True)
    link = voxtune_home / "users" / ALICE / "imports" / "looks-mine"
    link.symlink_to(bob, target_is_directory=True)
    return {"bob": bob, "mine": mine, "shared": shared, "link": link}


def add_hub(ctx: Context, dataset: str) -> list:
    sources.add_source(ctx, ALICE, HubSource(dataset=dataset))
    return ctx.workspace(ALICE).sources()


@pytest.mark.parametrize("where", ["bob", "link", "bob-through-dots", "shared-not-configured"])
def test_a_folder_outside_the_workspace_is_refused(where: str, folders: dict[str, Path],
                                                   voxtune_home: Path) -> None:
    ctx = context(voxtune_home)
    path = {"bob": folders["bob"], "link": folders["link"], "shared-not-configured":
            folders["shared"], "bob-through-dots": folders["mine"] / ".." / ".." / ".." / BOB}
    with pytest.raises(UserError, match="is not a folder inside your workspace, nor a Hub id"):
        add_hub(ctx, str(path[where]))
    assert ctx.workspace(ALICE).sources() == []


def test_a_folder_named_like_a_hub_id_is_still_a_folder(folders: dict[str, Path],
                                                        voxtune_home: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(voxtune_home)  # where the steps would read `users/<bob>` from
    with pytest.raises(UserError, match="not a folder inside your workspace"):
        add_hub(context(voxtune_home), f"users/{BOB}")


def test_own_shared_and_hub_sources_are_kept(folders: dict[str, Path], voxtune_home: Path,
                                             tmp_path: Path) -> None:
    ctx = context(voxtune_home, shared_data=tmp_path / "shared")
    assert [source.dataset for source in add_hub(ctx, "mozilla-foundation/common_voice_17_0")
            ] == ["mozilla-foundation/common_voice_17_0"]
    add_hub(ctx, str(folders["mine"]))
    kept = add_hub(ctx, str(folders["shared"] / ".." / "common-voice-sv"))
    assert [source.dataset for source in kept[1:]] == [str(folders["mine"].resolve()),
                                                       str(folders["shared"].resolve())]
    with pytest.raises(UserError, match=r"inside your workspace or the shared data folder"):
        add_hub(ctx, str(folders["bob"]))
    with pytest.raises(UserError, match="no such folder"):
        add_hub(ctx, str(folders["mine"] / "typo"))


def test_granary_audio_must_be_shared_or_own(folders: dict[str, Path], voxtune_home: Path,
                                             tmp_path: Path) -> None:
    ctx = context(voxtune_home, shared_data=tmp_path / "shared")
    with pytest.raises(UserError, match="Granary audio root"):
        sources.add_source(ctx, ALICE, GranarySource(subset="sv_voxpopuli",
                                                      audio_root=folders["bob"]))
    sources.add_source(ctx, ALICE, GranarySource(subset="sv_voxpopuli",
                                                  audio_root=folders["shared"]))
    assert ctx.workspace(ALICE).sources()[0].audio_root == folders["shared"].resolve()


def test_launch_checks_sources_saved_before_the_rule(folders: dict[str, Path],
                                                     voxtune_home: Path, tmp_path: Path) -> None:
    ctx = context(voxtune_home)
    workspace = ctx.workspace(ALICE)
    workspace.add(write_audio(tmp_path / "a.wav", speechlike(1.0)), "alice speaking", "en")
    workspace.build("en")
    (workspace.root / SOURCES).write_text(json.dumps([{"kind": "hub",
                                                       "dataset": str(folders["bob"])}]))
    with pytest.raises(UserError, match="not a folder inside your workspace"):
        training.build_spec(ctx, ALICE, TrainForm())


@pytest.fixture
def running_ui(voxtune_home: Path) -> Iterator[str]:
    """The real app on a free loopback port (auth none), stopped after the test."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = UiSettings()
    app = launch(context(voxtune_home), "127.0.0.1", port, login_options(settings), block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


def test_the_dataset_tab_says_why(running_ui: str, voxtune_home: Path) -> None:
    bob = voxtune_home / "users" / BOB / "dataset"
    bob.mkdir(parents=True)
    client = GradioClient(running_ui, verbose=False)
    with pytest.raises(AppError, match="is not a folder inside your workspace, nor a Hub id"):
        client.predict("hub", str(bob), "", "train", "text", "", "", 10, api_name="/add_extra")
    assert context(voxtune_home).workspace(LOCAL_USER).sources() == []
