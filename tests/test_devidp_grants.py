"""The dev identity provider's token endpoints: the four grants of issue 11, over real sockets.

Client assertions are built here with joserfc from the private JWKs that `dev_environment`
hands the service, and sent as form posts to the `token_endpoint` each discovery document
names: what the service does. Issued tokens are checked against the published JWKS.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from joserfc import jwt
from joserfc.jwk import Key, KeySet, RSAKey, import_key
from pytest_aiohttp import AiohttpClient, AiohttpServer

from tests import oauth_client
from tests.oauth_client import encode
from tests.support import b64
from texas.devidp.assertions import MAX_LIFETIME, ReplayGuard
from texas.devidp.clients import (
    AZURE_CLIENT_ID,
    CLIENT_IDS,
    MASKINPORTEN_CLIENT_ID,
    TOKEN_X_CLIENT_ID,
    DevClient,
    generate_clients,
)
from texas.devidp.grants import (
    ACCESS_TOKEN_TYPE,
    CLIENT_ASSERTION_TYPE,
    JWT_BEARER,
    JWT_TOKEN_TYPE,
    LIFETIMES,
    TOKEN_EXCHANGE,
)
from texas.devidp.http import TOKEN_ENDPOINT_KEY, create_devidp_app
from texas.devidp.issuer import ALGORITHMS, DEFAULT_PID, DevIdentityProvider, dev_environment
from texas.devidp.keys import DevIdpError

Client = TestClient[web.Request, None]
JWK_VARIABLES = {
    "maskinporten": "MASKINPORTEN_CLIENT_JWK",
    "azuread": "AZURE_APP_JWK",
    "tokenx": "TOKEN_X_PRIVATE_JWK",
}
OMIT = object()  # a claim to leave out of an assertion


@dataclass(frozen=True)
class Offset:
    """A time claim this many seconds from the moment the assertion is built."""

    seconds: int


@dataclass
class Dev:
    """A dev IdP on a socket, and the service's view of it: variables and discovery."""

    idp: DevIdentityProvider
    client: Client
    env: dict[str, str]

    def issuer(self, provider: str) -> str:
        return self.idp.issuer(provider)

    def key(self, provider: str) -> Key:
        """The private JWK the service reads from its variable."""
        return import_key(json.loads(self.env[JWK_VARIABLES[provider]]))

    async def token_endpoint(self, provider: str) -> str:
        resp = await self.client.get(f"/{provider}/.well-known/openid-configuration")
        return str((await resp.json())["token_endpoint"])

    def assertion(self, provider: str, *, key: Key | None = None, **claims: Any) -> str:
        """A client assertion as the service builds it; a claim set to OMIT is left out, an
        Offset is a time from now."""
        now = int(time.time())
        claims = {"iat": now, "nbf": now, "exp": now + 60} | claims  # one `now` for every Offset
        omit = [k for k, v in claims.items() if v is OMIT]
        claims = {k: now + v.seconds if isinstance(v, Offset) else v for k, v in claims.items()}
        claims = {k: v for k, v in claims.items() if v is not OMIT}
        return oauth_client.assertion(
            key or self.key(provider),
            CLIENT_IDS[provider],
            self.issuer(provider),
            sub=provider != "maskinporten",
            omit=omit,
            **claims,
        )

    def client_auth(self, provider: str, **claims: Any) -> dict[str, str]:
        return {
            "client_id": CLIENT_IDS[provider],
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self.assertion(provider, **claims),
        }

    async def post(self, provider: str, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        # To the address discovery names, as the service posts: a form, RFC 6749 §3.2.
        async with self.client.session.post(await self.token_endpoint(provider), data=dict(form)) as resp:
            assert resp.content_type == "application/json"
            assert resp.headers["Cache-Control"] == "no-store"
            return resp.status, await resp.json()

    async def verified(self, access_token: str) -> dict[str, Any]:
        """The claims of an issued token, checked against the published JWKS."""
        jwks = await (await self.client.get("/tokenx/jwks")).json(content_type=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            token = jwt.decode(access_token, KeySet.import_key_set(jwks), algorithms=list(ALGORITHMS))
        assert token.header["kid"] == self.idp.current_kid
        return dict(token.claims)

    # one request of each grant, with fields to change

    def maskinporten(self, **claims: Any) -> dict[str, str]:
        claims.setdefault("scope", "nav:test/api")
        return {"grant_type": JWT_BEARER, "assertion": self.assertion("maskinporten", **claims)}

    def client_credentials(
        self, scope: str = "api://dev-gcp.team.app/.default", **claims: Any
    ) -> dict[str, str]:
        return {"grant_type": "client_credentials", "scope": scope, **self.client_auth("azuread", **claims)}

    def on_behalf_of(
        self, user_token: str, scope: str = "api://dev-gcp.team.app/.default", **claims: Any
    ) -> dict[str, str]:
        return {
            "grant_type": JWT_BEARER,
            "requested_token_use": "on_behalf_of",
            "assertion": user_token,
            "scope": scope,
            **self.client_auth("azuread", **claims),
        }

    def exchange(
        self, subject_token: str, audience: str = "dev-gcp:team:app", **claims: Any
    ) -> dict[str, str]:
        return {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token_type": JWT_TOKEN_TYPE,
            "subject_token": subject_token,
            "audience": audience,
            **self.client_auth("tokenx", **claims),
        }


@functools.cache
def shared_clients(alg: str) -> Mapping[str, DevClient]:
    """Client key pairs made once per algorithm: RSA keys are slow to make, and each test has
    its own token endpoint (and so its own jti memory) anyway."""
    return generate_clients(alg)


async def start_dev(
    aiohttp_server: AiohttpServer,
    aiohttp_client: AiohttpClient,
    alg: str = "RS256",
    token_lifetimes: Mapping[str, int] | None = None,
) -> Dev:
    # The IdP's own key is EC, quick to make; the client keys, in `alg`, are what is tested here.
    idp = DevIdentityProvider("http://placeholder.invalid", "ES256", clients=shared_clients(alg))
    server = await aiohttp_server(create_devidp_app(idp, token_lifetimes=token_lifetimes))
    idp.base_url = str(server.make_url("")).rstrip("/")
    return Dev(idp, await aiohttp_client(server), dev_environment(idp.base_url, idp.clients))


@pytest.fixture
async def dev(aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient) -> Dev:
    return await start_dev(aiohttp_server, aiohttp_client)


# the environment texas dev hands the service


def test_dev_environment_hands_a_private_jwk_and_client_id_per_provider(tmp_path: Path) -> None:
    from texas.config import Config

    idp = DevIdentityProvider("http://127.0.0.1:3001")
    env = dev_environment(idp.base_url, idp.clients)
    assert env["MASKINPORTEN_CLIENT_ID"] == MASKINPORTEN_CLIENT_ID
    assert env["AZURE_APP_CLIENT_ID"] == AZURE_CLIENT_ID
    assert env["TOKEN_X_CLIENT_ID"] == TOKEN_X_CLIENT_ID
    kids = set()
    for provider, variable in JWK_VARIABLES.items():
        jwk = json.loads(env[variable])
        key = import_key(jwk)
        assert key.is_private, variable
        assert jwk["kid"] and jwk["alg"] == "RS256" and jwk["kty"] == "RSA", variable
        assert isinstance(key, RSAKey) and key.raw_value.key_size >= 2048
        assert jwk["kid"] == idp.clients[provider].key.kid  # the dev IdP holds its public half
        kids.add(jwk["kid"])
    assert len(kids) == 3, "one key pair per provider, as NAIS registers them"
    config = Config.from_env(env, secrets_dir=tmp_path)
    assert [p.name for p in config.providers] == ["idporten", "maskinporten", "azuread", "tokenx"]


def test_dev_environment_without_clients_has_no_private_keys() -> None:
    env = dev_environment("http://127.0.0.1:3001")
    assert not set(JWK_VARIABLES.values()) & env.keys()


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_client_keys_follow_the_signing_algorithm(alg: str) -> None:
    idp = DevIdentityProvider("http://127.0.0.1:3001", alg)
    env = dev_environment(idp.base_url, idp.clients)
    for variable in JWK_VARIABLES.values():
        assert json.loads(env[variable])["alg"] == alg


def test_a_client_never_shows_its_private_key_in_a_repr() -> None:
    client = DevIdentityProvider("http://127.0.0.1:3001", "ES256").clients["tokenx"]
    private = client.key.as_dict(private=True)
    assert private["d"] not in repr(client)


@pytest.mark.parametrize(
    ("provider", "grants"),
    [
        ("idporten", []),
        ("maskinporten", [JWT_BEARER]),
        ("azuread", ["client_credentials", JWT_BEARER]),
        ("tokenx", [TOKEN_EXCHANGE]),
    ],
)
async def test_discovery_names_the_token_endpoint_and_its_grants(
    dev: Dev, provider: str, grants: list[str]
) -> None:
    doc = await (await dev.client.get(f"/{provider}/.well-known/openid-configuration")).json()
    assert doc["token_endpoint"] == f"{dev.issuer(provider)}/token"
    assert doc["grant_types_supported"] == grants
    assert doc["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]


# the four grants


@pytest.mark.parametrize("alg", ALGORITHMS)
async def test_maskinporten_issues_a_machine_token_for_the_scope(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient, alg: str
) -> None:
    dev = await start_dev(aiohttp_server, aiohttp_client, alg)
    status, answer = await dev.post("maskinporten", dev.maskinporten(scope="nav:test/api  nav:test/other"))
    assert status == 200, answer
    assert answer.keys() == {"access_token", "token_type", "expires_in", "scope"}
    assert answer["token_type"] == "Bearer"
    assert answer["expires_in"] == LIFETIMES["maskinporten"]
    assert answer["scope"] == "nav:test/api nav:test/other"
    claims = await dev.verified(answer["access_token"])
    assert claims["iss"] == dev.issuer("maskinporten")
    assert claims["scope"] == "nav:test/api nav:test/other"
    assert claims["client_id"] == MASKINPORTEN_CLIENT_ID
    assert claims["consumer"]["ID"].startswith("0192:")
    assert claims["exp"] - claims["iat"] == LIFETIMES["maskinporten"]
    assert "resource" not in claims and "authorization_details" not in claims


async def test_maskinporten_resource_becomes_the_audience_and_authorization_details_carry_over(
    dev: Dev,
) -> None:
    details = [{"type": "urn:altinn:resource", "resource": "urn:altinn:resource:x"}]
    form = dev.maskinporten(resource="https://api.example/v1", authorization_details=details)
    status, answer = await dev.post("maskinporten", form)
    assert status == 200, answer
    claims = await dev.verified(answer["access_token"])
    assert claims["aud"] == "https://api.example/v1"
    assert claims["authorization_details"] == details


@pytest.mark.parametrize(
    ("scope", "audience"),
    [
        ("api://dev-gcp.team.app/.default", "dev-gcp:team:app"),
        ("api://local.texas.app/.default", AZURE_CLIENT_ID),
        ("api://3F2504E0-4F89-11D3-9A0C-0305E82C3301/.default", "3f2504e0-4f89-11d3-9a0c-0305e82c3301"),
        ("3f2504e0-4f89-11d3-9a0c-0305e82c3301/.default", "3f2504e0-4f89-11d3-9a0c-0305e82c3301"),
    ],
    ids=["nais-app", "this-app", "api-guid", "bare-guid"],
)
async def test_client_credentials_issues_an_app_token_for_the_scope(
    dev: Dev, scope: str, audience: str
) -> None:
    status, answer = await dev.post("azuread", dev.client_credentials(scope))
    assert status == 200, answer
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == LIFETIMES["azuread"]
    claims = await dev.verified(answer["access_token"])
    assert claims["iss"] == dev.issuer("azuread")
    assert claims["aud"] == audience
    assert claims["azp"] == AZURE_CLIENT_ID
    assert claims["idtyp"] == "app"
    assert claims["oid"] == claims["sub"]
    assert "NAVident" not in claims and "scp" not in claims


async def test_on_behalf_of_carries_the_employee_to_the_audience_of_the_scope(dev: Dev) -> None:
    user = dev.idp.mint("azuread", {"NAVident": "Z123456", "groups": ["g1"]})
    status, answer = await dev.post("azuread", dev.on_behalf_of(user.access_token))
    assert status == 200, answer
    assert answer["scope"] == "api://dev-gcp.team.app/.default"
    claims = await dev.verified(answer["access_token"])
    assert claims["aud"] == "dev-gcp:team:app"
    assert claims["iss"] == dev.issuer("azuread")
    assert claims["azp"] == AZURE_CLIENT_ID
    for name in ("oid", "NAVident", "groups", "tid", "sub", "name"):
        assert claims[name] == user.claims[name], name
    assert "idtyp" not in claims


@pytest.mark.parametrize("subject_provider", ["idporten", "tokenx"])
async def test_token_exchange_carries_the_citizen_to_the_audience(dev: Dev, subject_provider: str) -> None:
    user = dev.idp.mint(subject_provider, {"pid": "12345678901"}, level="idporten-loa-substantial")
    status, answer = await dev.post("tokenx", dev.exchange(user.access_token))
    assert status == 200, answer
    assert answer["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == LIFETIMES["tokenx"]
    claims = await dev.verified(answer["access_token"])
    assert claims["iss"] == dev.issuer("tokenx")
    assert claims["aud"] == "dev-gcp:team:app"
    assert claims["client_id"] == TOKEN_X_CLIENT_ID
    assert claims["pid"] == "12345678901"
    assert claims["acr"] == "idporten-loa-substantial"
    assert claims["sub"] == user.claims["sub"]
    assert claims["idp"] == dev.issuer("idporten")
    assert claims["jti"] != user.claims["jti"]


async def test_token_lifetimes_can_be_set_per_provider(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient
) -> None:
    dev = await start_dev(aiohttp_server, aiohttp_client, token_lifetimes={"maskinporten": 6})
    status, answer = await dev.post("maskinporten", dev.maskinporten())
    assert status == 200 and answer["expires_in"] == 6, answer
    claims = await dev.verified(answer["access_token"])
    assert claims["exp"] - claims["iat"] == 6
    status, answer = await dev.post("azuread", dev.client_credentials())
    assert status == 200 and answer["expires_in"] == LIFETIMES["azuread"], answer


@pytest.mark.parametrize(
    "lifetimes", [{"idporten": 60}, {"tokenx": 0}, {"azuread": 1.5}, {"maskinporten": True}], ids=str
)
def test_token_lifetimes_are_whole_seconds_for_a_provider_that_grants(lifetimes: dict[str, Any]) -> None:
    idp = DevIdentityProvider("http://127.0.0.1:3001", "ES256", clients=shared_clients("RS256"))
    with pytest.raises(DevIdpError, match="whole seconds above 0 for maskinporten, azuread, tokenx"):
        create_devidp_app(idp, token_lifetimes=lifetimes)


@pytest.mark.parametrize(
    "aud",
    ["issuer", "token_endpoint", "list"],
)
async def test_the_assertion_audience_may_be_the_issuer_or_the_token_endpoint(dev: Dev, aud: str) -> None:
    issuer = dev.issuer("azuread")
    value: Any = {"issuer": issuer, "token_endpoint": f"{issuer}/token", "list": ["other", issuer]}[aud]
    status, answer = await dev.post("azuread", dev.client_credentials(aud=value))
    assert status == 200, answer


# client assertions refused


@functools.cache
def _stranger() -> RSAKey:
    return RSAKey.generate_key(2048, auto_kid=False)


def _other_key(dev: Dev, provider: str) -> Key:
    """Another key under the client key's kid: only the signature can tell them apart."""
    genuine = dev.key(provider)
    return import_key(_stranger().as_dict(private=True) | {"kid": genuine.kid, "alg": genuine.alg})


REFUSED_ASSERTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("wrong-iss", {"iss": "someone-else"}, "iss is not the client id"),
    ("no-iss", {"iss": OMIT}, "iss is not the client id"),
    ("wrong-aud", {"aud": "https://elsewhere.example"}, "aud must be one of"),
    ("no-aud", {"aud": OMIT}, "aud must be one of"),
    ("aud-of-another-provider", {"aud": "<other-issuer>"}, "aud must be one of"),
    ("expired", {"iat": Offset(-100), "exp": Offset(-1)}, "has expired"),
    ("too-long", {"exp": Offset(MAX_LIFETIME + 1)}, f"longer than {MAX_LIFETIME} seconds"),
    ("no-exp", {"exp": OMIT}, "needs exp"),
    ("exp-string", {"exp": str(int(time.time()) + 600)}, "needs exp"),
    ("exp-bool", {"exp": True}, "needs exp"),
    ("no-iat", {"iat": OMIT}, "needs iat"),
    ("iat-in-future", {"iat": Offset(60), "exp": Offset(90)}, "issued in the future"),
    ("nbf-in-future", {"nbf": Offset(60)}, "not valid yet"),
    ("no-jti", {"jti": OMIT}, "needs a jti"),
    ("empty-jti", {"jti": ""}, "needs a jti"),
    ("jti-number", {"jti": 7}, "needs a jti"),
]


def _assertion_cases(rows: list[tuple[str, dict[str, Any], str]]) -> Any:
    return pytest.mark.parametrize(("claims", "message"), [r[1:] for r in rows], ids=[r[0] for r in rows])


def _with_other_issuer(dev: Dev, claims: dict[str, Any]) -> dict[str, Any]:
    return {k: dev.issuer("idporten") if v == "<other-issuer>" else v for k, v in claims.items()}


@_assertion_cases(REFUSED_ASSERTIONS)
async def test_client_credentials_refuses_a_bad_client_assertion(
    dev: Dev, claims: dict[str, Any], message: str
) -> None:
    status, answer = await dev.post("azuread", dev.client_credentials(**_with_other_issuer(dev, claims)))
    assert status == 401, answer
    assert answer["error"] == "invalid_client"
    assert message in answer["error_description"]


@_assertion_cases(REFUSED_ASSERTIONS)
async def test_token_exchange_refuses_a_bad_client_assertion(
    dev: Dev, claims: dict[str, Any], message: str
) -> None:
    user = dev.idp.mint("idporten").access_token
    status, answer = await dev.post("tokenx", dev.exchange(user, **_with_other_issuer(dev, claims)))
    assert status == 401, answer
    assert answer["error"] == "invalid_client"
    assert message in answer["error_description"]


@_assertion_cases([r for r in REFUSED_ASSERTIONS if r[0] not in ("no-iss", "wrong-iss")])
async def test_maskinporten_refuses_a_bad_assertion_as_invalid_grant(
    dev: Dev, claims: dict[str, Any], message: str
) -> None:
    status, answer = await dev.post("maskinporten", dev.maskinporten(**_with_other_issuer(dev, claims)))
    assert status == 400, answer
    assert answer["error"] == "invalid_grant"
    assert message in answer["error_description"]
    assert answer["error_description"].startswith("The assertion")


async def test_maskinporten_refuses_an_assertion_from_another_client(dev: Dev) -> None:
    status, answer = await dev.post("maskinporten", dev.maskinporten(iss="someone-else"))
    assert (status, answer["error"]) == (400, "invalid_grant")


@pytest.mark.parametrize("provider", ["azuread", "tokenx"])
async def test_a_client_assertion_without_sub_is_refused(dev: Dev, provider: str) -> None:
    form = dev.client_credentials(sub=OMIT) if provider == "azuread" else dev.exchange("x", sub=OMIT)
    if provider == "tokenx":
        form["subject_token"] = dev.idp.mint("idporten").access_token
    status, answer = await dev.post(provider, form)
    assert (status, answer["error"]) == (401, "invalid_client")
    assert "sub is not the client id" in answer["error_description"]


async def test_a_client_assertion_signed_by_another_key_is_refused(dev: Dev) -> None:
    form = dev.client_credentials()
    form["client_assertion"] = dev.assertion("azuread", key=_other_key(dev, "azuread"))
    status, answer = await dev.post("azuread", form)
    assert (status, answer["error"]) == (401, "invalid_client")
    assert "signature does not verify" in answer["error_description"]


async def test_a_client_assertion_signed_with_another_providers_key_is_refused(dev: Dev) -> None:
    form = dev.client_credentials()
    tokenx_key = dev.key("tokenx")
    form["client_assertion"] = dev.assertion("azuread", key=tokenx_key)
    status, answer = await dev.post("azuread", form)
    assert (status, answer["error"]) == (401, "invalid_client")


async def test_an_unsigned_client_assertion_is_refused(dev: Dev) -> None:
    now = int(time.time())
    claims = {"iss": AZURE_CLIENT_ID, "sub": AZURE_CLIENT_ID, "aud": dev.issuer("azuread")}
    claims |= {"iat": now, "exp": now + 60, "jti": "j"}
    header = {"alg": "none", "kid": dev.key("azuread").kid}
    forged = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."
    form = dev.client_credentials() | {"client_assertion": forged}
    status, answer = await dev.post("azuread", form)
    assert (status, answer["error"]) == (401, "invalid_client")


async def test_a_client_assertion_in_another_algorithm_is_refused(dev: Dev) -> None:
    # The client's own key, without its alg: PS256 would suit an RSA key, but not the registration.
    key = import_key({k: v for k, v in dev.key("azuread").as_dict(private=True).items() if k != "alg"})
    now = int(time.time())
    claims = {"iss": AZURE_CLIENT_ID, "sub": AZURE_CLIENT_ID, "aud": dev.issuer("azuread")}
    claims |= {"iat": now, "exp": now + 60, "jti": str(uuid.uuid4())}
    form = dev.client_credentials() | {
        "client_assertion": encode({"alg": "PS256", "kid": key.kid}, claims, key, "PS256")
    }
    status, answer = await dev.post("azuread", form)
    assert (status, answer["error"]) == (401, "invalid_client")
    assert "must be signed with RS256" in answer["error_description"]


async def test_a_client_assertion_with_another_kid_is_refused(dev: Dev) -> None:
    key = dev.key("azuread")
    renamed = import_key(key.as_dict(private=True) | {"kid": "not-the-client-key"})
    form = dev.client_credentials() | {"client_assertion": dev.assertion("azuread", key=renamed)}
    status, answer = await dev.post("azuread", form)
    assert (status, answer["error"]) == (401, "invalid_client")
    assert "kid" in answer["error_description"]


@pytest.mark.parametrize("provider", ["maskinporten", "azuread", "tokenx"])
async def test_a_replayed_assertion_is_refused(dev: Dev, provider: str) -> None:
    user = dev.idp.mint("idporten").access_token
    form = {
        "maskinporten": dev.maskinporten,
        "azuread": dev.client_credentials,
        "tokenx": lambda: dev.exchange(user),
    }[provider]()
    first = await dev.post(provider, form)
    assert first[0] == 200, first
    status, answer = await dev.post(provider, form)
    assert status in (400, 401)
    assert answer["error"] in ("invalid_grant", "invalid_client")
    assert "jti was used before" in answer["error_description"]


async def test_a_forged_assertion_does_not_use_up_its_jti(dev: Dev) -> None:
    jti = str(uuid.uuid4())
    forged = dev.client_credentials(jti=jti)
    forged["client_assertion"] = dev.assertion("azuread", key=_other_key(dev, "azuread"), jti=jti)
    assert (await dev.post("azuread", forged))[0] == 401
    status, answer = await dev.post("azuread", dev.client_credentials(jti=jti))
    assert status == 200, answer


def test_the_jti_memory_forgets_each_jti_when_its_assertion_expires() -> None:
    guard = ReplayGuard()
    assert guard.first_use("c", "a", exp=100, now=0)
    assert guard.first_use("c", "b", exp=200, now=0)
    assert guard.first_use("other-client", "a", exp=100, now=0)
    assert not guard.first_use("c", "a", exp=100, now=50)
    assert len(guard) == 3
    assert guard.first_use("c", "z", exp=300, now=150)  # a and other-client's a have expired
    assert len(guard) == 2
    assert guard.first_use("c", "a", exp=260, now=150)  # an expired assertion was refused anyway


# requests refused


@pytest.mark.parametrize(
    ("provider", "grant_type"),
    [
        ("maskinporten", "client_credentials"),
        ("maskinporten", TOKEN_EXCHANGE),
        ("azuread", TOKEN_EXCHANGE),
        ("azuread", "authorization_code"),
        ("tokenx", "client_credentials"),
        ("tokenx", JWT_BEARER),
        ("idporten", "client_credentials"),
        ("idporten", JWT_BEARER),
    ],
)
async def test_a_grant_the_provider_does_not_do_is_unsupported(
    dev: Dev, provider: str, grant_type: str
) -> None:
    status, answer = await dev.post(provider, {"grant_type": grant_type})
    assert (status, answer["error"]) == (400, "unsupported_grant_type")


def _without(form: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in form.items() if k != name}


@pytest.mark.parametrize(
    ("provider", "build", "field", "status", "error"),
    [
        ("maskinporten", "maskinporten", "grant_type", 400, "invalid_request"),
        ("maskinporten", "maskinporten", "assertion", 400, "invalid_request"),
        ("azuread", "client_credentials", "scope", 400, "invalid_request"),
        ("azuread", "client_credentials", "client_id", 400, "invalid_request"),
        ("azuread", "client_credentials", "client_assertion", 401, "invalid_client"),
        ("azuread", "client_credentials", "client_assertion_type", 401, "invalid_client"),
        ("azuread", "on_behalf_of", "assertion", 400, "invalid_request"),
        ("azuread", "on_behalf_of", "requested_token_use", 400, "invalid_request"),
        ("azuread", "on_behalf_of", "scope", 400, "invalid_request"),
        ("tokenx", "exchange", "subject_token", 400, "invalid_request"),
        ("tokenx", "exchange", "subject_token_type", 400, "invalid_request"),
        ("tokenx", "exchange", "audience", 400, "invalid_request"),
        ("tokenx", "exchange", "client_assertion", 401, "invalid_client"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_a_missing_field_is_refused(
    dev: Dev, provider: str, build: str, field: str, status: int, error: str
) -> None:
    user = dev.idp.mint("azuread" if provider == "azuread" else "idporten").access_token
    form = {
        "maskinporten": lambda: dev.maskinporten(),
        "client_credentials": lambda: dev.client_credentials(),
        "on_behalf_of": lambda: dev.on_behalf_of(user),
        "exchange": lambda: dev.exchange(user),
    }[build]()
    got_status, answer = await dev.post(provider, _without(form, field))
    assert (got_status, answer["error"]) == (status, error), answer
    assert answer["error_description"]
    if error == "invalid_request":
        assert field in answer["error_description"]


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
            "invalid_client",
        ),
        ("client_id", "someone-else", "invalid_client"),
        ("requested_token_use", "something_else", "invalid_request"),
        ("scope", "api://dev-gcp.team.app/read", "invalid_scope"),
        ("scope", "api://dev-gcp.team.app/.default openid", "invalid_scope"),
        ("scope", "api://not-an-app/.default", "invalid_scope"),
    ],
)
async def test_a_wrong_field_is_refused(dev: Dev, field: str, value: str, error: str) -> None:
    form = dev.on_behalf_of(dev.idp.mint("azuread").access_token) | {field: value}
    status, answer = await dev.post("azuread", form)
    assert answer["error"] == error, answer
    assert status == (401 if error == "invalid_client" else 400)


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        ({"scope": OMIT}, "invalid_scope"),
        ({"scope": "  "}, "invalid_scope"),
        ({"scope": ["nav:test/api"]}, "invalid_scope"),
        ({"resource": ""}, "invalid_target"),
        ({"resource": 7}, "invalid_target"),
        ({"authorization_details": {"type": "x"}}, "invalid_authorization_details"),
        ({"authorization_details": [{"no": "type"}]}, "invalid_authorization_details"),
        ({"authorization_details": []}, "invalid_authorization_details"),
    ],
    ids=lambda v: json.dumps(v, default=lambda _: "omit") if isinstance(v, dict) else v,
)
async def test_maskinporten_refuses_a_bad_scope_resource_or_authorization_details(
    dev: Dev, claims: dict[str, Any], error: str
) -> None:
    status, answer = await dev.post("maskinporten", dev.maskinporten(**claims))
    assert (status, answer["error"]) == (400, error), answer


async def test_tokenx_refuses_an_audience_that_names_no_app(dev: Dev) -> None:
    user = dev.idp.mint("idporten").access_token
    status, answer = await dev.post("tokenx", dev.exchange(user, audience="api://dev-gcp.team.app/.default"))
    assert (status, answer["error"]) == (400, "invalid_request")
    assert "<cluster>:<namespace>:<app>" in answer["error_description"]


async def test_a_repeated_parameter_is_refused(dev: Dev) -> None:
    form = dev.maskinporten()
    body = "&".join(f"{k}={v}" for k, v in form.items()) + "&grant_type=client_credentials"
    resp = await dev.client.post(
        "/maskinporten/token", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert resp.status == 400
    answer = await resp.json()
    assert answer["error"] == "invalid_request"
    assert "grant_type must be given once" in answer["error_description"]


async def test_a_json_body_still_mints_and_a_form_is_a_grant(dev: Dev) -> None:
    minted = await dev.client.post("/tokenx/token", json={"claims": {"pid": "12345678901"}})
    assert minted.status == 200
    assert (await minted.json())["claims"]["pid"] == "12345678901"
    status, answer = await dev.post("tokenx", {"claims": "{}"})
    assert (status, answer["error"]) == (400, "invalid_request")
    assert "needs grant_type; to mint a dev token, send JSON" in answer["error_description"]


# the token handed in for exchange


def _forged_user_token(dev: Dev, provider: str) -> str:
    """A token with the dev IdP's kid and claims, signed by another key."""
    claims = dev.idp.default_claims(provider, int(time.time()), 600) | {"pid": DEFAULT_PID}
    return encode({"alg": "RS256", "kid": dev.idp.current_kid, "typ": "JWT"}, claims, _stranger(), "RS256")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("expired", "has expired"),
        ("forged", "signature does not verify"),
        ("unknown-kid", "not signed by a key this identity provider publishes"),
        ("foreign-issuer", "not issued by this identity provider"),
        ("not-a-jwt", "not a compact JWT"),
        ("tokenx-for-another-app", "aud is not this client"),
    ],
)
async def test_token_exchange_refuses_a_subject_token_it_cannot_vouch_for(
    dev: Dev, case: str, message: str
) -> None:
    if case == "expired":
        subject = dev.idp.mint("idporten", expires_in=-1).access_token
    elif case == "forged":
        subject = _forged_user_token(dev, "idporten")
    elif case == "unknown-kid":
        subject = DevIdentityProvider("http://127.0.0.1:1", "ES256").mint("idporten").access_token
    elif case == "foreign-issuer":
        subject = dev.idp.mint("idporten", {"iss": "https://idporten.no"}).access_token
    elif case == "not-a-jwt":
        subject = "not-a-token"
    else:
        subject = dev.idp.mint("tokenx", {"aud": "dev-gcp:other:app"}).access_token
    status, answer = await dev.post("tokenx", dev.exchange(subject))
    assert (status, answer["error"]) == (400, "invalid_grant"), answer
    assert message in answer["error_description"]


