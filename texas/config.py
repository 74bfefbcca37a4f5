"""Configuration: the environment (and NAIS secret files) read once, at the edge.

Everything else takes a `Config`; tests build one directly. A missing, unparsable or
contradictory setting raises ConfigError with one line naming the variable, and the CLI turns
that into exit code 2. Nothing falls back silently.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from texas.errors import ConfigError
from texas.tokens.assertion import SigningKey, parse_private_jwk

DEFAULT_SECRETS_DIR = Path("/var/run/secrets/nais.io")


@dataclass(frozen=True)
class ProviderSpec:
    """The NAIS variable names of one provider."""

    name: str
    enabled: str
    audience: str | None  # None: the audience is not checked (Maskinporten)
    well_known_url: str
    issuer: str
    jwks_uri: str
    grant: GrantSpec | None = None  # None: the provider issues no tokens to apps (ID-porten)

    @property
    def variables(self) -> tuple[str, ...]:
        names = (self.enabled, self.audience, self.well_known_url, self.issuer, self.jwks_uri)
        grant = (
            (self.grant.client_id, self.grant.private_jwk, self.grant.token_endpoint) if self.grant else ()
        )
        return tuple(dict.fromkeys(n for n in (*names, *grant) if n is not None))


@dataclass(frozen=True)
class GrantSpec:
    """The NAIS variable names a provider needs to hand out tokens (/api/v1/token*)."""

    client_id: str
    private_jwk: str
    token_endpoint: str


SPECS: tuple[ProviderSpec, ...] = (
    ProviderSpec(
        "idporten",
        "IDPORTEN_ENABLED",
        "IDPORTEN_AUDIENCE",
        "IDPORTEN_WELL_KNOWN_URL",
        "IDPORTEN_ISSUER",
        "IDPORTEN_JWKS_URI",
    ),
    ProviderSpec(
        "maskinporten",
        "MASKINPORTEN_ENABLED",
        None,
        "MASKINPORTEN_WELL_KNOWN_URL",
        "MASKINPORTEN_ISSUER",
        "MASKINPORTEN_JWKS_URI",
        GrantSpec("MASKINPORTEN_CLIENT_ID", "MASKINPORTEN_CLIENT_JWK", "MASKINPORTEN_TOKEN_ENDPOINT"),
    ),
    ProviderSpec(
        "azuread",
        "AZURE_ENABLED",
        "AZURE_APP_CLIENT_ID",
        "AZURE_APP_WELL_KNOWN_URL",
        "AZURE_OPENID_CONFIG_ISSUER",
        "AZURE_OPENID_CONFIG_JWKS_URI",
        GrantSpec("AZURE_APP_CLIENT_ID", "AZURE_APP_JWK", "AZURE_OPENID_CONFIG_TOKEN_ENDPOINT"),
    ),
    ProviderSpec(
        "tokenx",
        "TOKEN_X_ENABLED",
        "TOKEN_X_CLIENT_ID",
        "TOKEN_X_WELL_KNOWN_URL",
        "TOKEN_X_ISSUER",
        "TOKEN_X_JWKS_URI",
        GrantSpec("TOKEN_X_CLIENT_ID", "TOKEN_X_PRIVATE_JWK", "TOKEN_X_TOKEN_ENDPOINT"),
    ),
)
PROVIDER_NAMES: tuple[str, ...] = tuple(s.name for s in SPECS)
ALIASES: Mapping[str, str] = {"entra_id": "azuread"}


@dataclass(frozen=True)
class GrantConfig:
    """What a provider has of the settings for handing out tokens. A provider may be enabled
    without them (it still introspects); a token request then names the first one missing."""

    spec: GrantSpec
    client_id: str | None = None
    private_jwk: SigningKey | None = None  # its repr shows the kid only
    token_endpoint: str | None = None  # None: from the discovery document

    def missing(self, *, discovery: bool) -> str | None:
        """The variable a token request lacks, or None when it has all it needs."""
        if not self.client_id:
            return self.spec.client_id
        if self.private_jwk is None:
            return self.spec.private_jwk
        if not self.token_endpoint and not discovery:
            return self.spec.token_endpoint
        return None


@dataclass(frozen=True)
class ProviderConfig:
    """One enabled provider as configured; discovery may still have to fill issuer/jwks_uri."""

    name: str
    audience: str | None
    issuer: str | None = None
    jwks_uri: str | None = None
    well_known_url: str | None = None
    grant: GrantConfig | None = None

    def __post_init__(self) -> None:
        if not (self.well_known_url or (self.issuer and self.jwks_uri)):
            raise ValueError("a provider needs a well-known URL, or both issuer and JWKS URI")


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Config:
    providers: tuple[ProviderConfig, ...]
    bind_address: Address = field(default_factory=lambda: Address("127.0.0.1", 3000))
    probe_bind_address: Address | None = None
    leeway_seconds: float = 60
    jwks_refresh_seconds: float = 300
    jwks_min_refresh_seconds: float = 30
    jwks_fetch_timeout_seconds: float = 5
    jwks_max_stale_seconds: float = 86400
    token_cache_size: int = 10_000
    token_cache_bytes: int = 4 * 1024 * 1024
    token_timeout_seconds: float = 5
    grant_cache_size: int = 10_000
    grant_cache_bytes: int = 16 * 1024 * 1024
    log_level: str = "INFO"
    log_format: str = "json"
    access_log: bool = False
    # Plain http to any host for discovery and JWKS: only `texas dev`, whose identity provider
    # may listen on a LAN address, sets it; never an environment variable.
    insecure_http: bool = False

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], secrets_dir: Path | None = None, *, insecure_http: bool = False
    ) -> Config:
        """Read the configuration; `secrets_dir` defaults to TEXAS_SECRETS_DIR or NAIS's."""
        if secrets_dir is None:
            secrets_dir = Path(environ.get("TEXAS_SECRETS_DIR") or DEFAULT_SECRETS_DIR)
        providers = tuple(
            p
            for spec in SPECS
            if (p := _read_provider(spec, environ, secrets_dir, insecure_http)) is not None
        )
        if not providers:
            names = ", ".join(s.enabled for s in SPECS)
            raise ConfigError(f"no identity provider is enabled: set at least one of {names} to true")

        refresh = _seconds(environ, "TEXAS_JWKS_REFRESH_SECONDS", 300)
        min_refresh = _seconds(environ, "TEXAS_JWKS_MIN_REFRESH_SECONDS", 30)
        max_stale = _seconds(environ, "TEXAS_JWKS_MAX_STALE_SECONDS", 86400)
        if min_refresh > refresh:
            raise ConfigError(
                f"TEXAS_JWKS_MIN_REFRESH_SECONDS ({min_refresh:g}) must not exceed "
                f"TEXAS_JWKS_REFRESH_SECONDS ({refresh:g})"
            )
        if max_stale < refresh:
            raise ConfigError(
                f"TEXAS_JWKS_MAX_STALE_SECONDS ({max_stale:g}) must not be below "
                f"TEXAS_JWKS_REFRESH_SECONDS ({refresh:g}), or keys would lapse between refreshes"
            )
        log_format = environ.get("LOG_FORMAT", "json").strip().lower() or "json"
        if log_format not in ("json", "text"):
            raise ConfigError(f"LOG_FORMAT must be json or text, not {log_format!r}")
        log_level = environ.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, not {log_level!r}")
        access_log = environ.get("TEXAS_ACCESS_LOG", "false").strip().lower() or "false"
        if access_log not in ("true", "false"):
            raise ConfigError(f"TEXAS_ACCESS_LOG must be true or false, not {access_log!r}")
        probe = environ.get("PROBE_BIND_ADDRESS", "").strip()
        return cls(
            providers=providers,
            bind_address=_address(environ, "BIND_ADDRESS", "127.0.0.1:3000"),
            probe_bind_address=_address(environ, "PROBE_BIND_ADDRESS", probe) if probe else None,
            leeway_seconds=_seconds(environ, "TEXAS_LEEWAY_SECONDS", 60),
            jwks_refresh_seconds=refresh,
            jwks_min_refresh_seconds=min_refresh,
            jwks_fetch_timeout_seconds=_seconds(environ, "TEXAS_JWKS_FETCH_TIMEOUT_SECONDS", 5),
            jwks_max_stale_seconds=max_stale,
            token_cache_size=_count(environ, "TEXAS_TOKEN_CACHE_SIZE", 10_000),
            token_cache_bytes=_count(environ, "TEXAS_TOKEN_CACHE_BYTES", 4 * 1024 * 1024),
            token_timeout_seconds=_seconds(environ, "TEXAS_TOKEN_TIMEOUT_SECONDS", 5),
            grant_cache_size=_count(environ, "TEXAS_GRANT_CACHE_SIZE", 10_000),
            grant_cache_bytes=_count(environ, "TEXAS_GRANT_CACHE_BYTES", 16 * 1024 * 1024),
            log_level=log_level,
            log_format=log_format,
            access_log=access_log == "true",
            insecure_http=insecure_http,
        )

    def provider(self, name: str) -> ProviderConfig | None:
        return next((p for p in self.providers if p.name == name), None)


