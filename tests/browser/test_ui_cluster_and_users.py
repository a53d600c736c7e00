"""The UI on the Kubernetes backend (API emulator), and two signed-in users side by side."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import fill_train_form, new_page, open_tab, screenshot
from tests.emulators import kube
from tests.emulators.kube import KubeEmulator
from tests.helpers import speechlike, write_audio
from voxtune.ui.auth import user_key
from voxtune.ui.workspace import Workspace

pytestmark = pytest.mark.browser
kube_emulator = kube.kube_emulator


def test_launch_creates_the_finetunerun_from_the_form(
        start_ui, browser, kube_emulator: KubeEmulator, voxtune_home: Path,
        tmp_path: Path) -> None:
    workspace = Workspace(voxtune_home, "local")
    for index in range(2):
        workspace.add(write_audio(tmp_path / f"{index}.wav", speechlike(1.0, seed=index)),
                      f"clip {index}", "en")
    workspace.build("en")
    kubeconfig = kube_emulator.write_kubeconfig(tmp_path / "kubeconfig")
    server = start_ui("--backend", "kubernetes", "--namespace", "default",
                      KUBECONFIG=str(kubeconfig))
    page = new_page(browser, server.url)
    page.goto(server.url)
    page.get_by_text("runs on kubernetes").wait_for()

    fill_train_form(page, "cluster", "2 GPUs", 7)
    # the plan follows the form: tiny-random on 2 GPUs of the smallest profile
    expect(page.locator("#train-plan")).to_contain_text("Plan: fits on 2 × 24gb")
    expect(page.locator("#train-run-yaml")).to_contain_text("kind: FineTuneRun")
    expect(page.locator("#train-run-yaml")).to_contain_text("max_steps: 7")
    screenshot(page, "ui-cluster-preview")
    page.locator("#train-launch").click()
    page.locator("#train-status").get_by_text("Launched local-cluster").wait_for()

    run = kube_emulator.get("finetuneruns", "default", "local-cluster")
    assert run is not None
    spec = run["spec"]
    assert spec["base_model"] == "tiny-random" and spec["training"]["max_steps"] == 7
    assert spec["resources"]["gpus"] == 2 and spec["steps"] == ["prepare", "train"]
    # the built dataset, taken as it is (relative to the shared volume)
    assert spec["data"]["sources"][0] == {"kind": "prepared", "path": "users/local/dataset"}

    open_tab(page, "Runs")  # no controller here: the run waits, and the page says so
    expect(page.locator("#run-phase")).to_contain_text("local-cluster: Pending",
                                                       timeout=20_000)
    screenshot(page, "ui-cluster-runs")


def sign_in(browser, url: str, user: str, password: str):
    page = new_page(browser, url)
    page.goto(url)
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    page.get_by_text(f"signed in as {user}").wait_for()
    return page


def test_two_users_do_not_see_each_others_data(start_ui, browser, voxtune_home: Path,
                                               tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    users.write_text("alice:wonderland\nbob:builder\n")
    server = start_ui(VOXTUNE_UI_AUTH="password", VOXTUNE_UI_USERS_FILE=str(users))
    alice = sign_in(browser, server.url, "alice", "wonderland")
    bob = sign_in(browser, server.url, "bob", "builder")

    open_tab(alice, "Upload")
    clip = write_audio(tmp_path / "alice.wav", speechlike(1.5))
    alice.locator("#upload-files input[type=file]").set_input_files(str(clip))
    expect(alice.locator("#upload-table")).to_contain_text("alice.wav")
    alice.locator("#upload-table").get_by_test_id("cell-0-1").dblclick()
    alice.keyboard.type("alice speaking")
    alice.keyboard.press("Enter")
    alice.locator("#upload-add").click()
    alice.locator("#upload-status").get_by_text("Added 1 of 1 files").wait_for()

    open_tab(alice, "Dataset")
    expect(alice.locator("#dataset-total")).to_contain_text("1 clips")
    expect(alice.locator("#dataset-clips")).to_contain_text("alice speaking")
    open_tab(bob, "Dataset")
    expect(bob.locator("#dataset-total")).to_contain_text("0 clips")
    expect(bob.locator("#dataset-clips")).not_to_contain_text("alice")
    screenshot(bob, "ui-users-bob")
    assert len(Workspace(voxtune_home, user_key("alice")).clips()) == 1
    assert Workspace(voxtune_home, user_key("bob")).clips() == {}

    wrong = new_page(browser, server.url)  # a wrong password gets nothing
    wrong.goto(server.url)
    wrong.get_by_label("username").fill("alice")
    wrong.get_by_label("password").fill("builder")
    wrong.get_by_role("button", name="Login").click()
    expect(wrong.get_by_text("Incorrect Credentials")).to_be_visible()
