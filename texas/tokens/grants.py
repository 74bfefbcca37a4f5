"""The four token requests, as the form each identity provider expects.

Each builder is called once per attempt, so that every attempt (retries included) carries an
assertion with its own `jti`: providers refuse a replayed one.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from texas.tokens.assertion import SigningKey, client_assertion, jwt_bearer_assertion

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SUBJECT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"


class Client(NamedTuple):
    """Who texas is at the provider: the app's client id, key and the provider's issuer (the
    audience of every assertion)."""

    client_id: str
    key: SigningKey
    issuer: str


def _authentication(client: Client, now: float) -> dict[str, str]:
    """`private_key_jwt` client authentication (RFC 7523 section 2.2)."""
    return {
        "client_id": client.client_id,
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": client_assertion(client.key, client.client_id, client.issuer, now),
    }


def maskinporten(
    client: Client,
    target: str,
    now: float,
    *,
    resource: str | None = None,
    authorization_details: list[Any] | None = None,
) -> dict[str, str]:
    """RFC 7523 JWT-bearer grant: the signed assertion is the whole request."""
    assertion = jwt_bearer_assertion(
        client.key,
        client.client_id,
        client.issuer,
        target,
        now,
        resource=resource,
        authorization_details=authorization_details,
    )
    return {"grant_type": JWT_BEARER, "assertion": assertion}


def client_credentials(client: Client, target: str, now: float) -> dict[str, str]:
    """Entra ID machine token: client_credentials with a client assertion."""
    return {"grant_type": "client_credentials", "scope": target, **_authentication(client, now)}


def token_exchange(client: Client, target: str, user_token: str, now: float) -> dict[str, str]:
    """TokenX: RFC 8693 token exchange."""
    return {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token_type": SUBJECT_TOKEN_TYPE,
        "subject_token": user_token,
        "audience": target,
        **_authentication(client, now),
    }


def on_behalf_of(client: Client, target: str, user_token: str, now: float) -> dict[str, str]:
    """Entra ID on-behalf-of."""
    return {
        "grant_type": JWT_BEARER,
        "requested_token_use": "on_behalf_of",
        "assertion": user_token,
        "scope": target,
        **_authentication(client, now),
    }