def _read_provider(
    spec: ProviderSpec, environ: Mapping[str, str], secrets_dir: Path, insecure_http: bool
) -> ProviderConfig | None:
    values = {name: _value(name, environ, secrets_dir / spec.name) for name in spec.variables}
    enabled = (values[spec.enabled] or "false").lower()
    if enabled not in ("true", "false"):
        raise ConfigError(f"{spec.enabled} must be true or false, not {values[spec.enabled]!r}")
    if enabled == "false":
        return None

    for name in (spec.well_known_url, spec.jwks_uri):
        if values[name]:
            _check_url(name, values[name], insecure_http)  # type: ignore[arg-type]
    issuer, jwks_uri, well_known = values[spec.issuer], values[spec.jwks_uri], values[spec.well_known_url]
    if not well_known and not (issuer and jwks_uri):
        missing = spec.issuer if not issuer else spec.jwks_uri
        if not issuer and not jwks_uri:
            raise ConfigError(
                f"{spec.enabled}=true needs {spec.well_known_url}, or both {spec.issuer} and {spec.jwks_uri}"
            )
        raise ConfigError(f"{spec.enabled}=true needs {missing} (or {spec.well_known_url})")
    audience = None
    if spec.audience is not None:
        audience = values[spec.audience]
        if not audience:
            raise ConfigError(f"{spec.enabled}=true needs {spec.audience}, the audience tokens must carry")
    return ProviderConfig(
        name=spec.name,
        audience=audience,
        issuer=issuer,
        jwks_uri=jwks_uri,
        well_known_url=well_known,
        grant=_read_grant(spec.grant, values, insecure_http) if spec.grant is not None else None,
    )


