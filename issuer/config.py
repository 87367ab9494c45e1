"""The issuer's configuration file (YAML): token settings, tenants, roles → scopes, users and
clients. Read once at start; every reference is checked (a user's tenant and roles, a client's
scopes and grant types), so a typo fails at start with the offending key, not at login.

The format, as `write_default_config` writes it (durations in seconds):

    issuer: ""                  # public URL; empty: http://<listen address>
    audience: flnet             # `aud` of access tokens (a client may override it)
    tenant_claim: tenant        # name of the tenant claim in access tokens
    signing_alg: RS256          # RS256 or ES256
    access_token_ttl: 900
    id_token_ttl: 900
    refresh_token_ttl: 604800   # each refresh token; every use rotates it
    authorization_code_ttl: 60
    login_ttl: 600              # how long a login page stays usable
    tenants: [default]
    roles:                      # role -> scopes
      admin: [runs:read, runs:write, tools:read, tools:write, artifacts:read, audit:read, admin]
      data-scientist: [runs:read, runs:write, tools:read, tools:write, artifacts:read]
      auditor: [runs:read, tools:read, artifacts:read, audit:read]
    users:
      admin:
        password_hash: "scrypt$..."   # python -m flnet.issuer --hash-secret < password
        tenant: default
        roles: [admin]
        name: Administrator           # optional; also `email`, `subject` (default: user name)
    clients:
      flnet-cli:                      # public (no secret_hash): authorization code + PKCE
        redirect_uris: ["http://127.0.0.1/callback"]
        grant_types: [authorization_code, refresh_token]
        scopes: [openid, profile, runs:read, runs:write, ...]
      orchestrator:                   # confidential: client_credentials
        secret_hash: "scrypt$..."
        grant_types: [client_credentials]
        scopes: [orchestrator]
        tenant: default               # required with client_credentials
        audience: flnet-orchestrator  # optional (default: the top-level audience)
        roles: []                     # optional

A loopback redirect URI registered without a port (http://127.0.0.1/callback) matches any port
(RFC 8252 §7.3: native apps listen on an ephemeral port); every other redirect URI must match
exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from flnet.datadir import write_private
from flnet.issuer.passwords import hash_secret, is_secret_hash, random_secret

# The scopes FLNet's services understand (DESIGN §5; `audit:read` lists the audit log), and
# the OpenID Connect ones.
FLNET_SCOPES = (
    "runs:read",
    "runs:write",
    "tools:read",
    "tools:write",
    "artifacts:read",
    "audit:read",
    "admin",
    "orchestrator",
)
IDENTITY_SCOPES = ("openid", "profile", "email")
SUPPORTED_SCOPES = (*IDENTITY_SCOPES, *FLNET_SCOPES)

AUTHORIZATION_CODE = "authorization_code"
CLIENT_CREDENTIALS = "client_credentials"
REFRESH_TOKEN = "refresh_token"
GRANT_TYPES = (AUTHORIZATION_CODE, CLIENT_CREDENTIALS, REFRESH_TOKEN)
SIGNING_ALGS = ("RS256", "ES256")
LOOPBACK_HOSTS = ("127.0.0.1", "[::1]")

DEFAULT_ROLES: dict[str, tuple[str, ...]] = {
    # `admin` implies every scope on the servers; audit:read is listed for clarity.
    "admin": (
        "runs:read",
        "runs:write",
        "tools:read",
        "tools:write",
        "artifacts:read",
        "audit:read",
        "admin",
    ),
    "data-scientist": ("runs:read", "runs:write", "tools:read", "tools:write", "artifacts:read"),
    "auditor": ("runs:read", "tools:read", "artifacts:read", "audit:read"),
}
CLI_CLIENT_ID = "flnet-cli"
CLI_REDIRECT_URI = "http://127.0.0.1/callback"
UI_CLIENT_ID = "flnet-ui"
# The web UI of `flnet up`, served by the gateway on a loopback port.
UI_REDIRECT_URI = "http://127.0.0.1/callback"
ORCHESTRATOR_CLIENT_ID = "orchestrator"
ORCHESTRATOR_AUDIENCE = "flnet-orchestrator"
# Scripts and other-language clients (grpcurl, a generated client): a service account.
SCRIPTS_CLIENT_ID = "scripts"


class ConfigError(ValueError):
    """The configuration file is invalid; the message names the offending key."""


@dataclass(frozen=True)
class User:
    """A person who logs in on the login page."""

    username: str
    password_hash: str
    tenant: str
    roles: tuple[str, ...]
    subject: str
    name: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class Client:
    """An OAuth client. Without a secret hash it is public (PKCE only, no client_credentials)."""

    client_id: str
    secret_hash: str | None
    redirect_uris: tuple[str, ...]
    grant_types: frozenset[str]
    scopes: frozenset[str]
    tenant: str | None = None
    roles: tuple[str, ...] = ()
    audience: str | None = None

    @property
    def public(self) -> bool:
        return self.secret_hash is None

    def allows_redirect(self, uri: str) -> bool:
        """Exact match, except that a registered port-less loopback URI allows any port."""
        if uri in self.redirect_uris:
            return True
        try:
            asked = urlsplit(uri)
            port = asked.port
        except ValueError:
            return False
        if asked.scheme != "http" or port is None:
            return False
        host = asked.netloc.rsplit(":", 1)[0]
        if host not in LOOPBACK_HOSTS:
            return False
        portless = asked._replace(netloc=host).geturl()
        return portless in self.redirect_uris


@dataclass(frozen=True)
class IssuerConfig:
    """Everything the issuer serves, as read from the configuration file."""

    tenants: tuple[str, ...]
    roles: Mapping[str, frozenset[str]]
    users: Mapping[str, User]
    clients: Mapping[str, Client]
    issuer: str = ""
    audience: str = "flnet"
    tenant_claim: str = "tenant"
    signing_alg: str = "RS256"
    access_token_ttl: int = 900
    id_token_ttl: int = 900
    refresh_token_ttl: int = 7 * 24 * 3600
    authorization_code_ttl: int = 60
    login_ttl: int = 600

    def scopes_of_roles(self, roles: Iterable[str]) -> frozenset[str]:
        """The union of the scopes the roles grant (unknown roles grant nothing)."""
        result: set[str] = set()
        for role in roles:
            result |= self.roles.get(role, frozenset())
        return frozenset(result)

    @property
    def max_token_ttl(self) -> int:
        """The longest lifetime of a signed token: how long a retired key stays published."""
        return max(self.access_token_ttl, self.id_token_ttl)


# --------------------------------------------------------------------------- loading


def load_config(path: Path) -> IssuerConfig:
    """Reads and checks the configuration file (raises ConfigError)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: {e}") from None
    return parse_config(data, str(path))


