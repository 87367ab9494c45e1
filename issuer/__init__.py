"""The embedded development OIDC issuer (DESIGN §5): discovery, JWKS with key rotation,
client_credentials, authorization code + PKCE (S256) with a minimal login page, refresh
tokens with rotation, users/clients/roles/tenants from a YAML file. Deployments point
FLNET_OIDC_ISSUER at a real provider instead; nothing else changes.

    issuer = Issuer(load_or_create_config(data_dir), data_dir)
    port = await issuer.start("127.0.0.1:0")   # issuer.url, issuer.rotate_keys()
    await issuer.stop()

`python -m flnet.issuer` runs it as a process (see __main__.py).

May import: the shared core only. No component imports it: servers reach it over HTTP (its
discovery document and JWKS), like any other OpenID provider.
"""

from flnet.issuer.app import Issuer, issuer_dir, load_or_create_config
from flnet.issuer.config import (
    DEFAULT_ROLES,
    FLNET_SCOPES,
    ConfigError,
    DevCredentials,
    IssuerConfig,
    load_config,
    parse_config,
    write_default_config,
)
from flnet.issuer.keys import KeyStore
from flnet.issuer.passwords import hash_secret, verify_secret

__all__ = [
    "DEFAULT_ROLES",
    "FLNET_SCOPES",
    "ConfigError",
    "DevCredentials",
    "Issuer",
    "IssuerConfig",
    "KeyStore",
    "hash_secret",
    "issuer_dir",
    "load_config",
    "load_or_create_config",
    "parse_config",
    "verify_secret",
    "write_default_config",
]
