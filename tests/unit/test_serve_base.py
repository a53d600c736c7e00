"""Where `voxtune serve` gets base transcripts from, decided from the layout and free memory."""

from __future__ import annotations

import torch

from voxtune.models.serve.pair import GIB, base_source, free_memory_bytes


def test_an_adapter_never_needs_a_second_copy() -> None:
    assert base_source(True, 50 * GIB, 1 * GIB, "load")[0] == "adapter"
    assert base_source(True, 50 * GIB, 1 * GIB, "auto")[0] == "adapter"


def test_auto_loads_the_base_beside_full_weights_only_when_memory_holds_it() -> None:
    mini_bf16 = int(9.4 * GIB)
    assert base_source(False, mini_bf16, 32 * GIB, "auto")[0] == "load"
    where, why = base_source(False, mini_bf16, 16 * GIB - mini_bf16, "auto")  # 16 Gi demo pod
    assert where == "skip"
    assert "11.7 GiB" in why and "--base load" in why
    assert base_source(False, mini_bf16, None, "auto")[0] == "load"  # unknown: try


def test_explicit_choices_win() -> None:
    assert base_source(False, 100 * GIB, 1 * GIB, "load")[0] == "load"
    assert base_source(False, 1, 100 * GIB, "skip")[0] == "skip"


def test_free_host_memory_is_read() -> None:
    free = free_memory_bytes(torch.device("cpu"))
    assert free is not None and free > 0