_TOP_KEYS = {
    "issuer",
    "audience",
    "tenant_claim",
    "signing_alg",
    "access_token_ttl",
    "id_token_ttl",
    "refresh_token_ttl",
    "authorization_code_ttl",
    "login_ttl",
    "tenants",
    "roles",
    "users",
    "clients",
}
_USER_KEYS = {"password_hash", "tenant", "roles", "subject", "name", "email"}
_CLIENT_KEYS = {
    "secret_hash",
    "redirect_uris",
    "grant_types",
    "scopes",
    "tenant",
    "roles",
    "audience",
}
_TTL_KEYS = (
    "access_token_ttl",
    "id_token_ttl",
    "refresh_token_ttl",
    "authorization_code_ttl",
    "login_ttl",
)


def parse_config(data: object, where: str = "config") -> IssuerConfig:
    """Checks a configuration already parsed from YAML (raises ConfigError)."""
    top = _mapping(data, where)
    _no_unknown_keys(top, _TOP_KEYS, where)
    tenants = tuple(_strings(top.get("tenants"), f"{where}.tenants"))
    if not tenants:
        raise ConfigError(f"{where}.tenants: at least one tenant is required")
    roles: dict[str, frozenset[str]] = {}
    for name, scopes in _mapping(top.get("roles", {}), f"{where}.roles").items():
        roles[name] = frozenset(_scopes(scopes, f"{where}.roles.{name}"))
    users = {
        name: _user(name, spec, tenants, roles, f"{where}.users.{name}")
        for name, spec in _mapping(top.get("users", {}), f"{where}.users").items()
    }
    clients = {
        cid: _client(cid, spec, tenants, roles, f"{where}.clients.{cid}")
        for cid, spec in _mapping(top.get("clients", {}), f"{where}.clients").items()
    }
    settings: dict[str, Any] = {}
    for key in ("issuer", "audience", "tenant_claim", "signing_alg"):
        if key in top:
            settings[key] = _string(top[key], f"{where}.{key}", empty_ok=key == "issuer")
    if settings.get("issuer"):
        settings["issuer"] = _issuer_url(settings["issuer"], f"{where}.issuer")
    if settings.get("signing_alg", "RS256") not in SIGNING_ALGS:
        raise ConfigError(f"{where}.signing_alg: one of {', '.join(SIGNING_ALGS)}")
    for key in _TTL_KEYS:
        if key in top:
            value = top[key]
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{where}.{key}: a positive number of seconds")
            settings[key] = value
    return IssuerConfig(tenants=tenants, roles=roles, users=users, clients=clients, **settings)


