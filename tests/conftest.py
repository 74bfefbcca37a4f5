"""Shared fixtures: a real local issuer, signing keys, and texas itself on a real socket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.support import PROVIDERS, FakeIssuer, claims_for, environment, make_key, public_jwk, sign
from texas.app import create_app
from texas.config import Config
from texas.runner import SERVER_OPTIONS

ALGS = ("RS256", "PS256", "ES256", "EdDSA")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client session for tests that drive key sets and providers directly."""
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def issuer(aiohttp_server: Any) -> FakeIssuer:
    """A fake issuer for all four providers, each publishing an RS256 key `key-1`."""
    fake = FakeIssuer()
    server = await aiohttp_server(fake.app)
    fake.base_url = str(server.make_url("")).rstrip("/")
    for p in PROVIDERS:
        fake.publish(p, public_jwk(make_key("RS256", "key-1"), "key-1"))
    return fake


TexasFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def make_texas(issuer: FakeIssuer, aiohttp_server: Any, aiohttp_client: Any) -> TexasFactory:
    """Start texas against the fake issuer; keyword arguments are extra environment."""

    async def start(
        providers: tuple[str, ...] = PROVIDERS, *, discovery: bool = False, dev: bool = False, **env: str
    ) -> TestClient:
        config = Config.from_env(environment(issuer, providers, discovery=discovery, **env))
        # the same server options as production's runner (aiohttp's TestServer would drop
        # them if given to its constructor; start_server passes them on)
        server = await aiohttp_server(create_app(config, dev=dev), **SERVER_OPTIONS)
        return await aiohttp_client(server)

    return start


@pytest.fixture
async def texas(make_texas: TexasFactory) -> TestClient:
    return await make_texas()


@pytest.fixture
def token(issuer: FakeIssuer) -> Callable[..., str]:
    """token(provider, **claim_overrides) signed with that provider's RS256 `key-1`."""

    def make(
        provider: str = "idporten",
        *,
        alg: str = "RS256",
        kid: str = "key-1",
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        return sign(
            claims_for(provider, issuer.issuer(provider), **claims),
            make_key(alg, kid),
            alg=alg,
            kid=kid,
            header=header,
        )

    return make


async def introspect(
    client: TestClient, token: str | None = None, provider: str | None = "idporten", **fields: Any
) -> dict[str, Any]:
    body: dict[str, Any] = dict(fields)
    if token is not None:
        body["token"] = token
    if provider is not None:
        body["identity_provider"] = provider
    response = await client.post("/api/v1/introspect", json=body)
    assert response.status == 200
    assert response.content_type == "application/json"
    return await response.json()  # type: ignore[no-any-return]
