"""What vLLM gets from a LoRA run: the adapter on the language model only, and a note when the
run trained a part vLLM cannot load beside an adapter (the projector)."""

from __future__ import annotations

from voxtune.publish.vllm import manifest, restrict_to_language_model

LM_KEY = "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight"
PROJECTOR_KEY = "base_model.model.model.multi_modal_projector.linear_1.weight"


def test_the_language_model_adapter_passes_as_it_is() -> None:
    tensors, config, dropped = restrict_to_language_model(
        {LM_KEY: 1}, {"target_modules": ".*language_model.*", "modules_to_save": None})
    assert tensors == {LM_KEY: 1} and dropped == []
    assert config["target_modules"] == ".*language_model.*"
    assert manifest("mistralai/Voxtral-Mini-3B-2507", dropped) == {
        "model": "mistralai/Voxtral-Mini-3B-2507", "adapter": "vllm-adapter",
        "dtype": "bfloat16", "dropped": [], "note": ""}


def test_a_trained_projector_is_dropped_and_said_so() -> None:
    tensors, config, dropped = restrict_to_language_model(
        {LM_KEY: 1, PROJECTOR_KEY: 2}, {"modules_to_save": ["multi_modal_projector"]})
    assert tensors == {LM_KEY: 1}
    assert config["modules_to_save"] is None
    assert dropped == ["multi_modal_projector"]
    note = manifest("base", dropped)["note"]
    assert "multi_modal_projector" in note and "--merge" in note


def test_merged_and_full_weights_are_served_as_they_are() -> None:
    assert manifest(None, []) == {"model": ".", "adapter": None, "dtype": "bfloat16",
                                  "dropped": [], "note": ""}
