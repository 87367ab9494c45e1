"""The configuration file: the generated default, and errors that name the offending key."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from flnet.issuer import (
    ConfigError,
    hash_secret,
    load_config,
    load_or_create_config,
    parse_config,
    verify_secret,
    write_default_config,
)
from tests.issuer.conftest import StartIssuer, config_data
from tests.issuer.helpers import client_credentials, user_tokens, verify
from tests.privacy import mode, umask


def test_the_issuer_makes_a_missing_data_dir_private(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    with umask(0):
        load_or_create_config(data)
    assert [mode(p) for p in (tmp_path / "new", data, data / "oidc")] == [0o700] * 3
    assert {mode(p) for p in (data / "oidc").iterdir()} == {0o600}


def test_the_default_config_is_documented_valid_and_private(tmp_path: Path) -> None:
    path = tmp_path / "oidc" / "issuer.yaml"
    creds = write_default_config(path)
    config = load_config(path)
    assert path.stat().st_mode & 0o777 == 0o600
    secrets_file = path.parent / "dev-credentials.json"
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    assert json.loads(secrets_file.read_text()) == creds.as_dict()
    assert creds.admin_password not in path.read_text()
    assert "# " in path.read_text()  # commented: the file documents itself

    admin = config.users["admin"]
    assert admin.roles == ("admin",) and admin.tenant == "default"
    assert verify_secret(creds.admin_password, admin.password_hash)
    cli = config.clients["flnet-cli"]
    assert cli.public
    assert cli.grant_types == {"authorization_code", "refresh_token"}
    assert cli.redirect_uris == ("http://127.0.0.1/callback",)
    assert cli.allows_redirect("http://127.0.0.1:53682/callback")
    control = config.clients["orchestrator"]
    assert not control.public
    assert control.grant_types == {"client_credentials"}
    assert control.scopes == {"orchestrator"}
    scripts = config.clients["scripts"]
    assert not scripts.public and scripts.grant_types == {"client_credentials"}
    assert scripts.scopes == {"runs:read", "runs:write", "tools:read", "artifacts:read"}
    assert scripts.secret_hash and verify_secret(creds.scripts_client_secret, scripts.secret_hash)
    assert control.tenant == "default"
    assert control.secret_hash is not None
    assert verify_secret(creds.orchestrator_client_secret, control.secret_hash)
    assert set(config.roles) == {"admin", "data-scientist", "auditor"}
    assert config.roles["auditor"] == {"runs:read", "tools:read", "artifacts:read", "audit:read"}
    assert "audit:read" in config.roles["admin"]


async def test_an_issuer_without_config_writes_and_serves_the_default(
    tmp_path: Path, start_issuer: StartIssuer, http: aiohttp.ClientSession
) -> None:
    data = tmp_path / "data"
    issuer = await start_issuer(load_or_create_config(data), data)
    creds = json.loads((data / "oidc" / "dev-credentials.json").read_text())
    res = await client_credentials(
        http, issuer, "orchestrator", creds["orchestrator_client_secret"]
    )
    claims = await verify(http, issuer, res.body["access_token"], audience="flnet-orchestrator")
    assert claims["scope"] == "orchestrator"
    body = await user_tokens(
        http, issuer, "admin", creds["admin_password"], redirect_uri="http://127.0.0.1:9/callback"
    )
    assert "admin" in body["scope"].split()
    # A second start keeps the file (and its secrets).
    assert load_or_create_config(data).users["admin"].password_hash == (
        issuer.config.users["admin"].password_hash
    )


Mutation = Callable[[dict[str, Any]], None]

BROKEN: dict[str, tuple[Mutation, str]] = {
    "unknown tenant": (lambda c: c["users"]["alice"].update(tenant="x"), "users.alice.tenant"),
    "unknown role": (lambda c: c["users"]["alice"].update(roles=["root"]), "users.alice.roles"),
    "plain password": (
        lambda c: c["users"]["alice"].update(password_hash="hunter2"),
        "users.alice.password_hash",
    ),
    "unknown scope": (lambda c: c["roles"]["auditor"].append("runs:rd"), "roles.auditor"),
    "unknown key": (lambda c: c["clients"]["web"].update(redirect_uri="x"), "clients.web"),
    "service without tenant": (
        lambda c: c["clients"]["reporter"].pop("tenant"),
        "clients.reporter.tenant",
    ),
    "public service": (
        lambda c: c["clients"]["reporter"].pop("secret_hash"),
        "clients.reporter",
    ),
    "code without redirect": (
        lambda c: c["clients"]["flnet-cli"].pop("redirect_uris"),
        "clients.flnet-cli.redirect_uris",
    ),
    "redirect with fragment": (
        lambda c: c["clients"]["web"].update(redirect_uris=["https://a.example/#x"]),
        "clients.web.redirect_uris",
    ),
    "unknown grant": (
        lambda c: c["clients"]["web"].update(grant_types=["implicit"]),
        "clients.web.grant_types",
    ),
    "no tenants": (lambda c: c.update(tenants=[]), "tenants"),
    "bad ttl": (lambda c: c.update(access_token_ttl=0), "access_token_ttl"),
    "bad alg": (lambda c: c.update(signing_alg="HS256"), "signing_alg"),
    "bad issuer": (lambda c: c.update(issuer="ftp://x"), "issuer"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_errors_name_the_offending_key(case: str, hashes: dict[str, str]) -> None:
    data = copy.deepcopy(config_data(hashes))
    mutate, where = BROKEN[case]
    mutate(data)
    with pytest.raises(ConfigError, match=re.escape(f"config.{where}")):
        parse_config(data)


def test_a_config_file_round_trips_through_yaml(tmp_path: Path, hashes: dict[str, str]) -> None:
    path = tmp_path / "issuer.yaml"
    path.write_text(yaml.safe_dump(config_data(hashes)))
    config = load_config(path)
    assert set(config.users) == {"admin", "alice", "audrey"}
    assert config.scopes_of_roles(["auditor", "nope"]) == {
        "runs:read",
        "tools:read",
        "artifacts:read",
    }
    with pytest.raises(ConfigError, match=re.escape("missing.yaml")):
        load_config(tmp_path / "missing.yaml")


def test_redirect_uri_matching(hashes: dict[str, str]) -> None:
    config = parse_config(config_data(hashes))
    cli, web = config.clients["flnet-cli"], config.clients["web"]
    assert cli.allows_redirect("http://127.0.0.1/callback")
    assert cli.allows_redirect("http://127.0.0.1:1234/callback")
    assert not cli.allows_redirect("http://127.0.0.1:1234/callback/")
    assert not cli.allows_redirect("http://127.0.0.1:1234/callback?x=1")
    assert not cli.allows_redirect("https://127.0.0.1:1234/callback")
    assert not cli.allows_redirect("http://127.0.0.2:1234/callback")
    assert not cli.allows_redirect("http://127.0.0.1:99999/callback")
    assert web.allows_redirect("https://app.example/cb?tab=1")
    assert not web.allows_redirect("https://app.example:443/cb?tab=1")


def test_secret_hashes() -> None:
    hashed = hash_secret("correct horse")
    assert hashed.startswith("scrypt$")
    assert hashed != hash_secret("correct horse")  # salted
    assert verify_secret("correct horse", hashed)
    assert not verify_secret("correct horse!", hashed)
    assert not verify_secret("x", "scrypt$broken")
    assert not verify_secret("x", "md5$1$2$3$4$5")