def _user(
    name: str,
    spec: object,
    tenants: tuple[str, ...],
    roles: Mapping[str, frozenset[str]],
    where: str,
) -> User:
    fields = _mapping(spec, where)
    _no_unknown_keys(fields, _USER_KEYS, where)
    password_hash = _string(fields.get("password_hash"), f"{where}.password_hash")
    if not is_secret_hash(password_hash):
        raise ConfigError(
            f"{where}.password_hash: not a hash (python -m flnet.issuer --hash-secret)"
        )
    tenant = _tenant(fields.get("tenant"), tenants, f"{where}.tenant")
    user_roles = _roles(fields.get("roles", []), roles, f"{where}.roles")
    optional = {
        key: _string(fields[key], f"{where}.{key}") for key in ("name", "email") if key in fields
    }
    subject = _string(fields.get("subject", name), f"{where}.subject")
    return User(name, password_hash, tenant, user_roles, subject, **optional)


def _client(
    client_id: str,
    spec: object,
    tenants: tuple[str, ...],
    roles: Mapping[str, frozenset[str]],
    where: str,
) -> Client:
    fields = _mapping(spec, where)
    _no_unknown_keys(fields, _CLIENT_KEYS, where)
    secret_hash = None
    if "secret_hash" in fields:
        secret_hash = _string(fields["secret_hash"], f"{where}.secret_hash")
        if not is_secret_hash(secret_hash):
            raise ConfigError(
                f"{where}.secret_hash: not a hash (python -m flnet.issuer --hash-secret)"
            )
    grant_types = frozenset(_strings(fields.get("grant_types"), f"{where}.grant_types"))
    if not grant_types or not grant_types <= set(GRANT_TYPES):
        raise ConfigError(f"{where}.grant_types: a non-empty list of {', '.join(GRANT_TYPES)}")
    redirect_uris = tuple(_strings(fields.get("redirect_uris", []), f"{where}.redirect_uris"))
    for uri in redirect_uris:
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            raise ConfigError(f"{where}.redirect_uris: {uri!r} is not an absolute http(s) URL")
    if AUTHORIZATION_CODE in grant_types and not redirect_uris:
        raise ConfigError(f"{where}.redirect_uris: required with authorization_code")
    tenant = None
    if "tenant" in fields:
        tenant = _tenant(fields["tenant"], tenants, f"{where}.tenant")
    if CLIENT_CREDENTIALS in grant_types:
        if secret_hash is None:
            raise ConfigError(f"{where}: client_credentials needs a secret_hash")
        if tenant is None:
            raise ConfigError(f"{where}.tenant: required with client_credentials")
    if grant_types == {REFRESH_TOKEN}:
        raise ConfigError(f"{where}.grant_types: refresh_token alone issues nothing")
    audience = None
    if "audience" in fields:
        audience = _string(fields["audience"], f"{where}.audience")
    return Client(
        client_id=client_id,
        secret_hash=secret_hash,
        redirect_uris=redirect_uris,
        grant_types=grant_types,
        scopes=frozenset(_scopes(fields.get("scopes"), f"{where}.scopes")),
        tenant=tenant,
        roles=_roles(fields.get("roles", []), roles, f"{where}.roles"),
        audience=audience,
    )


