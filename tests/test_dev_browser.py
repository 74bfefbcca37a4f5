"""The dev page (texas/devidp/static/) driven in headless Chromium against the real service.

Chromium is driven over the DevTools protocol (its `--remote-debugging-port` websocket) with
aiohttp's client, so no Python dependency is added. The test types into the page and clicks as
a person would, then reads what the page shows.

Skipped when Debian's `chromium` is not installed, except under CI (CI set), where it must run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from joserfc.jwk import import_key
from pytest_aiohttp import AiohttpServer

from tests import oauth_client
from texas.app import create_app
from texas.config import Config
from texas.devidp.clients import VARIABLES
from texas.devidp.http import create_devidp_app
from texas.devidp.issuer import AUDIENCES, DevIdentityProvider, dev_environment

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None and not os.environ.get("CI"),
        reason="chromium is not installed (apt-get install chromium)",
    ),
]

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--no-proxy-server",
    "--mute-audio",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
START_TIMEOUT = 30.0
STEP_TIMEOUT = 15.0


class Page:
    """A minimal DevTools client for one tab: call methods, evaluate, wait for a condition."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.errors: list[str] = []  # uncaught exceptions and console/log errors
        self._next_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        call_id = self._next_id
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=STEP_TIMEOUT)
            if msg.get("id") == call_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})  # type: ignore[no-any-return]
            self._note(msg)

    def _note(self, msg: dict[str, Any]) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            self.errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(f"{params['entry']['text']} {params['entry'].get('url', '')}".strip())
        elif method == "Runtime.consoleAPICalled" and params["type"] == "error":
            self.errors.append(json.dumps(params["args"]))

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = STEP_TIMEOUT) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {expression}")
            await asyncio.sleep(0.05)

    async def text(self, element_id: str) -> str:
        return str(await self.evaluate(f"document.getElementById({element_id!r}).textContent"))

    async def fill(self, element_id: str, value: str) -> None:
        # Set the value and fire the events a person's typing would.
        await self.evaluate(
            f"(() => {{ const el = document.getElementById({element_id!r});"
            f" el.focus(); el.value = {json.dumps(value)};"
            " el.dispatchEvent(new Event('input', {bubbles: true}));"
            " el.dispatchEvent(new Event('change', {bubbles: true})); })()"
        )

    async def click(self, selector: str) -> None:
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[str]:
    """Headless Chromium with a fresh profile; yields its DevTools HTTP address."""
    assert CHROMIUM is not None, "CI is set but chromium is not installed"
    log = (profile.parent / "chromium.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *FLAGS,
        f"--user-data-dir={profile}",
        "about:blank",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if proc.returncode is not None or loop.time() > deadline:
                raise AssertionError(
                    f"chromium did not start: {(profile.parent / 'chromium.log').read_text()}"
                )
            await asyncio.sleep(0.1)
        yield f"http://127.0.0.1:{int(port_file.read_text().splitlines()[0])}"
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


@contextlib.asynccontextmanager
async def open_page(devtools: str) -> AsyncIterator[Page]:
    """The tab Chromium opened, over its DevTools websocket."""
    async with aiohttp.ClientSession(trust_env=False) as session:
        async with session.get(f"{devtools}/json/list") as resp:
            targets = await resp.json()
        target = next(t for t in targets if t["type"] == "page")
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page = Page(ws)
            for domain in ("Page", "Runtime", "Log"):
                await page.call(f"{domain}.enable")
            yield page


async def test_page_mints_a_token_and_shows_it_active(aiohttp_server: AiohttpServer, tmp_path: Path) -> None:
    # The dev IdP that the service fetches keys from, then the service, then the page with
    # introspection forwarded to that service (the same IdP object: one key set).
    idp = DevIdentityProvider("http://placeholder.invalid")
    keys_server = await aiohttp_server(create_devidp_app(idp))
    idp.base_url = str(keys_server.make_url("")).rstrip("/")
    config = Config.from_env(
        {**dev_environment(idp.base_url), "TEXAS_JWKS_MIN_REFRESH_SECONDS": "0.01"},
        secrets_dir=tmp_path,
    )
    service = await aiohttp_server(create_app(config, dev=True))
    page_server = await aiohttp_server(create_devidp_app(idp, str(service.make_url(""))))

    async with chromium(tmp_path / "profile") as devtools, open_page(devtools) as page:
        await page.call("Page.navigate", url=str(page_server.make_url("/")))
        await page.wait_for("document.body && document.body.dataset.ready === 'true'")
        assert "DEVELOPMENT MODE — not for production" in await page.evaluate(
            "document.querySelector('.banner').innerText"
        )

        # ID-porten with the pid and level from the example.
        await page.click('input[name="provider"][value="idporten"]')
        await page.fill("pid", "12345678901")
        await page.fill("level", "idporten-loa-substantial")
        await page.click("#mint")
        await page.wait_for(
            "document.getElementById('introspection').textContent.includes('\"active\": true')"
        )
        claims = json.loads(await page.text("claims"))
        assert claims["pid"] == "12345678901"
        assert claims["acr"] == "idporten-loa-substantial"
        header = json.loads(await page.text("header"))
        assert header["kid"] == idp.current_kid
        assert await page.text("verdict") == "active"
        assert (await page.evaluate("document.getElementById('token').value")).count(".") == 2

        # Rotate from the page, then mint for every provider: all active, signed by the new kid.
        old_kid = idp.current_kid
        await page.click("#rotate")
        await page.wait_for("document.getElementById('rotate-status').textContent.includes('keys published')")
        assert idp.current_kid != old_kid
        assert await page.text("kid") == idp.current_kid
        for provider in ("idporten", "maskinporten", "azuread", "tokenx"):
            await page.evaluate("document.getElementById('introspection').textContent = ''")
            await page.click(f'input[name="provider"][value="{provider}"]')
            await page.click("#mint")
            shown = await page.wait_for(
                "(() => { const t = document.getElementById('introspection').textContent;"
                " return t.startsWith('{') && t; })()"
            )
            answer = json.loads(shown)
            assert answer["active"] is True, (provider, answer)
            assert json.loads(await page.text("header"))["kid"] == idp.current_kid

        # A bad extra-claims entry is reported on the page, not sent.
        await page.fill("extra-claims", "{not json")
        await page.click("#mint")
        assert "not valid JSON" in await page.wait_for("document.getElementById('form-error').textContent")

    assert page.errors == [], page.errors


# The machine token and token exchange panels. The page calls the dev IdP's /api/token and
# /api/token/exchange, which forward to the service's /api/v1/token and /api/v1/token/exchange.


def stand_in_service(
    idp: DevIdentityProvider, env: dict[str, str], seen: list[dict[str, Any]], texas: str
) -> web.Application:
    """Answers the two token endpoints as the contract says, by calling the dev IdP's token
    endpoints with assertions built from `env`'s private JWKs: the page's path end to end,
    before the service side has the endpoints. Introspection goes to the real `texas`."""

    async def token(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        provider = body["identity_provider"]
        id_variable, jwk_variable = VARIABLES[provider]
        form = oauth_client.token_form(
            provider,
            import_key(json.loads(env[jwk_variable])),
            env[id_variable],
            idp.issuer(provider),
            body["target"],
            user_token=body.get("user_token"),
            resource=body.get("resource"),
        )
        url = idp.discovery(provider)["token_endpoint"]
        async with aiohttp.ClientSession() as session, session.post(url, data=form) as resp:
            return web.json_response(await resp.json(), status=resp.status)

    async def introspect(request: web.Request) -> web.Response:
        body, headers = await request.read(), {"Content-Type": request.content_type}
        async with (
            aiohttp.ClientSession() as session,
            session.post(texas, data=body, headers=headers) as resp,
        ):
            return web.json_response(await resp.json(), status=resp.status)

    app = web.Application()
    app.router.add_post("/api/v1/token", token)
    app.router.add_post("/api/v1/token/exchange", token)
    app.router.add_post("/api/v1/introspect", introspect)
    return app


# Chromium logs a failed fetch; drive_grant_panels makes exactly one on purpose.
REFUSED = "Failed to load resource: the server responded with a status of 400 (Bad Request)"


async def drive_grant_panels(page: Page) -> None:
    """Mint user tokens, get machine tokens, exchange: what a person does on the page."""
    await page.wait_for("document.body && document.body.dataset.ready === 'true'")
    claims_of = (
        "(() => {{ const t = document.getElementById('{0}-claims').textContent;"
        " return t.startsWith('{{') && t; }})()"
    )

    async def grant(prefix: str) -> dict[str, Any]:
        await page.evaluate(f"document.getElementById('{prefix}-claims').textContent = ''")
        await page.click(f"#{prefix}-get")
        return json.loads(await page.wait_for(claims_of.format(prefix)))  # type: ignore[no-any-return]

    # No user token minted yet: the exchange says what to do and cannot be sent.
    assert await page.evaluate("document.getElementById('exchange-get').disabled") is True
    assert "Mint an ID-porten or TokenX token" in await page.text("exchange-user-note")

    # Machine tokens: Maskinporten with the default scope, then Entra ID with its scope.
    claims = await grant("machine")
    assert claims["scope"] == "nav:test/api"
    assert claims["iss"].endswith("/maskinporten")
    assert "token, expires in" in await page.text("machine-verdict")
    answer = json.loads(await page.text("machine-answer"))
    assert answer["token_type"] == "Bearer"
    await page.click('input[name="machine-provider"][value="azuread"]')
    assert await page.evaluate("document.getElementById('machine-target').value") == (
        "api://dev-gcp.team.app/.default"
    )
    claims = await grant("machine")
    assert claims["aud"] == "dev-gcp:team:app"
    assert claims["idtyp"] == "app"

    # A refusal is shown as the service answered it.
    await page.fill("machine-target", "not a scope")
    await page.click("#machine-get")
    assert "invalid_scope" in await page.wait_for(
        "document.getElementById('machine-verdict').textContent.includes('400') &&"
        " document.getElementById('machine-verdict').textContent"
    )

    # Mint a citizen's token above, then exchange it for one to call dev-gcp:team:app.
    await page.click('input[name="provider"][value="idporten"]')
    await page.fill("pid", "12345678901")
    await page.click("#mint")
    await page.wait_for("!document.getElementById('exchange-get').disabled")
    await page.wait_for("document.getElementById('verdict').textContent === 'active'")
    assert "idporten · 12345678901" in await page.evaluate(
        "document.getElementById('exchange-user-token').selectedOptions[0].textContent"
    )
    await page.fill("exchange-target", "dev-gcp:team:app")
    claims = await grant("exchange")
    assert claims["aud"] == "dev-gcp:team:app"
    assert claims["pid"] == "12345678901"
    assert claims["iss"].endswith("/tokenx")

    # Entra ID on-behalf-of needs an Entra ID token: mint one, then exchange it.
    await page.click('input[name="exchange-provider"][value="azuread"]')
    assert await page.evaluate("document.getElementById('exchange-get').disabled") is True
    await page.click('input[name="provider"][value="azuread"]')
    await page.fill("audience", AUDIENCES["azuread"])
    await page.click("#mint")
    await page.wait_for("!document.getElementById('exchange-get').disabled")
    claims = await grant("exchange")
    assert claims["aud"] == "dev-gcp:team:app"
    assert claims["NAVident"]
    assert claims["azp"] == AUDIENCES["azuread"]


async def test_page_gets_machine_tokens_and_exchanges_through_the_forwarded_calls(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    idp = DevIdentityProvider("http://placeholder.invalid")
    idp_server = await aiohttp_server(create_devidp_app(idp))
    idp.base_url = str(idp_server.make_url("")).rstrip("/")
    env = dev_environment(idp.base_url, idp.clients)
    texas = await aiohttp_server(create_app(Config.from_env(env, secrets_dir=tmp_path), dev=True))
    seen: list[dict[str, Any]] = []
    service = await aiohttp_server(
        stand_in_service(idp, env, seen, str(texas.make_url("/api/v1/introspect")))
    )
    page_server = await aiohttp_server(create_devidp_app(idp, str(service.make_url(""))))

    async with chromium(tmp_path / "profile") as devtools, open_page(devtools) as page:
        await page.call("Page.navigate", url=str(page_server.make_url("/")))
        await drive_grant_panels(page)

        # skip_cache goes to the service when ticked, and only then.
        await page.click("#exchange-skip-cache")
        await page.evaluate("document.getElementById('exchange-claims').textContent = ''")
        await page.click("#exchange-get")
        await page.wait_for("document.getElementById('exchange-claims').textContent.startsWith('{')")
    assert seen[-1]["skip_cache"] is True
    assert [b["identity_provider"] for b in seen[:5]] == [
        "maskinporten",
        "azuread",
        "azuread",
        "tokenx",
        "azuread",
    ]
    assert all("skip_cache" not in b for b in seen[:5])
    assert page.errors == [f"{REFUSED} {page_server.make_url('/api/token')}"], page.errors


async def test_page_grant_panels_against_the_real_service(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    idp = DevIdentityProvider("http://placeholder.invalid")
    idp_server = await aiohttp_server(create_devidp_app(idp))
    idp.base_url = str(idp_server.make_url("")).rstrip("/")
    config = Config.from_env(
        {**dev_environment(idp.base_url, idp.clients), "TEXAS_JWKS_MIN_REFRESH_SECONDS": "0.01"},
        secrets_dir=tmp_path,
    )
    service = await aiohttp_server(create_app(config, dev=True))
    async with (
        aiohttp.ClientSession() as session,
        session.post(service.make_url("/api/v1/token"), json={}) as resp,
    ):
        if resp.status == 404:
            pytest.skip("this texas has no POST /api/v1/token yet (the service side of issue 11)")
    page_server = await aiohttp_server(create_devidp_app(idp, str(service.make_url(""))))

    async with chromium(tmp_path / "profile") as devtools, open_page(devtools) as page:
        await page.call("Page.navigate", url=str(page_server.make_url("/")))
        await drive_grant_panels(page)
    assert page.errors == [f"{REFUSED} {page_server.make_url('/api/token')}"], page.errors
