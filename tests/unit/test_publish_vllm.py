"""What vLLM gets from a LoRA run: the adapter on the language model only, under the module path
vLLM's Voxtral has, and a note when the run trained a part vLLM cannot load beside an adapter
(the projector); and how vllm.json says to serve each layout."""

from __future__ import annotations

import contextlib

from tests.unit.test_train_holes import small_disk
from voxtune.publish.vllm import MISTRAL_FORMAT, manifest, restrict_to_language_model

# peft's name under transformers 5, and the same module as vLLM names it (its Voxtral holds
# `language_model`, a MistralForCausalLM whose decoder is `model`)
LM_KEY = "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight"
VLLM_KEY = "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight"
MLP_KEY = "base_model.model.model.language_model.layers.3.mlp.down_proj.lora_B.weight"
PROJECTOR_KEY = "base_model.model.model.multi_modal_projector.linear_1.weight"


def test_the_language_model_adapter_gets_vllms_module_names() -> None:
    tensors, config, dropped = restrict_to_language_model(
        {LM_KEY: 1, MLP_KEY: 2}, {"target_modules": ".*language_model.*", "r": 8,
                                  "modules_to_save": None})
    assert tensors == {VLLM_KEY: 1, MLP_KEY.replace("model.model.language_model.",
                                                    "model.language_model.model."): 2}
    assert dropped == []
    # vLLM compares the adapter's modules with the names it supports: plain names, no regex
    assert config == {"target_modules": ["down_proj", "q_proj"], "r": 8, "modules_to_save": None}
    assert restrict_to_language_model({VLLM_KEY: 1}, {})[0] == {VLLM_KEY: 1}  # already vLLM's
    assert manifest("mistralai/Voxtral-Mini-3B-2507", dropped) == {
        "model": "mistralai/Voxtral-Mini-3B-2507", "adapter": "vllm-adapter",
        "dtype": "bfloat16", "args": MISTRAL_FORMAT, "dropped": [], "note": ""}


def test_a_trained_projector_is_dropped_and_said_so() -> None:
    tensors, config, dropped = restrict_to_language_model(
        {LM_KEY: 1, PROJECTOR_KEY: 2}, {"modules_to_save": ["multi_modal_projector"]})
    assert tensors == {VLLM_KEY: 1}
    assert config["modules_to_save"] is None
    assert dropped == ["multi_modal_projector"]
    note = manifest("base", dropped)["note"]
    assert "multi_modal_projector" in note and "--merge" in note


def test_merged_and_full_weights_are_served_from_the_folders_mistral_layout() -> None:
    assert MISTRAL_FORMAT == ["--tokenizer-mode", "mistral", "--config-format", "mistral",
                              "--load-format", "mistral"]
    assert manifest(None, []) == {"model": ".", "adapter": None, "dtype": "bfloat16",
                                  "args": MISTRAL_FORMAT, "dropped": [], "note": ""}
    assert "sinusoids" in manifest(None, [], positions_match=False)["note"]


def test_a_hub_upload_is_staged_beside_the_run_not_in_the_pods_scratch(tmp_path) -> None:
    """A merged Mini in both layouts is ≈19 GB: the shared volume holds it, /tmp (8 GiB) not."""
    import os
    import subprocess
    import tempfile

    from voxtune.publish.bundle import TrainedRun
    from voxtune.publish.step import staging_folder
    from voxtune.spec import RunSpec

    folder = tmp_path / "run"
    run = TrainedRun(folder / "final", RunSpec(name="r"), {})
    run.final.mkdir(parents=True)
    with staging_folder(run) as staged:
        assert os.path.dirname(staged) == str(folder)
    assert list(folder.iterdir()) == [run.final]  # and removed after

    # a run folder that cannot be written: /tmp after all. Root writes through any mode, so
    # as root (CI) the folder is a read-only mount
    with contextlib.ExitStack() as stack:
        if os.geteuid() == 0:
            stack.enter_context(small_disk(folder, "1m"))  # skips if it cannot mount
            run.final.mkdir()
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        else:
            folder.chmod(0o555)
            stack.callback(folder.chmod, 0o755)
        assert not os.access(folder, os.W_OK)
        with staging_folder(run) as staged:
            assert os.path.dirname(staged) == tempfile.gettempdir()
