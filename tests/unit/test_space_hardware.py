"""The demo Space's hardware must hold the published model; checked before anything goes out."""

from __future__ import annotations

import pytest

from voxtune.errors import UserError
from voxtune.plan.geometry import load_geometry
from voxtune.publish.space import space_hardware_problem
from voxtune.publish.step import check_space_hardware

MINI, SMALL = "mistralai/Voxtral-Mini-3B-2507", "mistralai/Voxtral-Small-24B-2507"


def test_mini_fits_the_free_cpu_space() -> None:
    assert space_hardware_problem(load_geometry(MINI).total_parameters, None) is None
    check_space_hardware(MINI, None)


def test_small_on_the_free_tier_is_refused_with_a_tier_that_holds_it() -> None:
    problem = space_hardware_problem(load_geometry(SMALL).total_parameters, None)
    assert problem is not None and "cpu-basic has 16 GB" in problem
    assert "publish.space_hardware to a100-large" in problem
    with pytest.raises(UserError, match="a100-large"):
        check_space_hardware(SMALL, "l40sx1")
    check_space_hardware(SMALL, "a100-large")


def test_unknown_tiers_and_bases_are_left_to_the_hub() -> None:
    assert space_hardware_problem(10**12, "some-new-tier") is None
    check_space_hardware("/nonexistent/base", None)