def _mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{where}: a mapping with string keys")
    return value


def _no_unknown_keys(fields: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )


def _string(value: object, where: str, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty_ok):
        raise ConfigError(f"{where}: a non-empty string")
    return value


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: a list of non-empty strings")
    return value


def _scopes(value: object, where: str) -> list[str]:
    scopes = _strings(value, where)
    for scope in scopes:
        if scope not in SUPPORTED_SCOPES:
            raise ConfigError(
                f"{where}: unknown scope {scope!r} (known: {' '.join(SUPPORTED_SCOPES)})"
            )
    return scopes


def _tenant(value: object, tenants: tuple[str, ...], where: str) -> str:
    tenant = _string(value, where)
    if tenant not in tenants:
        raise ConfigError(f"{where}: unknown tenant {tenant!r}")
    return tenant


def _roles(value: object, roles: Mapping[str, frozenset[str]], where: str) -> tuple[str, ...]:
    names = _strings(value, where)
    for name in names:
        if name not in roles:
            raise ConfigError(f"{where}: unknown role {name!r}")
    return tuple(names)


def _issuer_url(value: str, where: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"{where}: an http(s) URL without query or fragment")
    return value.rstrip("/")


# ------------------------------------------------------------------- default dev config


@dataclass(frozen=True)
class DevCredentials:
    """The plain secrets of a freshly written default configuration (the file holds hashes)."""

    admin_username: str
    admin_password: str
    orchestrator_client_id: str
    orchestrator_client_secret: str
    scripts_client_id: str
    scripts_client_secret: str

    def as_dict(self) -> dict[str, str]:
        return {
            "admin_username": self.admin_username,
            "admin_password": self.admin_password,
            "orchestrator_client_id": self.orchestrator_client_id,
            "orchestrator_client_secret": self.orchestrator_client_secret,
            "scripts_client_id": self.scripts_client_id,
            "scripts_client_secret": self.scripts_client_secret,
        }


DEV_CREDENTIALS_FILE = "dev-credentials.json"

