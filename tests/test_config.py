"""Configuration: the NAIS variables, secret files, and one-line errors naming the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from texas.config import Address, Config
from texas.errors import ConfigError

BASE = {
    "IDPORTEN_ENABLED": "true",
    "IDPORTEN_AUDIENCE": "aud",
    "IDPORTEN_WELL_KNOWN_URL": "https://idporten.example/.well-known/openid-configuration",
}


def load(tmp_path: Path, **env: str) -> Config:
    return Config.from_env({**BASE, **env}, secrets_dir=tmp_path)


def error(tmp_path: Path, env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        Config.from_env(env, secrets_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults(tmp_path: Path) -> None:
    config = load(tmp_path)
    assert config.bind_address == Address("127.0.0.1", 3000)
    assert config.probe_bind_address is None
    assert (
        config.leeway_seconds,
        config.jwks_refresh_seconds,
        config.jwks_min_refresh_seconds,
        config.jwks_fetch_timeout_seconds,
        config.jwks_max_stale_seconds,
    ) == (60, 300, 30, 5, 86400)
    (provider,) = config.providers
    assert provider.name == "idporten" and provider.audience == "aud" and provider.issuer is None


def test_all_four_providers_by_their_nais_names(tmp_path: Path) -> None:
    config = Config.from_env(
        {
            **BASE,
            "MASKINPORTEN_ENABLED": "true",
            "MASKINPORTEN_ISSUER": "https://m.example",
            "MASKINPORTEN_JWKS_URI": "https://m.example/jwks",
            "AZURE_ENABLED": "true",
            "AZURE_APP_CLIENT_ID": "client",
            "AZURE_APP_WELL_KNOWN_URL": "https://login.example/v2.0/.well-known/openid-configuration",
            "TOKEN_X_ENABLED": "true",
            "TOKEN_X_CLIENT_ID": "c",
            "TOKEN_X_ISSUER": "https://t.example",
            "TOKEN_X_JWKS_URI": "https://t.example/jwks",
        },
        secrets_dir=tmp_path,
    )
    assert [p.name for p in config.providers] == ["idporten", "maskinporten", "azuread", "tokenx"]
    assert config.provider("maskinporten").audience is None  # type: ignore[union-attr]


def test_values_from_secret_files(tmp_path: Path) -> None:
    folder = tmp_path / "tokenx"
    folder.mkdir()
    for name, value in {
        "TOKEN_X_ENABLED": "true",
        "TOKEN_X_CLIENT_ID": "cid\n",
        "TOKEN_X_WELL_KNOWN_URL": "https://t.example/.well-known/openid-configuration",
    }.items():
        (folder / name).write_text(value)
    config = Config.from_env({}, secrets_dir=tmp_path)
    assert config.provider("tokenx").audience == "cid"  # type: ignore[union-attr]


def test_texas_secrets_dir_overrides_the_folder(tmp_path: Path) -> None:
    (tmp_path / "idporten").mkdir()
    (tmp_path / "idporten" / "IDPORTEN_AUDIENCE").write_text("from-file")
    env = {k: v for k, v in BASE.items() if k != "IDPORTEN_AUDIENCE"}
    config = Config.from_env({**env, "TEXAS_SECRETS_DIR": str(tmp_path)})
    assert config.providers[0].audience == "from-file"


def test_environment_and_file_that_disagree_stop_start_up(tmp_path: Path) -> None:
    (tmp_path / "idporten").mkdir()
    (tmp_path / "idporten" / "IDPORTEN_AUDIENCE").write_text("other")
    assert "IDPORTEN_AUDIENCE" in error(tmp_path, BASE)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, ["IDPORTEN_ENABLED", "TOKEN_X_ENABLED"]),
        ({"IDPORTEN_ENABLED": "yes"}, ["IDPORTEN_ENABLED"]),
        (
            {"IDPORTEN_ENABLED": "true", "IDPORTEN_AUDIENCE": "a"},
            ["IDPORTEN_WELL_KNOWN_URL", "IDPORTEN_ISSUER"],
        ),
        (
            {"IDPORTEN_ENABLED": "true", "IDPORTEN_AUDIENCE": "a", "IDPORTEN_ISSUER": "https://i"},
            ["IDPORTEN_JWKS_URI"],
        ),
        ({"IDPORTEN_ENABLED": "true", "IDPORTEN_WELL_KNOWN_URL": "https://i/x"}, ["IDPORTEN_AUDIENCE"]),
        ({"AZURE_ENABLED": "true", "AZURE_APP_WELL_KNOWN_URL": "https://i/x"}, ["AZURE_APP_CLIENT_ID"]),
        ({**BASE, "IDPORTEN_WELL_KNOWN_URL": "ftp://x"}, ["IDPORTEN_WELL_KNOWN_URL"]),
        ({**BASE, "IDPORTEN_JWKS_URI": "not a url"}, ["IDPORTEN_JWKS_URI"]),
        ({**BASE, "TEXAS_LEEWAY_SECONDS": "abc"}, ["TEXAS_LEEWAY_SECONDS"]),
        ({**BASE, "TEXAS_LEEWAY_SECONDS": "-5"}, ["TEXAS_LEEWAY_SECONDS"]),
        ({**BASE, "TEXAS_JWKS_REFRESH_SECONDS": "0"}, ["TEXAS_JWKS_REFRESH_SECONDS"]),
        ({**BASE, "TEXAS_JWKS_FETCH_TIMEOUT_SECONDS": "nan"}, ["TEXAS_JWKS_FETCH_TIMEOUT_SECONDS"]),
        (
            {**BASE, "TEXAS_JWKS_MIN_REFRESH_SECONDS": "600"},
            ["TEXAS_JWKS_MIN_REFRESH_SECONDS", "TEXAS_JWKS_REFRESH_SECONDS"],
        ),
        ({**BASE, "TEXAS_JWKS_MAX_STALE_SECONDS": "10"}, ["TEXAS_JWKS_MAX_STALE_SECONDS"]),
        ({**BASE, "BIND_ADDRESS": "3000"}, ["BIND_ADDRESS"]),
        ({**BASE, "PROBE_BIND_ADDRESS": "localhost:99999"}, ["PROBE_BIND_ADDRESS"]),
        ({**BASE, "LOG_LEVEL": "chatty"}, ["LOG_LEVEL"]),
    ],
    ids=[
        "nothing-enabled",
        "enabled-not-boolean",
        "no-discovery-or-explicit",
        "issuer-without-jwks",
        "no-audience",
        "azure-no-client-id",
        "bad-url-scheme",
        "jwks-not-url",
        "leeway-not-number",
        "leeway-negative",
        "refresh-zero",
        "timeout-nan",
        "min-refresh-above-refresh",
        "max-stale-below-refresh",
        "bind-no-host",
        "probe-port-range",
        "log-level",
    ],
)
def test_bad_configuration_names_the_variable(tmp_path: Path, env: dict[str, str], names: list[str]) -> None:
    message = error(tmp_path, env)
    for name in names:
        assert name in message


def test_ipv6_bind_address(tmp_path: Path) -> None:
    assert load(tmp_path, BIND_ADDRESS="[::1]:8080").bind_address == Address("::1", 8080)


def test_maskinporten_needs_no_audience(tmp_path: Path) -> None:
    config = Config.from_env(
        {"MASKINPORTEN_ENABLED": "true", "MASKINPORTEN_WELL_KNOWN_URL": "https://m/x"}, secrets_dir=tmp_path
    )
    assert config.providers[0].audience is None


def test_serve_with_bad_configuration_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {
        "PATH": "",
        "TEXAS_SECRETS_DIR": str(tmp_path),
        "IDPORTEN_ENABLED": "true",
        "IDPORTEN_AUDIENCE": "a",
    }
    result = subprocess.run(
        [sys.executable, "-m", "texas", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "IDPORTEN_WELL_KNOWN_URL" in lines[0]
