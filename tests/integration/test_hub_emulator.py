"""The Hub emulator, driven by the real clients over real HTTP.

In-process tests hand ``endpoint=hub.url`` to ``huggingface_hub`` explicitly (it read
``HF_ENDPOINT`` at import); ``datasets`` and ``transformers`` only take the endpoint from the
environment, so they run in a subprocess with ``hub.client_env()`` (see tests/emulators/hub.py).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    constants,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.emulators.hub import DEFAULT_TOKEN, DEFAULT_USER, HubEmulator, hub_emulator

__all__ = ["hub_emulator"]  # the fixture, imported so pytest finds it here
# huggingface_hub's own LFS upload (PUT with data=fileobj) trips an httpx2 deprecation: not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

OTHER_TOKEN = "hf_emulator_bob_token"
MB = 1024 * 1024


@pytest.fixture(autouse=True)
def online_lfs_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process client goes online and uploads large files through LFS (Xet is not
    emulated), whatever the environment said when huggingface_hub was imported."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


@pytest.fixture
def two_users() -> Iterator[HubEmulator]:
    with HubEmulator({DEFAULT_TOKEN: DEFAULT_USER, OTHER_TOKEN: "bob"}) as hub:
        yield hub


def api(hub: HubEmulator, token: str | None = DEFAULT_TOKEN) -> HfApi:
    return HfApi(endpoint=hub.url, token=token if token is not None else False)


def run_client(hub: HubEmulator, tmp_path: Path, script: str) -> str:
    """Run ``script`` in a fresh interpreter whose Hub clients talk to ``hub``; its stdout."""
    env = hub.client_env(hf_home=str(tmp_path / "hf-home"))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def test_whoami_and_invalid_token(hub_emulator: HubEmulator) -> None:
    assert api(hub_emulator).whoami()["name"] == DEFAULT_USER
    with pytest.raises(HfHubHTTPError) as error:
        api(hub_emulator, "hf_wrong").whoami()
    assert error.value.response.status_code == 401


@pytest.mark.parametrize("repo_type", ["model", "dataset", "space"])
def test_create_private_repo_and_clash(hub_emulator: HubEmulator, repo_type: str) -> None:
    client, repo_id = api(hub_emulator), f"{DEFAULT_USER}/thing"
    sdk = "gradio" if repo_type == "space" else None
    url = client.create_repo(repo_id, repo_type=repo_type, private=True, space_sdk=sdk)
    assert (url.repo_id, url.repo_type) == (repo_id, repo_type)
    assert hub_emulator.repo(repo_id, repo_type).private
    assert client.repo_info(repo_id, repo_type=repo_type).private
    with pytest.raises(HfHubHTTPError) as error:
        client.create_repo(repo_id, repo_type=repo_type, private=True, space_sdk=sdk)
    assert error.value.response.status_code == 409
    client.create_repo(repo_id, repo_type=repo_type, exist_ok=True, space_sdk=sdk)
    assert [r.repo_id for r in hub_emulator.list_repos(repo_type)] == [repo_id]
    api(hub_emulator).create_repo(f"{DEFAULT_USER}/public")
    assert not hub_emulator.repo(f"{DEFAULT_USER}/public").private  # public unless asked


def test_writing_to_someone_elses_namespace_is_forbidden(two_users: HubEmulator) -> None:
    with pytest.raises(HfHubHTTPError) as error:
        api(two_users, OTHER_TOKEN).create_repo(f"{DEFAULT_USER}/mine")
    assert error.value.response.status_code == 403


@pytest.mark.parametrize("lfs", [False, True], ids=["all-regular-xet-on", "lfs"])
def test_create_commit_is_one_commit(hub_emulator: HubEmulator, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch, lfs: bool) -> None:
    if not lfs:  # everything inlined in the commit: fine for a client that would use Xet
        hub_emulator.lfs_threshold = None
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    client, repo_id = api(hub_emulator), f"{DEFAULT_USER}/model"
    client.create_repo(repo_id, private=True)
    big = tmp_path / "model.safetensors"
    big.write_bytes(os.urandom(20 * MB))
    files = {"config.json": b'{"a": 1}', "README.md": b"# card\n", "weights/model.safetensors":
             big.read_bytes()}
    info = client.create_commit(repo_id, commit_message="Publish run 7", operations=[
        CommitOperationAdd("config.json", files["config.json"]),
        CommitOperationAdd("README.md", files["README.md"]),
        CommitOperationAdd("weights/model.safetensors", str(big))])

    repo = hub_emulator.repo(repo_id)
    assert [c.title for c in repo.history()] == ["Publish run 7", "initial commit"]
    assert info.oid == repo.branches["main"] and len(info.oid) == 40
    assert info.commit_url.endswith(f"/{repo_id}/commit/{info.oid}")
    assert {k: v for k, v in repo.files().items() if k != ".gitattributes"} == files
    stored = repo.resolve("main").files["weights/model.safetensors"]
    assert stored.lfs is lfs and not repo.resolve("main").files["config.json"].lfs
    assert (hashlib.sha256(files["weights/model.safetensors"]).hexdigest()
            in hub_emulator.lfs_objects) is lfs
    downloaded = hf_hub_download(repo_id, "weights/model.safetensors", endpoint=hub_emulator.url,
                                 token=DEFAULT_TOKEN, cache_dir=tmp_path / "cache")
    assert Path(downloaded).read_bytes() == files["weights/model.safetensors"]

    client.create_commit(repo_id, commit_message="Drop the card",
                         operations=[CommitOperationDelete("README.md")])
    assert "README.md" not in repo.files() and "README.md" in repo.files(info.oid)


def test_upload_folder_and_download_round_trip(hub_emulator: HubEmulator, tmp_path: Path) -> None:
    client, repo_id = api(hub_emulator), f"{DEFAULT_USER}/folder"
    client.create_repo(repo_id, repo_type="dataset", private=True)
    folder = tmp_path / "upload"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.bin").write_bytes(os.urandom(3 * MB))
    (folder / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# data\n")
    client.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=folder,
                         commit_message="Add data")

    snapshot = Path(snapshot_download(repo_id, repo_type="dataset", endpoint=hub_emulator.url,
                                      token=DEFAULT_TOKEN, cache_dir=tmp_path / "cache"))
    for path in ("data/train.bin", "README.md"):
        assert (snapshot / path).read_bytes() == (folder / path).read_bytes()
    assert len(hub_emulator.repo(repo_id, "dataset").history()) == 2

    # A branch: commits to it leave main alone, downloads by revision see them.
    client.create_branch(repo_id, repo_type="dataset", branch="v2")
    client.upload_file(path_or_fileobj=b"new", path_in_repo="extra.txt", repo_id=repo_id,
                       repo_type="dataset", revision="v2", commit_message="On v2")
    assert "extra.txt" not in hub_emulator.repo(repo_id, "dataset").files("main")
    extra = hf_hub_download(repo_id, "extra.txt", repo_type="dataset", revision="v2",
                            endpoint=hub_emulator.url, token=DEFAULT_TOKEN,
                            cache_dir=tmp_path / "cache")
    assert Path(extra).read_bytes() == b"new"
    assert [c.title for c in client.list_repo_commits(repo_id, repo_type="dataset",
                                                      revision="v2")][:2] == ["On v2", "Add data"]


def test_private_repo_is_not_found_for_others(two_users: HubEmulator, tmp_path: Path) -> None:
    api(two_users).create_repo(f"{DEFAULT_USER}/secret", private=True)
    api(two_users).upload_file(path_or_fileobj=b"x", path_in_repo="f.txt",
                               repo_id=f"{DEFAULT_USER}/secret")
    for token in (OTHER_TOKEN, None):
        with pytest.raises(RepositoryNotFoundError) as error:
            api(two_users, token).repo_info(f"{DEFAULT_USER}/secret")
        assert error.value.response.status_code == 404
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(f"{DEFAULT_USER}/secret", "f.txt", endpoint=two_users.url,
                            token=token or False, cache_dir=tmp_path / "cache")


def test_errors_are_classified(hub_emulator: HubEmulator, tmp_path: Path) -> None:
    api(hub_emulator).create_repo(f"{DEFAULT_USER}/m")
    download = {"endpoint": hub_emulator.url, "token": DEFAULT_TOKEN, "cache_dir": tmp_path}
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(f"{DEFAULT_USER}/m", "missing.json", **download)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(f"{DEFAULT_USER}/m", ".gitattributes", revision="nope", **download)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(f"{DEFAULT_USER}/absent", "x", **download)


def test_resolve_headers_and_ranges(hub_emulator: HubEmulator) -> None:
    repo_id = f"{DEFAULT_USER}/ranges"
    api(hub_emulator).create_repo(repo_id)
    api(hub_emulator).upload_file(path_or_fileobj=b"0123456789", path_in_repo="digits.txt",
                                  repo_id=repo_id)
    url = f"{hub_emulator.url}/{repo_id}/resolve/main/digits.txt"

    def fetch(method: str = "GET", **headers: str) -> tuple[int, dict, bytes]:
        request = urllib.request.Request(url, method=method, headers=headers)
        with urllib.request.urlopen(request) as reply:
            return reply.status, dict(reply.headers), reply.read()

    status, headers, body = fetch("HEAD")
    assert status == 200 and headers["Content-Length"] == "10" and body == b""
    assert headers["X-Repo-Commit"] == hub_emulator.repo(repo_id).branches["main"]
    assert headers["ETag"].strip('"') == hashlib.sha1(b"blob 10\x000123456789").hexdigest()
    assert fetch(Range="bytes=2-4")[::2] == (206, b"234")
    assert fetch(Range="bytes=-3")[2] == b"789"
    with pytest.raises(urllib.error.HTTPError) as error:
        fetch(Range="bytes=50-")
    assert error.value.code == 416


def test_space_secrets_variables_and_hardware(hub_emulator: HubEmulator) -> None:
    client, space = api(hub_emulator), f"{DEFAULT_USER}/demo"
    client.create_repo(space, repo_type="space", space_sdk="gradio", private=True)
    client.add_space_secret(space, "HF_TOKEN", DEFAULT_TOKEN)
    client.add_space_secret(space, "OLD", "x")
    client.delete_space_secret(space, "OLD")
    client.add_space_variable(space, "MODEL_ID", f"{DEFAULT_USER}/model")
    runtime = client.request_space_hardware(space, "t4-small")
    assert runtime.requested_hardware == "t4-small"
    assert client.get_space_runtime(space).hardware == "t4-small"
    assert hub_emulator.space_secrets[space] == {"HF_TOKEN": DEFAULT_TOKEN}
    assert hub_emulator.space_variables[space] == {"MODEL_ID": f"{DEFAULT_USER}/model"}
    assert hub_emulator.space_hardware[space] == "t4-small"
    assert list(client.get_space_secrets(space)) == ["HF_TOKEN"]
    # The token sits in the secret only: not in logged requests, files or variables.
    assert hub_emulator.occurrences(DEFAULT_TOKEN) == []
    assert all(DEFAULT_TOKEN not in str(r) for r in hub_emulator.requests)
    client.upload_file(path_or_fileobj=f"token={DEFAULT_TOKEN}".encode(),
                       path_in_repo="app.py", repo_id=space, repo_type="space")
    assert hub_emulator.occurrences(DEFAULT_TOKEN) == [f"spaces/{space}:app.py"]
    assert hub_emulator.unhandled == []


def test_xet_client_gets_a_clear_refusal(hub_emulator: HubEmulator,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A client with Xet on, sending a file the Hub wants as LFS, fails fast and says why."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    api(hub_emulator).create_repo(f"{DEFAULT_USER}/xet")
    with pytest.raises(Exception, match="xet-write-token"):
        api(hub_emulator).upload_file(path_or_fileobj=b"weights", path_in_repo="w.safetensors",
                                      repo_id=f"{DEFAULT_USER}/xet")
    assert len(hub_emulator.repo(f"{DEFAULT_USER}/xet").history()) == 1  # nothing committed


@pytest.mark.slow
def test_datasets_push_and_load_audio(hub_emulator: HubEmulator, tmp_path: Path) -> None:
    output = run_client(hub_emulator, tmp_path, f"""
        import io
        import numpy as np, soundfile
        from datasets import Audio, Dataset, load_dataset

        def wav(seed):
            samples = np.random.default_rng(seed).uniform(-0.5, 0.5, 1600).astype("float32")
            buffer = io.BytesIO()
            soundfile.write(buffer, samples, 16000, format="WAV", subtype="PCM_16")
            return buffer.getvalue()

        clips = [wav(0), wav(1)]
        rows = {{"audio": [{{"bytes": b, "path": f"clip{{i}}.wav"}} for i, b in enumerate(clips)],
                "text": ["hej", "då"]}}
        dataset = Dataset.from_dict(rows).cast_column("audio", Audio(decode=False))
        dataset.push_to_hub("{DEFAULT_USER}/speech", private=True)
        for streaming in (False, True):
            loaded = load_dataset("{DEFAULT_USER}/speech", split="train", streaming=streaming)
            loaded = loaded.cast_column("audio", Audio(decode=False))
            got = sorted(loaded, key=lambda row: row["text"])
            assert [row["text"] for row in got] == ["då", "hej"], got
            assert [row["audio"]["bytes"] for row in got] == [clips[1], clips[0]]
            samples, rate = soundfile.read(io.BytesIO(got[1]["audio"]["bytes"]))
            assert rate == 16000 and len(samples) == 1600
        print("ok")
        """)
    assert output.strip().endswith("ok")
    repo = hub_emulator.repo(f"{DEFAULT_USER}/speech", "dataset")
    assert repo.private and len(repo.history()) == 2
    assert any(path.endswith(".parquet") for path in repo.files())
    assert hub_emulator.occurrences(DEFAULT_TOKEN) == []
    assert hub_emulator.unhandled == []
    assert any(r.status == 206 for r in hub_emulator.requests)  # streaming reads ranges


@pytest.mark.slow
def test_transformers_from_pretrained(hub_emulator: HubEmulator, tmp_path: Path) -> None:
    output = run_client(hub_emulator, tmp_path, f"""
        import torch
        from huggingface_hub import HfApi
        from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        model.save_pretrained("saved")
        api = HfApi()
        api.create_repo("{DEFAULT_USER}/tiny", private=True)
        api.upload_folder(repo_id="{DEFAULT_USER}/tiny", folder_path="saved",
                          commit_message="Upload tiny model")
        model.push_to_hub("{DEFAULT_USER}/tiny-pushed", private=True)
        for repo_id in ("{DEFAULT_USER}/tiny", "{DEFAULT_USER}/tiny-pushed"):
            loaded = AutoModelForCausalLM.from_pretrained(repo_id)
            for name, tensor in model.state_dict().items():
                assert torch.equal(tensor, loaded.state_dict()[name]), (repo_id, name)
        print("ok")
        """)
    assert output.strip().endswith("ok")
    for name in ("tiny", "tiny-pushed"):
        repo = hub_emulator.repo(f"{DEFAULT_USER}/{name}")
        assert repo.private and len(repo.history()) == 2  # one commit after "initial commit"
        assert {"config.json", "model.safetensors"} <= set(repo.files())
        assert repo.resolve("main").files["model.safetensors"].lfs
    assert hub_emulator.unhandled == []