_DEFAULT_CONFIG = """\
# FLNet development OIDC issuer (python -m flnet.issuer). Durations in seconds.
# Hashes come from `python -m flnet.issuer --hash-secret` (reads the secret on stdin).
# The plain secrets of this generated file are in {credentials_file} (mode 0600).

issuer: ""                 # public URL; empty: http://<listen address>
audience: flnet            # `aud` of access tokens (a client may set its own `audience`)
tenant_claim: tenant       # name of the tenant claim
signing_alg: RS256         # RS256 or ES256
access_token_ttl: 900
id_token_ttl: 900
refresh_token_ttl: 604800  # per refresh token; each use rotates it, a reuse revokes the family
authorization_code_ttl: 60
login_ttl: 600             # how long a login page stays usable

tenants: [default]

# role -> scopes. Scopes: {scopes}
roles:
{roles}
users:
  admin:
    password_hash: "{admin_hash}"
    tenant: default
    roles: [admin]
    name: Administrator

clients:
  # The `flnet login` command: public, authorization code + PKCE (S256), loopback redirect
  # on any port (RFC 8252), refresh tokens.
  {cli_client}:
    redirect_uris: ["{cli_redirect}"]
    grant_types: [authorization_code, refresh_token]
    scopes: [openid, profile, email, runs:read, runs:write, tools:read, tools:write,
             artifacts:read, audit:read, admin]
  # The web UI (flnet.gateway): public, authorization code + PKCE (S256), redirected to
  # <gateway>/callback (a loopback gateway on any port), refresh tokens kept in memory.
  {ui_client}:
    redirect_uris: ["{ui_redirect}"]
    grant_types: [authorization_code, refresh_token]
    scopes: [openid, profile, email, runs:read, runs:write, tools:read, tools:write,
             artifacts:read, audit:read, admin]
  # The orchestrators' credential when they attach to the control plane, which accepts the
  # audience flnet-orchestrator for them (FLNET_ORCHESTRATOR_AUDIENCE).
  {orchestrator_client}:
    secret_hash: "{orchestrator_hash}"
    grant_types: [client_credentials]
    scopes: [orchestrator]
    tenant: default
    audience: {orchestrator_audience}
  # Scripts and clients in other languages (grpcurl, a generated Node.js or Go client): a
  # service account of tenant default that may run tools, not administer them
  # (`flnet login --client-credentials --client-id {scripts_client}`, then `flnet token`).
  {scripts_client}:
    secret_hash: "{scripts_hash}"
    grant_types: [client_credentials]
    scopes: [runs:read, runs:write, tools:read, artifacts:read]
    tenant: default
"""


def default_config_text(admin_password: str, orchestrator_secret: str, scripts_secret: str) -> str:
    """The documented default configuration, with hashes of the given secrets."""
    roles = "".join(f"  {name}: [{', '.join(scopes)}]\n" for name, scopes in DEFAULT_ROLES.items())
    return _DEFAULT_CONFIG.format(
        credentials_file=DEV_CREDENTIALS_FILE,
        scopes=" ".join(FLNET_SCOPES),
        roles=roles,
        admin_hash=hash_secret(admin_password),
        cli_client=CLI_CLIENT_ID,
        cli_redirect=CLI_REDIRECT_URI,
        ui_client=UI_CLIENT_ID,
        ui_redirect=UI_REDIRECT_URI,
        orchestrator_client=ORCHESTRATOR_CLIENT_ID,
        orchestrator_hash=hash_secret(orchestrator_secret),
        orchestrator_audience=ORCHESTRATOR_AUDIENCE,
        scripts_client=SCRIPTS_CLIENT_ID,
        scripts_hash=hash_secret(scripts_secret),
    )


def write_default_config(
    path: Path,
    *,
    admin_password: str | None = None,
    orchestrator_secret: str | None = None,
) -> DevCredentials:
    """Writes the default development configuration to `path` (mode 0600): an `admin` user,
    the public `flnet-cli` client, the confidential `orchestrator` client (scope
    orchestrator, audience flnet-orchestrator) and the confidential `scripts` client (runs).
    Secrets not given are random; all of them are also written, in plain text, to
    `dev-credentials.json` next to `path` (mode 0600) and returned."""
    credentials = DevCredentials(
        admin_username="admin",
        admin_password=admin_password or random_secret(12),
        orchestrator_client_id=ORCHESTRATOR_CLIENT_ID,
        orchestrator_client_secret=orchestrator_secret or random_secret(),
        scripts_client_id=SCRIPTS_CLIENT_ID,
        scripts_client_secret=random_secret(),
    )
    text = default_config_text(
        credentials.admin_password,
        credentials.orchestrator_client_secret,
        credentials.scripts_client_secret,
    )
    parse_config(yaml.safe_load(text), str(path))  # the default must always be valid
    write_private(path.parent / DEV_CREDENTIALS_FILE, json.dumps(credentials.as_dict(), indent=2))
    write_private(path, text)
    return credentials