async def test_token_exchange_takes_a_subject_token_signed_with_a_key_still_published(dev: Dev) -> None:
    subject = dev.idp.mint("idporten").access_token
    dev.idp.rotate()
    status, answer = await dev.post("tokenx", dev.exchange(subject))
    assert status == 200, answer


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("expired", "has expired"),
        ("forged", "signature does not verify"),
        ("idporten-token", "not an Entra ID token"),
        ("for-another-app", "aud is not this client"),
        ("app-token", "not a user's token"),
    ],
)
async def test_on_behalf_of_refuses_a_user_token_it_cannot_vouch_for(
    dev: Dev, case: str, message: str
) -> None:
    if case == "expired":
        user = dev.idp.mint("azuread", expires_in=-1).access_token
    elif case == "forged":
        user = _forged_user_token(dev, "azuread")
    elif case == "idporten-token":
        user = dev.idp.mint("idporten", {"aud": AZURE_CLIENT_ID}).access_token
    elif case == "for-another-app":
        user = dev.idp.mint("azuread", {"aud": "00000000-0000-0000-0000-000000000001"}).access_token
    else:
        status, app = await dev.post("azuread", dev.client_credentials("api://local.texas.app/.default"))
        assert status == 200, app
        user = app["access_token"]
    status, answer = await dev.post("azuread", dev.on_behalf_of(user))
    assert (status, answer["error"]) == (400, "invalid_grant"), answer
    assert message in answer["error_description"]


