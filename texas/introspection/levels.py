"""ID-porten assurance levels (`acr`): their order and legacy aliases.

ID-porten's current names are `idporten-loa-substantial` < `idporten-loa-high`; tokens and
apps from before 2023 say `Level3` and `Level4` for the same two levels.
"""

from __future__ import annotations

from texas.errors import BadRequest, InsufficientLevel

SUBSTANTIAL = "idporten-loa-substantial"
HIGH = "idporten-loa-high"

_RANK: dict[str, int] = {
    SUBSTANTIAL: 1,
    "Level3": 1,
    HIGH: 2,
    "Level4": 2,
}
_CANONICAL: dict[str, str] = {"Level3": SUBSTANTIAL, "Level4": HIGH, SUBSTANTIAL: SUBSTANTIAL, HIGH: HIGH}


def normalise(level: str) -> str:
    """The `idporten-loa-*` name of a requested level; unknown names are a bad request."""
    try:
        return _CANONICAL[level]
    except (KeyError, TypeError):
        raise BadRequest(
            "The requested level is not one of idporten-loa-substantial, idporten-loa-high, Level3 or Level4."
        ) from None


def require(acr: object, required: str) -> None:
    """Raise unless the token's `acr` is at least the (normalised) `required` level.

    A missing, non-string or unrecognised `acr` counts as below every level.
    """
    rank = _RANK.get(acr, 0) if isinstance(acr, str) else 0
    if rank < _RANK[required]:
        if acr is None:
            message = "The token has no assurance level (acr), and the request requires one."
        else:
            message = "The token's assurance level (acr) is lower than the level required."
        raise InsufficientLevel(message, acr_values=required)
