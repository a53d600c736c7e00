"""The whole UI journey on the local executor, in a real browser: record through the fake
microphone (a counter, a re-take that replaces its clip), upload (one silent, one not audio),
build the dataset (a changed one is refused at Launch until rebuilt), preview and launch a
tiny-random run on the detected hardware, watch it (the progress bar moves, with the time left,
never a clock), read its per-clip transcripts, clone it, publish it (the page follows the
publish), compare base vs tuned in Try it (a smoke-test model, labelled so) — and stop the UI
with SIGTERM, which takes its `voxtune serve` with it."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from playwright.sync_api import expect

from tests.browser.conftest import (
    SECRET,
    choose_option,
    fill_train_form,
    new_page,
    open_tab,
    screenshot,
)
from tests.helpers import write_audio
from voxtune.run.layout import RunFolder
from voxtune.ui.phrases import PHRASES
from voxtune.ui.trackio_reader import read_curves

pytestmark = pytest.mark.browser
STEPS = 8  # optimizer steps: enough for the bar to be seen moving at the page's 2-s poll


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


def record(page, sentences: list[int], seconds: float = 2.5) -> None:
    """Record and save each of `sentences` (Save moves on to the next one by itself).

    Every take plays the fake microphone's file from its start, so two takes as long as each
    other are the same samples, which prepare rightly refuses as one audio with two
    transcripts: each take here is 0.4 s longer than the one before."""
    for take, number in enumerate(sentences):
        index = page.locator("#record-index input")
        if index.input_value() != str(number):
            index.fill(str(number))
            index.press("Enter")
        expect(page.locator("#prompt textarea")).to_have_value(PHRASES["en"][number])
        page.locator("#record-audio button.record-button").click()
        page.wait_for_timeout(1000 * seconds + 400 * take)
        page.locator("#record-audio button.stop-button").click()
        page.wait_for_timeout(1500)
        page.locator("#save-clip").click()
        page.locator("#record-status").get_by_text(PHRASES["en"][number]).wait_for()
        expect(page.locator("#prompt textarea")).to_have_value(PHRASES["en"][number + 1])
        if number == 0:
            screenshot(page, "ui-record")


def build_dataset(page) -> None:
    """Build the dataset and wait until the Dataset tab no longer calls it stale."""
    page.locator("#dataset-build").click()
    expect(page.locator("#dataset-total")).not_to_contain_text("changed since",
                                                               timeout=180_000)
    expect(page.locator("#dataset-summary")).to_contain_text("kept 6 clips")  # or what was not


def children(pid: int) -> list[int]:
    """The processes `pid` started (every thread's children)."""
    tasks = Path(f"/proc/{pid}/task")
    return [int(child) for task in tasks.iterdir()
            for child in (task / "children").read_text().split()]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def watch_progress(page, run: str) -> list[tuple[int, str]]:
    """The run page's progress bar (value, text) each time it changes, until the run ends."""
    seen: list[tuple[int, str]] = []
    deadline = time.monotonic() + 420  # a loaded 2-core machine trains slowly
    bar = page.locator("#run-progress .vt-progress")
    while f"{run}: Succeeded" not in page.locator("#run-phase").inner_text():
        assert time.monotonic() < deadline, "the run did not succeed"
        if bar.count():
            shown = (int(bar.locator("progress").get_attribute("value") or 0), bar.inner_text())
            if not seen or seen[-1] != shown:
                seen.append(shown)
        page.wait_for_timeout(200)
    return seen


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

    # 1. record two prompted sentences through the fake microphone, then the first again:
    # the new take replaces its clip; the counter says how far along this is
    expect(page.locator("#record-counter")).to_contain_text("0 recorded")
    record(page, [0, 1])
    expect(page.locator("#record-counter")).to_contain_text("Sentence 3 of")
    expect(page.locator("#record-counter")).to_contain_text("2 recorded")
    expect(page.locator("#record-counter")).to_contain_text("~50 phrases is a good start")
    record(page, [0], seconds=3.3)  # not as long as either take before it
    expect(page.locator("#record-status")).to_contain_text("Replaced the take of clip")
    expect(page.locator("#record-counter")).to_contain_text("2 recorded")
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
    expect(page.locator("#upload-table")).to_contain_text("click a transcript cell to type")
    # the sheet's columns were recognised, and can be picked when a sheet names them otherwise
    expect(page.locator("#upload-file-column input")).to_have_value("file_name")
    expect(page.locator("#upload-text-column input")).to_have_value("text")
    page.locator("#upload-add").click()
    page.locator("#upload-status").get_by_text("Added 4 of 6 files").wait_for()
    rejected = page.locator("#upload-rejected")
    expect(rejected).to_contain_text("notes.wav")
    expect(rejected).to_contain_text("not_audio")
    expect(rejected).to_contain_text("silent.wav")
    expect(rejected).to_contain_text("below -60 dBFS")
    screenshot(page, "ui-upload")
    stored = sorted(p.name for p in (voxtune_home / "users/local/recordings/clips").iterdir())
    assert len(stored) == 7 and any(name.endswith("-take_0.wav") for name in stored)

    # 3. the dataset table, then the prepare step builds the dataset; a delete asks first
    open_tab(page, "Dataset")
    page.locator("#dataset-total").get_by_text("6 clips").wait_for()
    build_dataset(page)
    choose_option(page, "dataset-clip", PHRASES["en"][1][:20])
    page.locator("#dataset-delete").click()
    expect(page.locator("#dataset-delete-confirm")).to_be_visible()
    page.locator("#dataset-delete-keep").click()
    expect(page.locator("#dataset-delete-confirm")).to_be_hidden()
    screenshot(page, "ui-dataset")

    # 4. the Train page knows this machine; a transcript fixed after the build makes Launch
    # refuse the stale dataset until it is rebuilt; then the plan's verdict, Preview, Launch
    open_tab(page, "Train")
    expect(page.locator("#train-hardware")).to_contain_text("this machine — CPU only")
    expect(page.locator("#train-gpus input")).to_have_value("CPU only")  # it has no GPU
    open_tab(page, "Dataset")
    choose_option(page, "dataset-clip", PHRASES["en"][1][:20])
    page.locator("#dataset-text textarea").fill(PHRASES["en"][1] + " Really.")
    page.locator("#dataset-save").click()
    expect(page.locator("#dataset-edit-status")).to_contain_text("Saved the transcript")
    expect(page.locator("#dataset-total")).to_contain_text("changed since the dataset was built")
    fill_train_form(page, "first", "CPU only", STEPS)
    page.locator("#train-launch").click()
    page.get_by_text("rebuild it first").first.wait_for()
    open_tab(page, "Dataset")
    build_dataset(page)
    open_tab(page, "Train")
    page.locator("#train-preview").click()
    spec_view = page.locator("#train-spec")
    spec_view.get_by_text(f"max_steps: {STEPS}").wait_for()
    assert "name: local-first" in spec_view.inner_text()
    assert "base_model: tiny-random" in spec_view.inner_text()
    expect(page.locator("#train-plan")).to_contain_text("Plan: fits on CPU only")
    screenshot(page, "ui-train-preview")
    page.locator("#train-launch").click()
    launched = page.locator("#train-status").get_by_text("Launched local-first")
    launched.wait_for()
    expect(launched).to_be_in_viewport()  # the answer is where the button is

    # 5. the Runs tab opens on the run just launched; its bar moves with the time left (never
    # a clock time) through the phases, and stops estimating once the run has ended
    open_tab(page, "Runs")
    expect(page.locator("#runs-choice input")).to_have_value("local-first")
    seen = watch_progress(page, "local-first")
    texts = " | ".join(text for _, text in seen)
    assert "UTC" not in texts
    training = [(value, text) for value, text in seen if ": training " in text]
    assert len({value for value, _ in training}) >= 2, seen  # it moved while training
    assert any(re.search(r"about \d+ (s|min)", text) and "left" in text
               for _, text in training), seen
    assert "evaluating the tuned model" in texts, seen
    final = page.locator("#run-progress").inner_text()
    assert "Succeeded" in final and "left" not in final
    expect(page.locator("#run-progress progress")).to_have_attribute("value", "100")
    # how the scores were measured, as the card and metrics.json say it (the UI default: whisper)
    expect(page.locator("#run-phase")).to_contain_text("normaliser: whisper")
    # per-clip transcripts, reference / base / tuned, errors marked
    samples = page.locator("#run-samples table.vt-samples")
    expect(samples).to_contain_text("tuned model")
    assert samples.locator("tbody tr").count() >= 1
    assert samples.locator("mark").count() >= 1  # random weights get words wrong
    page.wait_for_timeout(2500)  # one more poll draws the plots
    screenshot(page, "ui-run")
    # the log box holds the newest lines (the progress lines are the bar)
    shown = page.locator("#run-logs textarea").input_value().splitlines()
    newest = [line for line in (voxtune_home / "runs/local-first/logs/train.log").read_text()
              .splitlines() if not line.startswith("progress ")]
    assert shown[-1].strip() == newest[-1].strip()
    assert not any(line.startswith("progress ") for line in shown)
    assert len(read_curves(RunFolder(voxtune_home / "runs/local-first").trackio)["loss"]) >= 2
    # its settings go back into Train with one click
    page.locator("#run-clone").click()
    # (the form is re-planned for the cloned settings: seconds on a loaded machine)
    expect(page.locator("#train-status")).to_contain_text("Settings of local-first",
                                                          timeout=60_000)
    expect(page.locator("#train-max-steps input[type=number]")).to_have_value(str(STEPS))

    # 6. publish to the local registry; the model appears once the publish run is done
    open_tab(page, "Publish")
    expect(page.locator("#publish-repo")).to_be_hidden()  # Hub fields only for the Hub
    page.locator("#publish-to").get_by_label("Hugging Face Hub").check()
    expect(page.locator("#publish-repo")).to_be_visible()
    expect(page.locator("#publish-private input")).to_be_checked()  # private by default
    page.locator("#publish-to").get_by_label("Local registry").check()
    page.locator("#publish-button").click()
    page.locator("#publish-status").get_by_text("Publishing as run").wait_for()
    # the page follows the publish run and lists the model when it is done, by itself
    page.locator("#publish-status").get_by_text("Published local-first version 1").wait_for(
        timeout=120_000)
    expect(page.locator("#publish-models")).to_contain_text("local-first@1")
    assert (voxtune_home / "registry/local-first/1/adapter_model.safetensors").is_file()
    screenshot(page, "ui-publish")
    open_tab(page, "Runs")  # the publish run is listed, but the trained run stays the choice
    expect(page.locator("#runs-table")).to_contain_text("local-first-p")
    expect(page.locator("#runs-choice input")).to_have_value("local-first")

    # 7. try it: base vs fine-tuned transcripts from `voxtune serve`
    open_tab(page, "Try it")
    expect(page.locator("#try-model input")).to_have_value("local-first@1", timeout=20_000)
    expect(page.locator("#try-smoke")).to_contain_text("Smoke-test model")
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

    # 9. SIGTERM to the UI (what Kubernetes and Ctrl-C-less shutdowns send) stops its server
    servers = [pid for pid in children(server.process.pid)
               if b"serve" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert servers, "Try it left no `voxtune serve` child of the UI"
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(30)
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in servers), "voxtune serve outlived the UI"


def _body(response) -> str:
    if "text/event-stream" in (response.headers.get("content-type") or ""):
        return ""  # a stream never ends; its events are what the page renders (checked above)
    try:
        return response.text()
    except Exception:  # redirects and aborted requests have no body
        return ""