# logs


async def test_no_token_assertion_or_key_reaches_the_log(dev: Dev, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    user = dev.idp.mint("idporten", {"pid": "12345678901"})
    form = dev.exchange(user.access_token)
    status, answer = await dev.post("tokenx", form)
    assert status == 200
    refused = await dev.post("tokenx", form)  # a replay: refused, and logged as such
    assert refused[0] == 401
    text = caplog.text
    assert "refused: invalid_client" in text
    secrets = [
        user.access_token,
        answer["access_token"],
        form["client_assertion"],
        "12345678901",
        *(
            p
            for t in (user.access_token, answer["access_token"], form["client_assertion"])
            for p in t.split(".")
        ),
        json.loads(dev.env["TOKEN_X_PRIVATE_JWK"])["d"],
    ]
    for secret in secrets:
        assert secret not in text


# issued tokens in the real service


@pytest.mark.parametrize("grant", ["client_credentials", "on_behalf_of", "token_exchange"])
async def test_a_token_issued_for_this_app_introspects_active_in_the_service(
    dev: Dev, aiohttp_client: AiohttpClient, tmp_path: Path, grant: str
) -> None:
    from texas.app import create_app
    from texas.config import Config

    service = await aiohttp_client(create_app(Config.from_env(dev.env, secrets_dir=tmp_path), dev=True))
    if grant == "client_credentials":
        provider, form = "azuread", dev.client_credentials("api://local.texas.app/.default")
    elif grant == "on_behalf_of":
        user = dev.idp.mint("azuread").access_token
        provider, form = "azuread", dev.on_behalf_of(user, "api://local.texas.app/.default")
    else:
        user = dev.idp.mint("idporten", {"pid": "12345678901"}).access_token
        provider, form = "tokenx", dev.exchange(user, TOKEN_X_CLIENT_ID)
    status, answer = await dev.post(provider, form)
    assert status == 200, answer
    resp = await service.post(
        "/api/v1/introspect", json={"identity_provider": provider, "token": answer["access_token"]}
    )
    verdict = await resp.json()
    assert verdict["active"] is True, verdict
    if grant == "token_exchange":
        assert verdict["pid"] == "12345678901"


# the service's token endpoints against the dev IdP (once the service has them)


async def test_the_service_gets_every_kind_of_token_from_the_dev_idp(
    aiohttp_server: AiohttpServer, aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    from texas.app import create_app
    from texas.config import Config

    idp = DevIdentityProvider("http://placeholder.invalid", "ES256", clients=shared_clients("RS256"))
    server = await aiohttp_server(create_devidp_app(idp))
    idp.base_url = str(server.make_url("")).rstrip("/")
    config = Config.from_env(dev_environment(idp.base_url, idp.clients), secrets_dir=tmp_path)
    service = await aiohttp_client(create_app(config, dev=True))
    if (await service.post("/api/v1/token", json={})).status == 404:
        pytest.skip("this texas has no POST /api/v1/token yet (the service side of issue 11)")
    accepted = server.app[TOKEN_ENDPOINT_KEY].replay  # one entry per assertion the IdP took

    async def ask(path: str, **body: str) -> dict[str, Any]:
        resp = await service.post(path, json=body)
        answer = await resp.json()
        assert resp.status == 200, answer
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            jwks = KeySet.import_key_set(idp.jwks())  # type: ignore[arg-type]
            return dict(jwt.decode(answer["access_token"], jwks, algorithms=list(ALGORITHMS)).claims)

    claims = await ask("/api/v1/token", identity_provider="maskinporten", target="nav:test/api")
    assert claims["scope"] == "nav:test/api"
    claims = await ask("/api/v1/token", identity_provider="azuread", target="api://dev-gcp.team.app/.default")
    assert (claims["aud"], claims["idtyp"]) == ("dev-gcp:team:app", "app")
    citizen = idp.mint("idporten", {"pid": "12345678901"}).access_token
    claims = await ask(
        "/api/v1/token/exchange", identity_provider="tokenx", target="dev-gcp:team:app", user_token=citizen
    )
    assert (claims["aud"], claims["pid"]) == ("dev-gcp:team:app", "12345678901")
    employee = idp.mint("azuread", {"NAVident": "Z123456"}).access_token
    claims = await ask(
        "/api/v1/token/exchange",
        identity_provider="azuread",
        target="api://dev-gcp.team.app/.default",
        user_token=employee,
    )
    assert (claims["aud"], claims["NAVident"]) == ("dev-gcp:team:app", "Z123456")
    assert len(accepted) == 4

    # Asked again: served from the service's cache, no new assertion reaches the IdP.
    await ask("/api/v1/token", identity_provider="maskinporten", target="nav:test/api")
    await ask(
        "/api/v1/token/exchange", identity_provider="tokenx", target="dev-gcp:team:app", user_token=citizen
    )
    assert len(accepted) == 4