def _read_grant(spec: GrantSpec, values: Mapping[str, str | None], insecure_http: bool) -> GrantConfig:
    """Client id, private key and token endpoint; each may be missing, but a private key that is
    given must be one texas can sign with, so a bad one stops start-up."""
    raw_key, endpoint = values[spec.private_jwk], values[spec.token_endpoint]
    if endpoint:
        _check_url(spec.token_endpoint, endpoint, insecure_http)
    return GrantConfig(
        spec=spec,
        client_id=values[spec.client_id],
        private_jwk=parse_private_jwk(spec.private_jwk, raw_key) if raw_key else None,
        token_endpoint=endpoint,
    )


def _value(name: str, environ: Mapping[str, str], folder: Path) -> str | None:
    """A variable from the environment or its NAIS secret file; both set and different is an
    error, since either could be the stale one."""
    from_env = environ.get(name)
    from_env = from_env.strip() if from_env is not None else None
    path = folder / name
    from_file = None
    try:
        from_file = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{name}: cannot read {path}: {type(e).__name__}") from None
    if from_env and from_file is not None and from_file != from_env:
        raise ConfigError(f"{name} is set in the environment and in {path}, with different values")
    return from_env or from_file or None


def transport_ok(url: str, *, insecure_http: bool = False) -> bool:
    """https, or plain http to this machine (loopback: tests and `texas dev`), or plain http
    anywhere under `insecure_http`. Keys fetched over plain http could be anybody's."""
    parts = urlsplit(url)
    if not parts.hostname or parts.scheme not in ("http", "https"):
        return False
    return parts.scheme == "https" or insecure_http or _loopback(parts.hostname)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(name: str, value: str, insecure_http: bool = False) -> None:
    if not transport_ok(value, insecure_http=insecure_http):
        raise ConfigError(
            f"{name} must be an https URL (plain http only to a loopback address), not {value!r}"
        )


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number of seconds, not {raw!r}")
    return value


def _count(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, not {raw!r}")
    return value


def _address(environ: Mapping[str, str], name: str, default: str) -> Address:
    raw = environ.get(name, "").strip() or default
    host, sep, port = raw.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name} must be host:port, not {raw!r}")
    return Address(host, int(port))
