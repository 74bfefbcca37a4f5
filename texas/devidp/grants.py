"""The token endpoints of the dev providers: the four grants texas makes for apps.

Each provider's discovery document names `{issuer}/token`; a form POST there is answered here,
the way the real provider answers it (RFC 6749 §5 answers and §5.2 errors):

    maskinporten  JWT-bearer grant (RFC 7523 §2.1): the assertion, signed by the client key,
                  carries iss = client id, aud, scope, and optionally resource (RFC 8707) and
                  authorization_details (RFC 9396)
    azuread       client_credentials, and on-behalf-of (the JWT-bearer grant with
                  requested_token_use=on_behalf_of and the user's token as `assertion`)
    tokenx        token exchange (RFC 8693) of a user's token for one meant for `audience`
    idporten      no grants (its users log in through a browser)

Entra ID and TokenX authenticate the client by `private_key_jwt` (RFC 7523 §2.2). Every
assertion is checked by assertions.py against the dev app's registered key (clients.py).

A token handed in for exchange (TokenX `subject_token`, on-behalf-of `assertion`) must be one
this dev IdP signed and that has not expired; the new token carries the user's claims.

Entra ID names the target app by scope, `<resource>/.default`, and puts the target's client id
in `aud`. The dev IdP knows one app's client id, its own (`local:texas:app`); it stands in for
any other app's client id with its `cluster:namespace:app` name (see `entra_audience`).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from texas.devidp.assertions import (
    AssertionRules,
    OAuthError,
    ReplayGuard,
    invalid_client,
    verify_assertion,
)
from texas.devidp.clients import AZURE_CLIENT_ID, DEV_APP, DevClient
from texas.devidp.issuer import DevIdentityProvider
from texas.devidp.keys import DevIdpError

log = logging.getLogger(__name__)

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"

# Lifetimes of the real providers' tokens: Maskinporten 120 s, Entra ID about an hour, TokenX 5 min.
LIFETIMES: Mapping[str, int] = {"maskinporten": 120, "azuread": 3600, "tokenx": 300}

# What a TokenX exchange carries over from the user's token; the rest is the new token's own.
EXCHANGED_CLAIMS = (
    "sub",
    "pid",
    "acr",
    "amr",
    "sid",
    "auth_time",
    "locale",
    "oid",
    "NAVident",
    "name",
    "preferred_username",
    "groups",
)
# What on-behalf-of carries over from the user's Entra ID token.
OBO_CLAIMS = ("oid", "sub", "tid", "NAVident", "name", "preferred_username", "groups", "scp")
# An Entra ID app token is about the app, never a person.
_PERSON_CLAIMS = ("NAVident", "name", "preferred_username", "groups", "scp")

# Kubernetes names: lower-case letters, digits and '-'.
_NAME = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
NAIS_APP = re.compile(rf"({_NAME}):({_NAME}):({_NAME})")
_ENTRA_APP = re.compile(rf"({_NAME})\.({_NAME})\.({_NAME})")
_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def entra_audience(scope: str) -> str:
    """The `aud` of an Entra ID token asked for with `scope`.

    The scope must be one `<resource>/.default` (Entra ID demands `.default` for client
    credentials; NAIS apps use it for on-behalf-of too). The resource is

    - `api://<client id>` or `<client id>` (a GUID): aud is that client id, as Entra ID sets it;
    - `api://<cluster>.<namespace>.<app>`, the NAIS form: aud is the app's client id, which the
      dev IdP knows only for its own app (`api://local.texas.app` -> AZURE_APP_CLIENT_ID); for
      any other app it stands in `<cluster>:<namespace>:<app>`.
    """
    parts = scope.split()
    if len(parts) != 1 or not parts[0].endswith("/.default"):
        raise OAuthError(
            "invalid_scope",
            "The scope must be one <resource>/.default, such as api://dev-gcp.team.app/.default.",
        )
    resource = parts[0].removesuffix("/.default").removeprefix("api://")
    if _GUID.fullmatch(resource):
        return resource.lower()
    if app := _ENTRA_APP.fullmatch(resource):
        name = ":".join(app.groups())
        return AZURE_CLIENT_ID if name == DEV_APP else name
    raise OAuthError(
        "invalid_scope",
        "The scope's resource must be api://<cluster>.<namespace>.<app> or an app's client id.",
    )


class TokenEndpoint:
    """Answers token requests for all four dev providers; one replay memory for all.

    `lifetimes` overrides LIFETIMES per provider, in whole seconds: a test that needs texas's
    refresh ahead (which starts in a token's last half when it lives 120 s or less) gives
    Maskinporten tokens a few seconds instead of waiting a minute.
    """

    def __init__(
        self,
        idp: DevIdentityProvider,
        *,
        clock: Callable[[], float] = time.time,
        lifetimes: Mapping[str, int] | None = None,
    ) -> None:
        self._idp = idp
        self._clock = clock
        self.replay = ReplayGuard()
        self.lifetimes = {**LIFETIMES, **(lifetimes or {})}
        if self.lifetimes.keys() != LIFETIMES.keys() or not all(
            type(seconds) is int and seconds > 0 for seconds in self.lifetimes.values()
        ):
            raise DevIdpError(f"Token lifetimes are whole seconds above 0 for {', '.join(LIFETIMES)}.")

    def answer(self, provider: str, params: Mapping[str, str]) -> dict[str, Any]:
        """The token answer for a request's form parameters; OAuthError when refused."""
        grant_type = _required(params, "grant_type")
        if provider == "maskinporten" and grant_type == JWT_BEARER:
            grant, answer = "JWT-bearer", self._maskinporten(params)
        elif provider == "azuread" and grant_type == "client_credentials":
            grant, answer = "client credentials", self._client_credentials(params)
        elif provider == "azuread" and grant_type == JWT_BEARER:
            grant, answer = "on-behalf-of", self._on_behalf_of(params)
        elif provider == "tokenx" and grant_type == TOKEN_EXCHANGE:
            grant, answer = "token exchange", self._token_exchange(params)
        else:
            raise OAuthError(
                "unsupported_grant_type", f"The {provider} token endpoint does not do this grant_type."
            )
        log.info("dev identity provider: %s token issued (%s)", provider, grant)
        return answer

    # grants

    def _maskinporten(self, params: Mapping[str, str]) -> dict[str, Any]:
        assertion = _required(params, "assertion")
        client = self._idp.clients["maskinporten"]
        rules = self._rules(client, require_sub=False, error="invalid_grant", noun="assertion")
        claims = verify_assertion(assertion, rules, self.replay, self._clock())
        scope = claims.get("scope")
        if not isinstance(scope, str) or not scope.split():
            raise OAuthError(
                "invalid_scope", "The assertion needs scope: the scopes asked for, space-separated."
            )
        scope = " ".join(scope.split())
        now, lifetime = int(self._clock()), self.lifetimes["maskinporten"]
        token = self._idp.default_claims("maskinporten", now, lifetime)
        token |= {"scope": scope, "client_id": client.client_id}
        if "resource" in claims:
            token["aud"] = _resource(claims["resource"])
        if "authorization_details" in claims:
            token["authorization_details"] = _authorization_details(claims["authorization_details"])
        access_token, _ = self._idp.sign(token)
        return {"access_token": access_token, "token_type": "Bearer", "expires_in": lifetime, "scope": scope}

    def _client_credentials(self, params: Mapping[str, str]) -> dict[str, Any]:
        _required(params, "client_id")
        scope = _required(params, "scope")
        client = self._authenticate("azuread", params)
        audience = entra_audience(scope)
        now, lifetime = int(self._clock()), self.lifetimes["azuread"]
        token = self._idp.default_claims("azuread", now, lifetime)
        for name in _PERSON_CLAIMS:
            token.pop(name, None)
        service_principal = str(uuid.uuid5(uuid.NAMESPACE_URL, f"texas-dev:sp:{client.client_id}"))
        token |= {
            "aud": audience,
            "azp": client.client_id,
            "azp_name": DEV_APP,
            "oid": service_principal,
            "sub": service_principal,
            "idtyp": "app",
        }
        access_token, _ = self._idp.sign(token)
        return _entra_answer(access_token, lifetime)

    def _on_behalf_of(self, params: Mapping[str, str]) -> dict[str, Any]:
        _required(params, "client_id")
        if _required(params, "requested_token_use") != "on_behalf_of":
            raise OAuthError("invalid_request", "requested_token_use must be on_behalf_of.")
        user_token = _required(params, "assertion")
        scope = _required(params, "scope")
        client = self._authenticate("azuread", params)
        audience = entra_audience(scope)
        user = self._subject(user_token, "assertion")
        if user.get("iss") != self._idp.issuer("azuread"):
            raise OAuthError("invalid_grant", "The assertion is not an Entra ID token.")
        if not _audience_has(user, client.client_id):
            raise OAuthError(
                "invalid_grant",
                "The assertion's aud is not this client: an app exchanges only tokens sent to it.",
            )
        if user.get("idtyp") == "app" or not user.get("oid"):
            raise OAuthError("invalid_grant", "The assertion is not a user's token.")
        now, lifetime = int(self._clock()), self.lifetimes["azuread"]
        token = self._idp.default_claims("azuread", now, lifetime)
        for name in (*_PERSON_CLAIMS, "roles"):
            token.pop(name, None)
        token |= {name: user[name] for name in OBO_CLAIMS if name in user}
        token |= {"aud": audience, "azp": client.client_id, "azp_name": DEV_APP}
        access_token, _ = self._idp.sign(token)
        return _entra_answer(access_token, lifetime) | {"scope": scope}

    def _token_exchange(self, params: Mapping[str, str]) -> dict[str, Any]:
        if _required(params, "subject_token_type") != JWT_TOKEN_TYPE:
            raise OAuthError("invalid_request", f"subject_token_type must be {JWT_TOKEN_TYPE}.")
        subject_token = _required(params, "subject_token")
        audience = _required(params, "audience")
        if not NAIS_APP.fullmatch(audience):
            raise OAuthError("invalid_request", "audience must name an app: <cluster>:<namespace>:<app>.")
        client = self._authenticate("tokenx", params)
        subject = self._subject(subject_token, "subject_token")
        from_tokenx = subject.get("iss") == self._idp.issuer("tokenx")
        if from_tokenx and not _audience_has(subject, client.client_id):
            raise OAuthError(
                "invalid_grant",
                "The subject_token's aud is not this client: an app exchanges only tokens sent to it.",
            )
        now, lifetime = int(self._clock()), self.lifetimes["tokenx"]
        token = {name: subject[name] for name in EXCHANGED_CLAIMS if name in subject}
        token |= {
            "iss": self._idp.issuer("tokenx"),
            "aud": audience,
            "client_id": client.client_id,
            "idp": subject.get("idp", subject["iss"]) if from_tokenx else subject["iss"],
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": str(uuid.uuid4()),
        }
        access_token, _ = self._idp.sign(token)
        return {
            "access_token": access_token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": lifetime,
        }

    # parts

    def _rules(self, client: DevClient, *, require_sub: bool, error: str, noun: str) -> AssertionRules:
        issuer = self._idp.issuer(client.provider)
        # The issuer, as the contract sends; real providers also take their token endpoint.
        audiences = (issuer, f"{issuer}/token")
        return AssertionRules(client.client_id, client.key, audiences, require_sub, error, noun)

    def _authenticate(self, provider: str, params: Mapping[str, str]) -> DevClient:
        """private_key_jwt (RFC 7523 §2.2): the client proves itself with a signed assertion."""
        client = self._idp.clients[provider]
        assertion_type = params.get("client_assertion_type")
        assertion = params.get("client_assertion")
        if not assertion_type and not assertion:
            raise invalid_client(
                "The client must authenticate with private_key_jwt (client_assertion_type, client_assertion)."
            )
        if assertion_type != CLIENT_ASSERTION_TYPE:
            raise invalid_client(f"client_assertion_type must be {CLIENT_ASSERTION_TYPE}.")
        if not assertion:
            raise invalid_client("The request has no client_assertion.")
        client_id = params.get("client_id")
        if client_id is not None and client_id != client.client_id:
            raise invalid_client("The client_id is not a client of this identity provider.")
        rules = self._rules(client, require_sub=True, error="invalid_client", noun="client assertion")
        verify_assertion(assertion, rules, self.replay, self._clock())
        return client

    def _subject(self, token: str, field: str) -> dict[str, Any]:
        try:
            return self._idp.verify_issued(token)
        except DevIdpError as e:
            raise OAuthError("invalid_grant", f"The {field} is refused: {e}") from None


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise OAuthError("invalid_request", f"The request needs {name}.")
    return value


def _audience_has(claims: Mapping[str, Any], audience: str) -> bool:
    aud = claims.get("aud")
    return aud == audience or (isinstance(aud, list) and audience in aud)


def _resource(value: Any) -> str | list[str]:
    """RFC 8707 resource(s) asked for in the assertion: the new token's aud."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise OAuthError("invalid_target", "The assertion's resource must be a URI or a list of URIs.")


def _authorization_details(value: Any) -> list[dict[str, Any]]:
    """RFC 9396: a non-empty array of objects, each with a string `type`."""
    if (
        isinstance(value, list)
        and value
        and all(isinstance(d, dict) and isinstance(d.get("type"), str) and d["type"] for d in value)
    ):
        return list(value)
    raise OAuthError(
        "invalid_authorization_details",
        "The assertion's authorization_details must be an array of objects, each with a type.",
    )


def _entra_answer(access_token: str, lifetime: int) -> dict[str, Any]:
    return {
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access_token,
    }
