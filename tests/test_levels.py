"""Assurance levels: order and legacy aliases, in one place."""

from __future__ import annotations

import pytest

from texas.errors import BadRequest, InsufficientLevel
from texas.introspection import levels


@pytest.mark.parametrize(
    ("asked", "normal"),
    [
        ("Level3", levels.SUBSTANTIAL),
        ("Level4", levels.HIGH),
        (levels.SUBSTANTIAL, levels.SUBSTANTIAL),
        (levels.HIGH, levels.HIGH),
    ],
)
def test_normalise(asked: str, normal: str) -> None:
    assert levels.normalise(asked) == normal


@pytest.mark.parametrize("asked", ["level3", "Level2", "idporten-loa-low", "", "high"])
def test_unknown_requested_level_is_a_bad_request(asked: str) -> None:
    with pytest.raises(BadRequest):
        levels.normalise(asked)


@pytest.mark.parametrize("acr", [levels.HIGH, "Level4", levels.SUBSTANTIAL, "Level3"])
def test_any_known_level_meets_substantial(acr: str) -> None:
    levels.require(acr, levels.SUBSTANTIAL)


@pytest.mark.parametrize("acr", [levels.HIGH, "Level4"])
def test_high_is_met_by_high_only(acr: str) -> None:
    levels.require(acr, levels.HIGH)


@pytest.mark.parametrize(
    "acr", [levels.SUBSTANTIAL, "Level3", None, "", "idporten-loa-low", 4, ["Level4"], "LEVEL4"]
)
def test_below_or_unknown_acr_is_insufficient_and_names_the_level(acr: object) -> None:
    with pytest.raises(InsufficientLevel) as info:
        levels.require(acr, levels.HIGH)
    assert info.value.extra == {"acr_values": levels.HIGH}
