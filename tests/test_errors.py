"""Every error the core can raise maps to one of the contract's reason codes, and every joserfc
exception is translated at the one seam (validation.translate_jose_error)."""

from __future__ import annotations

import inspect

import pytest
from joserfc import errors as jose_errors

from texas import errors
from texas.introspection.validation import translate_jose_error

CONTRACT_REASONS = {
    "bad_request",
    "unknown_provider",
    "provider_disabled",
    "malformed",
    "unsupported_algorithm",
    "unknown_key",
    "bad_signature",
    "keys_unavailable",
    "wrong_issuer",
    "wrong_audience",
    "missing_claim",
    "invalid_claim",
    "expired",
    "not_yet_valid",
    "issued_in_future",
    "insufficient_level",
    "internal_error",
}


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _subclasses(sub)
    return found


def test_reasons_are_the_contracts_list() -> None:
    assert errors.REASONS == CONTRACT_REASONS


def test_every_token_error_has_a_contract_reason_and_each_reason_a_class() -> None:
    classes = _subclasses(errors.TokenError)
    assert {c.reason for c in classes} == CONTRACT_REASONS
    assert len(classes) == len(CONTRACT_REASONS)


JOSE_ERRORS = sorted(_subclasses(jose_errors.JoseError) | {jose_errors.JoseError}, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", JOSE_ERRORS, ids=lambda c: c.__name__)
def test_every_joserfc_error_is_translated(cls: type[jose_errors.JoseError]) -> None:
    params = inspect.signature(cls.__init__).parameters
    args = ["x"] * sum(
        1 for p in list(params.values())[1:] if p.default is p.empty and p.kind == p.POSITIONAL_OR_KEYWORD
    )
    verdict = translate_jose_error(cls(*args))
    assert isinstance(verdict, errors.TokenError)
    assert verdict.reason in CONTRACT_REASONS
    assert verdict.message.endswith(".")
    assert "joserfc" not in verdict.message and cls.__name__ not in verdict.message
