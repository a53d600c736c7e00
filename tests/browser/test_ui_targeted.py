"""Targeted recording in a real browser: paste domain text, record the calibration prompts through
the fake microphone (transcribed by a real `voxtune serve`, the UI's demo service), see the words
the model got wrong and why the next prompt was chosen; skip it, and the next one says why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import new_page, open_tab, screenshot
from tests.helpers import serving
from tests.train_fixtures import shared_home

pytestmark = pytest.mark.browser
TEXT = "Kubernetes\nHelm chart\nkubectl\n\nThe operator watches the Jobs and their Pods."
CALIBRATION = ["The operator watches the Jobs and their Pods.",
               "Kubernetes, Helm chart, kubectl."]


@pytest.fixture
def tiny_server() -> Iterator[str]:
    from voxtune.models.presets import ensure_tiny_random

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VOXTUNE_HOME", str(shared_home()))  # the model is built once per process
        with serving(ensure_tiny_random(4), "--base", "skip") as url:
            yield url


def test_calibrate_then_record_what_the_model_gets_wrong(start_ui, browser, tiny_server: str,
                                                         voxtune_home: Path) -> None:
    server = start_ui(VOXTUNE_UI_DEMO_URL=tiny_server)
    page = new_page(browser, server.url)
    page.goto(server.url)
    open_tab(page, "Record")
    page.get_by_text("Targeted recording: find what").click()
    page.locator("#targeted-text textarea").fill(TEXT)
    page.locator("#targeted-count input[type=number]").fill("2")
    page.locator("#targeted-start").click()
    for number, prompt in enumerate(CALIBRATION, start=1):
        expect(page.locator("#prompt textarea")).to_have_value(prompt)
        expect(page.locator("#record-why")).to_contain_text(f"calibration prompt {number} of 2")
        page.locator("#record-audio button.record-button").click()
        page.wait_for_timeout(2500)
        page.locator("#record-audio button.stop-button").click()
        page.wait_for_timeout(1500)
        page.locator("#save-clip").click()
        expect(page.locator("#record-status")).to_contain_text("the model heard")
        expect(page.locator("#targeted-errors")).to_contain_text(
            f"{number} of 2 prompts recorded")
    # a random model gets every word wrong: the report lists them, the next prompt says why
    errors = page.locator("#targeted-errors")
    expect(errors).to_contain_text("words wrong")
    expect(errors.locator("table")).to_contain_text("kubernetes")
    why = page.locator("#record-why")
    expect(why).to_contain_text("Why this prompt: contains '")
    chosen = page.locator("#prompt textarea").input_value()
    assert chosen not in CALIBRATION
    screenshot(page, "ui-targeted")
    page.locator("#record-skip").click()
    expect(page.locator("#prompt textarea")).not_to_have_value(chosen)
    expect(why).to_contain_text("Why this prompt:")
    # calibration clips are the user's held-out set: none of them became training data
    assert not (voxtune_home / "users" / "local" / "recordings").exists()
