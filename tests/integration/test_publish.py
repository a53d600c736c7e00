"""The publish step end to end: local registry, Hub emulator, cards, datasets and the demo Space.

One tiny LoRA run is trained once for the module (the real `voxtune train`, 2 steps) and
published with the real CLI in subprocesses, so huggingface_hub reads HF_ENDPOINT at import.
What was published is then loaded the way a user would: with the card's own snippet, with
`snapshot_download`, `datasets.load_dataset`, and the generated Space app's transcribe function.
A sentinel token (the emulator's) is in the environment of every publish, local ones included,
and no output, file or request may contain it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import soundfile
import yaml
from safetensors.torch import load_file

from tests.emulators.hub import DEFAULT_TOKEN, HubEmulator, hub_emulator
from tests.train_fixtures import prepare_samples, shared_home
from voxtune.data.manifest import read_manifest
from voxtune.errors import UserError
from voxtune.models import inference
from voxtune.publish.bundle import files_under
from voxtune.publish.hub import HubTarget, parse_target
from voxtune.publish.registry import Registry
from voxtune.publish.vllm import manifest, vllm_tensor_name
from voxtune.run.layout import RunFolder
from voxtune.run.status import Publication
from voxtune.spec import PublishSpec, read_resolved_spec

__all__ = ["hub_emulator"]  # the fixture, imported so pytest finds it here
pytestmark = pytest.mark.slow

SENTINEL = DEFAULT_TOKEN  # a valid emulator token, and the string no output may contain
TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
                  "training_args.bin")
PROCESSOR = {"processor_config.json", "tekken.json"}
CARD_FILES = {"README.md", "metrics.json", "spec.yaml"}
ADAPTER = {"adapter_config.json", "adapter_model.safetensors"}
ADAPTER_LAYOUT = (ADAPTER | PROCESSOR | CARD_FILES | {"tokenizer_config.json", "vllm.json"}
                  | {f"vllm-adapter/{name}" for name in ADAPTER})
MERGED_LAYOUT = ({"config.json", "generation_config.json", "model.safetensors", "vllm.json",
                  "params.json", "consolidated.safetensors"}  # Mistral's layout, for vLLM
                 | PROCESSOR | CARD_FILES | {f"adapter/{name}" for name in ADAPTER})
SPACE_FILES = {"README.md", "app.py", "requirements.txt", "voxtune_inference.py"}
DATASET_FILES = {"README.md", "spec.yaml", "data/train-00000-of-00001.parquet",
                 "data/eval-00000-of-00001.parquet"}
# Runs the ```python block of each card given, in this folder (which holds speech.wav).
SNIPPET_RUNNER = """
import re, sys
from pathlib import Path
for card in sys.argv[1:]:
    code = re.search(r"```python\\n(.*?)```", Path(card).read_text(), re.S).group(1)
    scope = {"__name__": "card"}
    exec(compile(code, card, "exec"), scope)
    print("LOADED", type(scope["model"]).__name__)
"""


# --- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("publish-data")
    return prepare_samples(folder)


@pytest.fixture(scope="module")
def run(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny LoRA run with checkpoints, plus training-state decoys inside final/."""
    output = tmp_path_factory.mktemp("runs") / "my-voice"
    done = subprocess.run(
        [sys.executable, "-m", "voxtune", "train", "--data", str(prepared), "--output",
         str(output), "--model", "tiny-random-4s", "--mode", "lora", "--max-steps", "2",
         "--save-steps", "1", "--precision", "fp32", "--language", "en"],
        capture_output=True, text=True, env={**os.environ, "VOXTUNE_HOME": str(shared_home())})
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((output / "checkpoints").glob("checkpoint-*/optimizer.pt"))
    for name in TRAINING_STATE:  # whatever lies in final/, only loadable files may go out
        (output / "final" / name).write_bytes(b"training state")
    return output


