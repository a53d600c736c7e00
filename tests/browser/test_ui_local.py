"""The whole UI journey on the local executor, in a real browser: record through the fake
microphone, upload (one silent, one not audio), build the dataset, preview and launch a
tiny-random run, watch it succeed, publish it, and compare base vs tuned in Try it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from playwright.sync_api import expect

from tests.browser.conftest import SECRET, fill_train_form, new_page, open_tab, screenshot
from tests.helpers import write_audio
from voxtune.run.layout import RunFolder
from voxtune.ui.phrases import PHRASES
from voxtune.ui.trackio_reader import read_curves

pytestmark = pytest.mark.browser


def uploads(folder: Path, speech: Path) -> list[Path]:
    """Four good files (WAV and FLAC, at other speeds), one silent, one that is not audio."""
    samples, rate = soundfile.read(speech, dtype="float32")
    files = []
    for index, stretch in enumerate((1.0, 0.9, 1.1, 1.2)):
        resampled = np.interp(np.arange(0, len(samples), stretch), np.arange(len(samples)),
                              samples).astype(np.float32)
        suffix = "flac" if index % 2 else "wav"
        files.append(write_audio(folder / f"take {index}.{suffix}", resampled, rate))
    files.append(write_audio(folder / "silent.wav", np.zeros(rate * 2, np.float32), rate))
    (folder / "notes.wav").write_text("this is not audio")
    return [*files, folder / "notes.wav"]


def record(page, times: int) -> None:
    for number in range(times):
        page.locator("#record-audio button.record-button").click()
        page.wait_for_timeout(2500)
        page.locator("#record-audio button.stop-button").click()
        page.wait_for_timeout(1500)
        page.locator("#save-clip").click()
        page.locator("#record-status").get_by_text(PHRASES["en"][number]).wait_for()
        if number == 0:
            screenshot(page, "ui-record")


def test_record_upload_train_publish_and_try(start_ui, browser, speech_wav: Path,
                                             voxtune_home: Path, tmp_path: Path) -> None:
    server = start_ui()
    page = new_page(browser, server.url)
    bodies: list[str] = []
    page.on("response", lambda response: bodies.append(_body(response)))

    started = time.monotonic()
    page.goto(server.url)
    page.get_by_role("tab", name="Record").wait_for()
    usable = time.monotonic() - started
    page.get_by_text("signed in as").wait_for()  # after the page's first round trip
    print(f"\nfirst page load: tabs usable after {1000 * usable:.0f} ms, user greeting after "
          f"{1000 * (time.monotonic() - started):.0f} ms")

    # 1. record two prompted sentences through the fake microphone
    record(page, 2)
    log = (voxtune_home / "users/local/recordings/recordings.jsonl").read_text().splitlines()
    first = json.loads(log[0])
    recorded, _ = soundfile.read(voxtune_home / "users/local/recordings" / first["audio_path"])
    assert first["text"].startswith("The train to the city") and first["language"] == "en"
    assert np.sqrt(np.mean(np.square(recorded))) > 0.005  # speech, not the silence of a bad mic

    # 2. upload six files with a transcripts CSV; the silent one and the text file are refused
    open_tab(page, "Upload")
    files = uploads(tmp_path / "uploads", speech_wav)
    sheet = tmp_path / "transcripts.csv"
    sheet.write_text("file_name,text\n" + "".join(f"{f.name},the quick brown fox {i}\n"
                                                 for i, f in enumerate(files)))
    page.locator("#upload-transcripts input[type=file]").set_input_files(str(sheet))
    page.locator("#upload-files input[type=file]").set_input_files([str(f) for f in files])
    page.locator("#upload-table").get_by_text("the quick brown fox 5").wait_for()
    page.locator("#upload-add").click()
    page.locator("#upload-status").get_by_text("Added 4 of 6 files").wait_for()
    rejected = page.locator("#upload-rejected")
    expect(rejected).to_contain_text("notes.wav")
    expect(rejected).to_contain_text("not_audio")
    expect(rejected).to_contain_text("silent.wav")
    expect(rejected).to_contain_text("below -60 dBFS")
    screenshot(page, "ui-upload")
    stored = sorted(p.name for p in (voxtune_home / "users/local/recordings/clips").iterdir())
    assert len(stored) == 6 and any(name.endswith("-take_0.wav") for name in stored)

    # 3. the dataset table, then the prepare step builds the dataset
    open_tab(page, "Dataset")
    page.locator("#dataset-total").get_by_text("6 clips").wait_for()
    page.locator("#dataset-build").click()
    page.locator("#dataset-summary").get_by_text("kept 6 clips").wait_for()
    screenshot(page, "ui-dataset")

    # 4. preview the exact spec, then launch a tiny run on this machine
    fill_train_form(page, "first", "CPU only", 4)
    spec_view = page.locator("#train-spec")
    spec_view.get_by_text("max_steps: 4").wait_for()
    assert "name: local-first" in spec_view.inner_text()
    assert "base_model: tiny-random" in spec_view.inner_text()
    screenshot(page, "ui-train-preview")
    page.locator("#train-launch").click()
    page.locator("#train-status").get_by_text("Launched local-first").wait_for()

    # 5. the run page follows it to Succeeded, with curves and base vs tuned scores
    open_tab(page, "Runs")
    page.locator("#run-phase").get_by_text("local-first: Succeeded").wait_for(timeout=180_000)
    page.wait_for_timeout(2500)  # one more poll draws the plots
    screenshot(page, "ui-run")
    assert "train" in page.locator("#run-logs textarea").input_value()
    assert len(read_curves(RunFolder(voxtune_home / "runs/local-first").trackio)["loss"]) >= 2

    # 6. publish to the local registry; the model appears once the publish run is done
    open_tab(page, "Publish")
    expect(page.locator("#publish-repo")).to_be_hidden()  # Hub fields only for the Hub
    page.locator("#publish-to").get_by_label("Hugging Face Hub").check()
    expect(page.locator("#publish-repo")).to_be_visible()
    expect(page.locator("#publish-private input")).to_be_checked()  # private by default
    page.locator("#publish-to").get_by_label("Local registry").check()
    page.locator("#publish-button").click()
    page.locator("#publish-status").get_by_text("Publishing as run").wait_for()
    deadline = time.monotonic() + 120
    while "local-first@1" not in page.locator("#publish-models").inner_text():
        assert time.monotonic() < deadline, "the publish run did not finish"
        page.wait_for_timeout(2000)
        open_tab(page, "Runs")
        open_tab(page, "Publish")
    assert (voxtune_home / "registry/local-first/1/adapter_model.safetensors").is_file()
    screenshot(page, "ui-publish")

    # 7. try it: base vs fine-tuned transcripts from `voxtune serve`
    open_tab(page, "Try it")
    expect(page.locator("#try-model input")).to_have_value("local-first@1")
    page.locator("#try-audio input[type=file]").set_input_files(str(speech_wav))
    page.locator("#try-button").click()
    page.locator("#try-status").get_by_text("fine-tuned LoRA adapter").wait_for(timeout=180_000)
    base = page.locator("#try-base textarea").input_value()
    tuned = page.locator("#try-tuned textarea").input_value()
    assert base and tuned and base != tuned  # random weights: the adapter changes the output
    screenshot(page, "ui-try")

    # 8. the server's HF_TOKEN reached no page, no API response and no log
    for tab in ("Record", "Upload", "Dataset", "Train", "Runs", "Publish", "Try it"):
        open_tab(page, tab)
        bodies.append(page.content())
    logs = [server.text(), *(p.read_text(errors="replace") for p in
                             (voxtune_home / "runs").rglob("*.log")),
            (voxtune_home / "ui/serve.log").read_text(errors="replace")]
    assert not [text for text in bodies + logs if SECRET in text]


def _body(response) -> str:
    if "text/event-stream" in (response.headers.get("content-type") or ""):
        return ""  # a stream never ends; its events are what the page renders (checked above)
    try:
        return response.text()
    except Exception:  # redirects and aborted requests have no body
        return ""
