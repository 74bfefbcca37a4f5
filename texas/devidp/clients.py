"""The dev app as a client of the dev identity provider: its ids and its key pairs.

In production NAIS registers the app at Maskinporten, Entra ID and TokenX and hands it a
private JWK for each; the provider keeps the public half. `texas dev` does the same: one fresh
key pair per provider at start, the private JWK handed to the service in the production
variables (`client_environment`), the public half kept here to check client assertions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from joserfc.jwk import Key

from texas.devidp.keys import generate_key

# cluster:namespace:app of the app that texas dev stands beside.
DEV_APP = "local:texas:app"
MASKINPORTEN_CLIENT_ID = "2f6b4c1e-8a43-4d5e-9c0b-7e1d3a5f9b20"
AZURE_CLIENT_ID = "fd4cff62-d461-412b-bb72-7292a3c4cb61"  # also the azuread audience
TOKEN_X_CLIENT_ID = DEV_APP  # also the tokenx audience

GRANT_PROVIDERS: tuple[str, ...] = ("maskinporten", "azuread", "tokenx")
CLIENT_IDS: Mapping[str, str] = {
    "maskinporten": MASKINPORTEN_CLIENT_ID,
    "azuread": AZURE_CLIENT_ID,
    "tokenx": TOKEN_X_CLIENT_ID,
}
# The production variables: (client id, private JWK), per contract "Tokens for calling other APIs".
VARIABLES: Mapping[str, tuple[str, str]] = {
    "maskinporten": ("MASKINPORTEN_CLIENT_ID", "MASKINPORTEN_CLIENT_JWK"),
    "azuread": ("AZURE_APP_CLIENT_ID", "AZURE_APP_JWK"),
    "tokenx": ("TOKEN_X_CLIENT_ID", "TOKEN_X_PRIVATE_JWK"),
}


@dataclass(frozen=True)
class DevClient:
    """The dev app as registered at one provider."""

    provider: str
    client_id: str
    key: Key  # private; only its public half is ever used here

    def __repr__(self) -> str:  # never a private key in a repr, a log line or a traceback
        return f"DevClient({self.provider!r}, {self.client_id!r}, kid={self.key.kid!r})"

    def private_jwk(self) -> str:
        """The private JWK, with kid and alg, as the service reads it from its variable."""
        return json.dumps(self.key.as_dict(private=True), separators=(",", ":"))


def generate_clients(alg: str) -> dict[str, DevClient]:
    """A fresh key pair for each provider that does grants, signing with `alg`."""
    return {p: DevClient(p, CLIENT_IDS[p], generate_key(alg)) for p in GRANT_PROVIDERS}


def client_environment(clients: Mapping[str, DevClient]) -> dict[str, str]:
    """The client ids and private JWKs in the variables the service reads in production."""
    env: dict[str, str] = {}
    for provider, client in clients.items():
        id_variable, jwk_variable = VARIABLES[provider]
        env[id_variable] = client.client_id
        env[jwk_variable] = client.private_jwk()
    return env
