"""Targeted recording in a real browser: paste domain text, record the calibration prompts through
the fake microphone (transcribed by a real `voxtune serve`, the UI's demo service), see the words
the model got wrong and why the next prompt was chosen; skip it, and the next one says why; then,
after a run made with the CLI, check the words with its model on the Runs page and start a
round for the words still wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import expect

from tests.browser.conftest import choose_option, new_page, open_tab, screenshot
from tests.helpers import serving
from tests.train_fixtures import prepare_samples, shared_home

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
                                                         voxtune_home: Path,
                                                         tmp_path: Path) -> None:
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
        expect(page.locator("#record-counter")).to_contain_text(
            f"Calibration prompt {number} of 2 ·")
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
    expect(page.locator("#record-counter")).to_contain_text("Targeted prompt ·")
    chosen = page.locator("#prompt textarea").input_value()
    assert chosen not in CALIBRATION
    screenshot(page, "ui-targeted")
    page.locator("#record-skip").click()
    expect(page.locator("#prompt textarea")).not_to_have_value(chosen)
    expect(why).to_contain_text("Why this prompt:")
    # calibration clips are the user's held-out set: none of them became training data
    assert not (voxtune_home / "users" / "local" / "recordings").exists()

    # after a run: its model re-transcribes the calibration clips, the Runs page says which
    # words it now gets right, and "record more" starts a round for the ones still wrong
    trained = run_one_step(voxtune_home, tmp_path)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    open_tab(page, "Runs")
    choose_option(page, "runs-choice", "local-voice")
    page.get_by_text("Calibration words: which ones").click()
    page.locator("#run-calibrate").click()
    checked = page.locator("#run-calibration")
    # the UI starts `voxtune serve` of the run's folder first
    expect(checked).to_contain_text("calibration words fixed by local-voice", timeout=120_000)
    expect(checked.locator("table")).to_contain_text("kubernetes")
    expect(checked.locator("table")).to_contain_text("still wrong")  # one step of training
    screenshot(page, "ui-targeted-after-run")
    page.locator("#run-record-more").click()
    expect(page.locator("#record-why")).to_contain_text("Why this prompt: contains '")


def run_one_step(home: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """`voxtune run` of a one-step full fine-tune of the tiny model, as a CLI user would."""
    spec = tmp_path / "voice.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "local-voice", "base_model": "tiny-random-4s", "mode": "full",
        "language": "en", "steps": ["prepare", "train"],
        "data": {"sources": [{"kind": "prepared", "path": str(prepare_samples(tmp_path))}]},
        "training": {"max_steps": 1, "precision": "fp32"}}))
    return subprocess.run([sys.executable, "-m", "voxtune", "run", str(spec)],
                          capture_output=True, text=True,
                          env={**os.environ, "VOXTUNE_HOME": str(home)})
