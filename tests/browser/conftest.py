"""Browser tests: the real `voxtune ui` process driven by Debian's chromium through Playwright.

Chromium's fake microphone plays a 16-bit WAV synthesized with espeak-ng (DESIGN §5: a 24-bit
file records silence). Screenshots go to test-artifacts/ (gitignored) for people to look at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.helpers import free_port

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
SECRET = "some-secret-value"  # HF_TOKEN of every UI server here: it must never reach a page

@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    # espeak-ng writes 16-bit PCM, what the fake microphone needs
    subprocess.run(["espeak-ng", "-s", "140", "-w", str(path),
                    "the quick brown fox jumps over the lazy dog"], check=True)
    return path


@dataclass
class UiServer:
    url: str
    log: Path
    process: subprocess.Popen

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_ui(tmp_path: Path, voxtune_home: Path) -> Iterator:
    """Start `voxtune ui` with extra arguments and environment; stopped after the test."""
    started: list[UiServer] = []

    def start(*args: str, **env: str) -> UiServer:
        port = free_port()
        log = tmp_path / f"ui-{port}.log"
        environment = {**os.environ, "VOXTUNE_HOME": str(voxtune_home), "HF_TOKEN": SECRET,
                       "HF_HUB_OFFLINE": "1", **env}
        with open(log, "wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "voxtune", "ui", "--port",
                                        str(port), *args], stdout=out,
                                       stderr=subprocess.STDOUT, env=environment)
        server = UiServer(f"http://127.0.0.1:{port}", log, process)
        started.append(server)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(server.url, timeout=1)
                return server
            except OSError:
                assert process.poll() is None, server.text()
                assert time.monotonic() < deadline, "the UI did not start"
                time.sleep(0.2)

    yield start
    for server in started:
        server.process.terminate()  # the UI stops its `voxtune serve` child on exit
        server.process.wait(20)
        # pytest shows a teardown's output only when the test failed: the server's side of it
        print(f"--- {server.log.name} (last lines) ---\n{server.text()[-4000:]}")


@pytest.fixture
def browser(speech_wav: Path) -> Iterator:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={speech_wav}%noloop"])
        yield chromium
        chromium.close()


def new_page(browser, url: str):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.grant_permissions(["microphone"], origin=url)
    page = context.new_page()
    # a round trip through the UI's queue can take seconds while the other test worker
    # trains; waits and expectations return as soon as they hold
    page.set_default_timeout(30_000)
    expect.set_options(timeout=30_000)  # expect's own default is 5 s
    return page


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def choose(page, elem_id: str, value: str) -> None:
    """Pick a dropdown value by clicking its option (Enter may beat the list's filtering)."""
    field = page.locator(f"#{elem_id} input")
    field.click()
    field.fill(value)
    page.get_by_role("option", name=value, exact=True).click()
    expect(field).to_have_value(value)


def choose_option(page, elem_id: str, start: str) -> None:
    """Pick the dropdown option whose label starts with `start` (options named by content)."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option").filter(has_text=start).first.click()


def fill_train_form(page, name: str, gpus: str, max_steps: int) -> None:
    """Train tab: a tiny-random run named `name`, then Preview."""
    open_tab(page, "Train")
    page.locator("#train-name input, #train-name textarea").first.fill(name)
    choose(page, "train-base", "tiny-random")
    choose(page, "train-gpus", gpus)
    steps = page.locator("#train-max-steps input[type=number]")
    steps.fill(str(max_steps))
    steps.press("Enter")
    page.locator("#train-preview").click()