@pytest.fixture(scope="module")
def speech(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding speech.wav (an eval clip), where the cards' snippets run."""
    folder = tmp_path_factory.mktemp("speech")
    clip = read_manifest(prepared, "eval")[0]
    samples, rate = soundfile.read(prepared / clip.audio_path)
    soundfile.write(folder / "speech.wav", samples, rate)
    return folder


@pytest.fixture(scope="module")
def local_version(run: Path, prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 1 in a fresh registry: the adapter, with the dataset and a Space folder."""
    registry = tmp_path_factory.mktemp("registry")
    done = voxtune("publish", "--model", run, "--to", registry, "--dataset", prepared, "--space")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"version 1 (LoRA adapter): {registry / 'my-voice' / '1'}" in done.stdout
    return registry / "my-voice" / "1"


def base_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "VOXTUNE_HOME": str(shared_home()), "HF_TOKEN": SENTINEL, **extra}


def voxtune(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess; its output may never contain the token."""
    done = subprocess.run([sys.executable, "-m", "voxtune", *map(str, args)],
                          capture_output=True, text=True, env=env or base_env(), timeout=600)
    assert SENTINEL not in done.stdout + done.stderr
    return done


def python(script: str, *args: object, env: dict[str, str] | None = None,
           cwd: Path | None = None) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
                          capture_output=True, text=True, env=env or base_env(), cwd=cwd,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def leaks(*folders: Path) -> list[Path]:
    """Files under `folders` that contain the sentinel token."""
    return [path for folder in folders for path in folder.rglob("*")
            if path.is_file() and SENTINEL.encode() in path.read_bytes()]


def digest(folder: Path) -> dict[str, str]:
    return {path: hashlib.sha256((folder / path).read_bytes()).hexdigest()
            for path in files_under(folder)}


def hub_env(hub: HubEmulator, tmp_path: Path, token: str | None = SENTINEL) -> dict[str, str]:
    env = hub.client_env(token, hf_home=str(tmp_path / "hf-home"),
                         base=base_env(TMPDIR=str(scratch(tmp_path))))
    env.pop("HF_SPACE_TOKEN", None)  # a test gives a Space token only where it means to
    return env


def scratch(tmp_path: Path) -> Path:
    """The subprocess's TMPDIR, where a Hub publish stages its files."""
    folder = tmp_path / "tmp"
    folder.mkdir(exist_ok=True)
    return folder


def staged(tmp_path: Path) -> list[Path]:
    """Staging folders a publish left behind (none, whether it succeeded or failed)."""
    return list(scratch(tmp_path).glob("voxtune-publish-*"))


# --- local registry -----------------------------------------------------------------------------


def test_local_versions_hold_only_loadable_files_and_load_with_the_card_snippet(
        local_version: Path, run: Path, speech: Path) -> None:
    registry = local_version.parents[1]
    adapter_files = set(files_under(local_version))
    assert adapter_files == (ADAPTER_LAYOUT | {f"space/{name}" for name in SPACE_FILES}
                             | {f"dataset/{name}" for name in DATASET_FILES})
    served = json.loads((local_version / "vllm.json").read_text())
    assert served == manifest("tiny-random-4s", [])
    assert set(load_file(local_version / "vllm-adapter/adapter_model.safetensors")) == {
        vllm_tensor_name(name) for name in load_file(local_version / "adapter_model.safetensors")
    }  # already on the LM only, under vLLM's module names
    before = digest(local_version)

    done = voxtune("publish", "--model", run, "--to", registry, "--merge")
    assert done.returncode == 0, done.stderr[-3000:]
    merged = registry / "my-voice" / "2"
    assert "version 2 (merged LoRA model)" in done.stdout and "WER" in done.stdout
    assert set(files_under(merged)) == MERGED_LAYOUT
    # the smoke-test model's random positional table is what vLLM would not reproduce
    assert json.loads((merged / "vllm.json").read_text()) == manifest(None, [],
                                                                      positions_match=False)
    assert "  vLLM: the audio encoder's positional table is not" in done.stdout
    params = json.loads((merged / "params.json").read_text())
    assert params["dim"] == json.loads((merged / "config.json").read_text())[
        "text_config"]["hidden_size"]
    assert digest(local_version) == before  # a version is never written again
    # the export gate scored the merged weights on the eval clips, beside the adapter's number
    scored = json.loads((merged / "metrics.json").read_text())
    assert {"wer", "merged_wer", "merged_cer", "merged_wer_drift"} <= scored.keys()
    assert scored["merged_wer_drift"] <= 0.5 and "export gate: merged model WER" in done.stdout
    assert "merged (these weights, re-scored)" in (merged / "README.md").read_text()
    assert sorted(p.name for p in (registry / "my-voice").iterdir()) == ["1", "2"]  # no temp

    listing = voxtune("models", "list", "--registry", registry)
    assert listing.returncode == 0, listing.stderr
    assert re.search(r"my-voice\s+1 adapter .* tiny-random-4s", listing.stdout)
    assert re.search(r"my-voice\s+2 merged ", listing.stdout)
    shown = voxtune("models", "show", "my-voice@1", "--registry", registry)
    assert "adapter_model.safetensors" in shown.stdout and "smoke-test" in shown.stdout
    assert voxtune("models", "show", "my-voice@7", "--registry", registry).returncode == 2

    # what the cards say to run loads what was published: peft on the base, transformers alone
    output = python(SNIPPET_RUNNER, local_version / "README.md", merged / "README.md",
                    cwd=speech)
    assert output.splitlines()[1::2] == ["LOADED PeftModel",
                                         "LOADED VoxtralForConditionalGeneration"]
    assert not leaks(registry)


def test_local_dataset_loads_back_with_decodable_audio(local_version: Path,
                                                       prepared: Path) -> None:
    from datasets import Audio, load_dataset

    clips = {clip.id: clip for clip in read_manifest(prepared)}
    loaded = load_dataset(str(local_version / "dataset"))
    assert set(loaded) == {"train", "eval"}
    assert isinstance(loaded["train"].features["audio"], Audio)
    for split, rows in loaded.items():
        for row in rows.cast_column("audio", Audio(decode=False)):
            samples, rate = soundfile.read(io.BytesIO(row["audio"]["bytes"]))
            clip = clips[row["id"]]
            assert (rate, row["text"], clip.split) == (16_000, clip.text, split)
            assert len(samples) == pytest.approx(clip.duration * rate, rel=1e-3)
            assert row["audio"]["bytes"] == (prepared / clip.audio_path).read_bytes()


APP_RUNNER = """
import importlib.util, sys
import gradio as gr
import numpy as np
import soundfile
import soxr

space, wav, missing = sys.argv[1:]
sys.path.insert(0, space)
spec = importlib.util.spec_from_file_location("app", f"{space}/app.py")
app = importlib.util.module_from_spec(spec)
spec.loader.exec_module(app)

# what a browser microphone gives Gradio: 44.1 kHz stereo int16
mono, rate = soundfile.read(wav, dtype="float32")
stereo = soxr.resample(mono, rate, 44_100)
stereo = (np.stack([stereo, stereo], axis=1) * 32767).astype(np.int16)
text = app.transcribe((44_100, stereo), "en")
assert isinstance(text, str) and text, repr(text)
print("MODEL", type(app.fine_tuned_model().model).__name__)
print("STATUS", app.model_status())
app.MODEL = missing  # the fine-tuned model is gone: an error, never the base model
app.fine_tuned_model.cache_clear()
try:
    app.transcribe((44_100, stereo), "en")
except gr.Error as error:
    print("ERROR", error.message)
else:
    raise SystemExit("transcribed without the fine-tuned model")
print("OFF", app.model_status())
"""


def test_space_app_transcribes_with_the_fine_tuned_model_and_never_falls_back(
        local_version: Path, speech: Path, tmp_path: Path) -> None:
    space = local_version / "space"
    assert (space / "voxtune_inference.py").read_bytes() == Path(inference.__file__).read_bytes()
    assert f"MODEL = {str(local_version)!r}" in (space / "app.py").read_text()
    output = python(APP_RUNNER, space, speech / "speech.wav", tmp_path / "missing")
    lines = dict(line.split(" ", 1) for line in output.splitlines())
    assert lines["MODEL"] == "PeftModel"
    assert lines["STATUS"].startswith(f"Model: fine-tuned LoRA adapter {local_version} on ")
    assert lines["ERROR"].startswith(f"could not load the fine-tuned model {tmp_path}/missing")
    assert "never falls back to the base model" in lines["OFF"]


# --- Hugging Face Hub (emulated) ----------------------------------------------------------------


CLIENT = """
import sys
from pathlib import Path
import io
import soundfile
from datasets import Audio, load_dataset
from huggingface_hub import hf_hub_download, snapshot_download

for revision in ("main", "merged"):
    folder = Path(snapshot_download("alice/my-voice", revision=revision))
    print("FILES", revision, sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                                    if p.is_file()))
    Path(f"{revision}.md").write_text((folder / "README.md").read_text())
clips = load_dataset("alice/my-voice-data", split="train").cast_column("audio",
                                                                      Audio(decode=False))
samples, rate = soundfile.read(io.BytesIO(clips[0]["audio"]["bytes"]))
print("AUDIO", len(clips), rate, len(samples) > 0)
"""


def test_hub_publish_is_private_one_commit_per_repo_and_loads_back(
        hub_emulator: HubEmulator, run: Path, prepared: Path, speech: Path,
        tmp_path: Path) -> None:
    hub, env = hub_emulator, hub_env(hub_emulator, tmp_path)
    done = voxtune("publish", "--model", run, "--to", "hf://alice/my-voice", "--dataset",
                   prepared, "--space", "--space-hardware", "t4-small", env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    model = hub.repo("alice/my-voice")
    assert model.private and len(model.history()) == 2  # "initial commit" + ours
    commit = model.history()[0]
    assert commit.title.startswith("Publish my-voice: LoRA adapter of tiny-random-4s (WER ")
    assert f"{hub.url}/alice/my-voice/commit/{commit.oid}" in done.stdout
    assert set(model.files()) == ADAPTER_LAYOUT | {".gitattributes"}
    dataset = hub.repo("alice/my-voice-data", "dataset")
    assert dataset.private and len(dataset.history()) == 2
    assert set(dataset.files()) == DATASET_FILES | {".gitattributes"}
    space = hub.repo("alice/my-voice-demo", "space")
    assert space.private and space.sdk == "gradio" and len(space.history()) == 2
    assert set(space.files()) == SPACE_FILES | {".gitattributes"}
    assert b"MODEL = 'alice/my-voice'" in space.files()["app.py"]
    # no read-only token was provided, so the Space got none: never the publishing token
    assert hub.space_secrets["alice/my-voice-demo"] == {}
    assert "Space token: none (HF_SPACE_TOKEN is not set): the Space cannot load" in done.stdout
    assert hub.space_hardware["alice/my-voice-demo"] == "t4-small"

    # a second publish, merged, to a branch: one more commit there, main and history untouched
    done = voxtune("publish", "--model", run, "--to", "hf://alice/my-voice@merged", "--merge",
                   env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert model.files("main") == model.files(commit.oid)
    assert set(model.files("merged")) == MERGED_LAYOUT | {".gitattributes"}  # adapter files
    assert len(model.history("merged")) == 3  # at the root were deleted in the same commit

    # download as a user would, then load each card's snippet straight from the Hub
    client = python(CLIENT, env=env, cwd=speech)
    assert f"FILES main {sorted(ADAPTER_LAYOUT | {'.gitattributes'})}" in client
    assert re.search(r"AUDIO \d+ 16000 True", client)
    assert "revision='merged'" in (speech / "merged.md").read_text()
    loaded = python(SNIPPET_RUNNER, speech / "main.md", speech / "merged.md", env=env,
                    cwd=speech)
    assert loaded.splitlines()[1::2] == ["LOADED PeftModel",
                                         "LOADED VoxtralForConditionalGeneration"]

    assert hub.occurrences(SENTINEL) == [] and hub.unhandled == []
    assert not leaks(tmp_path, run) and not staged(tmp_path)


def corrupted_copy(run: Path, folder: Path) -> Path:
    """A copy of `run` whose adapter, once merged, is not the model metrics.json measured:
    alpha × 10⁴ scales every LoRA update (what a wrong scaling in an export does)."""
    copy = folder / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoints"))
    config_file = copy / "final" / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["lora_alpha"] *= 10_000
    config_file.write_text(json.dumps(config))
    return copy


def test_a_merged_model_that_drifted_is_refused_and_nothing_is_uploaded(
        hub_emulator: HubEmulator, run: Path, tmp_path: Path) -> None:
    corrupted = corrupted_copy(run, tmp_path / "runs")
    env = hub_env(hub_emulator, tmp_path)
    done = voxtune("publish", "--model", corrupted, "--to", "hf://alice/drifted", "--merge",
                   env=env)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "over publish.max_wer_drift (0.5). Nothing was published" in done.stderr
    assert "Traceback" not in done.stderr
    assert [repo for repo in hub_emulator.list_repos() if "drifted" in repo.repo_id] == []
    assert not staged(tmp_path)


def test_public_model_with_token_file_gives_its_space_no_token(
        hub_emulator: HubEmulator, run: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "secret" / "token"
    token_file.parent.mkdir()
    token_file.write_text(SENTINEL + "\n")
    env = hub_env(hub_emulator, tmp_path, token=None)
    env["VOXTUNE_HF_TOKEN_FILE"] = str(token_file)
    done = voxtune("publish", "--model", run, "--to", "hf://alice/open-voice", "--public",
                   "--space", "alice/open-demo", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not hub_emulator.repo("alice/open-voice").private
    assert not hub_emulator.repo("alice/open-demo", "space").private
    assert hub_emulator.space_secrets["alice/open-demo"] == {}  # public model: no token
    assert "This repository is **public**" in hub_emulator.repo("alice/open-voice").files()[
        "README.md"].decode()
    assert hub_emulator.occurrences(SENTINEL) == []


READ_TOKEN = "hf_read_only_space_token_sentinel"  # what an operator puts in HF_SPACE_TOKEN


@pytest.mark.parametrize(("mode", "read_token", "secret", "said"), [
    (None, READ_TOKEN, READ_TOKEN, "Space token: the read-only token from HF_SPACE_TOKEN"),
    (None, None, None, "until it has a token. Provide a read-only token in HF_SPACE_TOKEN"),
    ("none", READ_TOKEN, None, "Space token: none (publish.space_token: none)"),
    ("write", READ_TOKEN, SENTINEL, "Space token: your publishing (write) token"),
], ids=["read", "read-without-token", "none", "write"])
def test_which_token_the_space_gets(hub_emulator: HubEmulator, run: Path, tmp_path: Path,
                                    mode: str | None, read_token: str | None,
                                    secret: str | None, said: str) -> None:
    """Each publish leaves the Space exactly the token its spec chose: even the write token
    an earlier (older) publish had stored there is removed when none is due."""
    from huggingface_hub import HfApi

    client = HfApi(endpoint=hub_emulator.url, token=SENTINEL)
    client.create_repo("alice/tok-demo", repo_type="space", space_sdk="gradio", private=True)
    client.add_space_secret("alice/tok-demo", "HF_TOKEN", SENTINEL)  # what older versions did
    env = hub_env(hub_emulator, tmp_path)
    env.update({"HF_SPACE_TOKEN": read_token} if read_token else {})
    env.update({"VOXTUNE_SPEC__PUBLISH__SPACE_TOKEN": mode} if mode else {})

    done = voxtune("publish", "--model", run, "--to", "hf://alice/tok", "--space",
                   "alice/tok-demo", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert said in done.stdout
    assert hub_emulator.space_secrets["alice/tok-demo"] == ({"HF_TOKEN": secret} if secret
                                                           else {})
    assert ("removed the HF_TOKEN secret an earlier publish gave it" in done.stdout) == \
        (secret is None)
    assert hub_emulator.occurrences(SENTINEL) == hub_emulator.occurrences(READ_TOKEN) == []
    assert READ_TOKEN not in done.stdout + done.stderr


def test_the_write_token_as_space_token_is_refused_before_anything_is_published(
        hub_emulator: HubEmulator, run: Path, tmp_path: Path) -> None:
    env = {**hub_env(hub_emulator, tmp_path), "HF_SPACE_TOKEN": SENTINEL}
    done = voxtune("publish", "--model", run, "--to", "hf://alice/tok", "--space", env=env)
    assert done.returncode == 2 and "HF_SPACE_TOKEN holds the publishing token" in done.stderr
    assert hub_emulator.list_repos() == [] and hub_emulator.space_secrets == {}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(("case", "exit_code", "message"), [
    ("no-token", 2, "needs a write token"),
    ("invalid-token", 2, "rejected the token (401)"),
    ("clash", 2, "holds files voxtune did not publish"),
    ("visibility", 2, "exists and is public, but private was asked for"),
    ("network", 75, "cannot reach the Hugging Face Hub"),
])
def test_hub_errors_are_clear_and_publish_nothing(
        hub_emulator: HubEmulator, run: Path, tmp_path: Path, case: str, exit_code: int,
        message: str) -> None:
    from huggingface_hub import HfApi

    env = hub_env(hub_emulator, tmp_path, token=None if case == "no-token" else SENTINEL)
    client = HfApi(endpoint=hub_emulator.url, token=SENTINEL)
    if case == "invalid-token":
        env["HF_TOKEN"] = "hf_not_a_token_sentinel"
    if case == "clash":  # someone's own repo of the same name
        client.create_repo("alice/my-voice", private=True)
        client.upload_file(path_or_fileobj=b"# theirs\n", path_in_repo="README.md",
                           repo_id="alice/my-voice")
    if case == "visibility":  # published before, publicly
        client.create_repo("alice/my-voice")
        client.upload_file(path_or_fileobj=b"name: x\n", path_in_repo="spec.yaml",
                           repo_id="alice/my-voice")
    if case == "network":
        env["HF_ENDPOINT"] = f"http://127.0.0.1:{closed_port()}"
    before = {repo.url_path: repo.branches["main"] for repo in hub_emulator.list_repos()}

    done = voxtune("publish", "--model", run, "--to", "hf://alice/my-voice", "--space", env=env)
    assert done.returncode == exit_code, done.stdout + done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert "hf_not_a_token_sentinel" not in done.stdout + done.stderr
    after = {repo.url_path: repo.branches["main"] for repo in hub_emulator.list_repos()}
    assert after == before and not staged(tmp_path)
    assert hub_emulator.occurrences(SENTINEL) == []


def test_run_dir_publishes_what_its_spec_says(run: Path, prepared: Path, tmp_path: Path) -> None:
    """What the executors run: `voxtune publish --run-dir RUN`, everything from spec.yaml."""
    folder = tmp_path / "runs" / "my-voice"
    shutil.copytree(run / "final", folder / "final")
    shutil.copytree(prepared, folder / "prepared")
    shutil.copy(run / "metrics.json", folder / "metrics.json")
    spec = yaml.safe_load((run / "final" / "spec.yaml").read_text())
    spec["publish"] = {"to": str(tmp_path / "registry"), "dataset": True, "space": True}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec))

    done = voxtune("publish", "--run-dir", folder)
    assert done.returncode == 0, done.stderr[-3000:]
    version = tmp_path / "registry" / "my-voice" / "1"
    assert {"space/app.py", "dataset/README.md", "adapter_model.safetensors"} <= set(
        files_under(version))
    record = RunFolder(folder).read_published()  # what both executors put in the status
    assert record == Publication(name="my-voice", model=str(version), layout="adapter",
                                 version=1, dataset=str(version / "dataset"),
                                 space=str(version / "space"))


def test_a_publish_only_run_publishes_the_run_it_names(run: Path, tmp_path: Path) -> None:
    """What the UI submits: `steps: [publish]` with publish.run naming the trained run beside
    it; nothing is linked or copied into the publishing run's folder."""
    trained = tmp_path / "runs" / "my-voice"
    shutil.copytree(run / "final", trained / "final")
    shutil.copy(run / "metrics.json", trained / "metrics.json")
    spec = yaml.safe_load((run / "final" / "spec.yaml").read_text())
    publisher = tmp_path / "runs" / "my-voice-p1"
    publisher.mkdir()
    spec.update(name="my-voice-p1", steps=["publish"],
                publish={"to": str(tmp_path / "registry"), "run": "my-voice"})
    (publisher / "spec.yaml").write_text(yaml.safe_dump(spec))

    done = voxtune("publish", "--run-dir", publisher)
    assert done.returncode == 0, done.stderr[-3000:]
    version = tmp_path / "registry" / "my-voice" / "1"  # named after the trained run
    assert (version / "adapter_model.safetensors").is_file()
    assert RunFolder(publisher).read_published().model == str(version)
    assert sorted(path.name for path in publisher.iterdir()) == ["published.json", "spec.yaml"]
    assert not (trained / "published.json").exists()

    spec["publish"]["run"] = "my-voice-nothing"
    (publisher / "spec.yaml").write_text(yaml.safe_dump(spec))
    done = voxtune("publish", "--run-dir", publisher)
    assert done.returncode == 2 and "no trained model" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_space_id_needs_a_hub_model(run: Path, tmp_path: Path) -> None:
    done = voxtune("publish", "--model", run, "--to", tmp_path / "registry", "--space",
                   "alice/demo")
    assert done.returncode == 2 and "--to hf://owner/name" in done.stderr
    assert not (tmp_path / "registry").exists()


# --- pieces -------------------------------------------------------------------------------------


def test_versions_never_overwrite_even_when_another_publisher_races(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    first = registry.publish("m", lambda staging, final: (staging / "a").write_text("one"))

    def racing(staging: Path, final: Path) -> None:
        (staging / "a").write_text("mine")
        if final.name == "2":  # another publisher finishes version 2 while we build ours
            final.mkdir()
            (final / "a").write_text("theirs")

    assert registry.publish("m", racing) == tmp_path / "m" / "3"
    assert [(tmp_path / "m" / v / "a").read_text() for v in "123"] == ["one", "theirs", "mine"]

    def failing(staging: Path, final: Path) -> None:
        (staging / "a").write_text("half")
        raise UserError("merge failed")

    with pytest.raises(UserError):
        registry.publish("m", failing)
    assert sorted(p.name for p in first.parent.iterdir()) == ["1", "2", "3"]
    with pytest.raises(UserError):
        registry.publish("../escape", failing)


@pytest.mark.parametrize(("destination", "expected"), [
    ("hf://alice/my-voice", HubTarget("alice", "my-voice")),
    ("hf://my-voice", HubTarget("", "my-voice")),
    ("hf://org/model.v2@exp-1", HubTarget("org", "model.v2", "exp-1")),
    ("./registry", None),
    ("/data/registry", None),
], ids=["owner-name", "own-account", "branch", "relative-folder", "absolute-folder"])
def test_destinations(destination: str, expected: HubTarget | None) -> None:
    assert parse_target(destination) == expected


@pytest.mark.parametrize("destination", ["hf://", "hf://a/b/c", "hf://a/b@", "hf://a/-x"])
def test_bad_hub_destinations_are_user_errors(destination: str) -> None:
    with pytest.raises(UserError, match="hf://owner/name"):
        parse_target(destination)


def test_publish_never_imports_gradio_or_kubernetes() -> None:
    output = python("""
        import sys
        import voxtune.cli.publish, voxtune.publish.step, voxtune.models.inference
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("gradio", "kubernetes")))
    """)
    assert output.strip() == "[]"



def test_the_local_executor_reports_what_was_published(run: Path, voxtune_home: Path) -> None:
    """status.json carries the publish record and whether the run holds a model, so the UI
    reads them from the status (voxtune.Client) instead of the run folder."""
    from voxtune.executors.local import LocalExecutor

    trained = voxtune_home / "runs" / "my-voice"
    shutil.copytree(run / "final", trained / "final")
    executor = LocalExecutor()
    spec = read_resolved_spec(run / "final" / "spec.yaml").model_copy(update={
        "name": "my-voice-p1", "steps": ["publish"],
        "publish": PublishSpec(run="my-voice")})
    status = executor.run(spec, echo=lambda line: None)
    assert status.phase == "Succeeded", executor.logs("my-voice-p1")
    version = voxtune_home / "registry" / "my-voice" / "1"
    assert status.published is not None and status.published.model == str(version)
    assert not status.trained  # the publishing run holds no model of its own
    assert executor.status("my-voice-p1").published == status.published
