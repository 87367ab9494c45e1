"""Identity settings, read once at start from arguments and FLNET_OIDC_* variables, and the
objects they build (the issuer's JwksClient, a TokenValidator per audience, the
AuthInterceptor of a server).

| variable | field | default |
|---|---|---|
| FLNET_OIDC_ISSUER | issuer (URL, exactly as in `iss`) | required |
| FLNET_OIDC_AUDIENCE | audiences["user"] (comma-separated `aud` values) | flnet |
| FLNET_RUNTIME_AUDIENCE | audiences["runtime"] | flnet-runtime |
| FLNET_ORCHESTRATOR_AUDIENCE | audiences["orchestrator"] | flnet-orchestrator |
| FLNET_OIDC_ALGORITHMS | algorithms (comma-separated) | RS256,ES256 |
| FLNET_OIDC_LEEWAY | leeway (seconds of clock skew) | 30 |
| FLNET_OIDC_TENANT_CLAIM | tenant_claim (name or dotted path) | tenant |
| FLNET_OIDC_DEFAULT_TENANT | default_tenant (tokens without tenant claim) | none |
| FLNET_OIDC_ROLES_CLAIM | roles_claims (comma-separated names or dotted paths) | roles |
| FLNET_OIDC_ROLE_SCOPES | role_scopes, JSON: {"role": ["scope", ...] or "scope scope"} | {} |
| FLNET_OIDC_ADMIN_SCOPE | admin_scope (empty: no scope implies the others) | admin |
| FLNET_OIDC_JWKS_URI | jwks_uri (skips discovery) | discovered |
| FLNET_OIDC_CA_FILE | ca_file (CA bundle for the issuer's https) | system CAs |
| FLNET_OIDC_ALLOW_HTTP | allow_http (plain http beyond loopback) | false |
| FLNET_OIDC_TIMEOUT | http_timeout (seconds per request) | 5 |
| FLNET_OIDC_REFRESH_INTERVAL | min_refresh_interval (seconds between JWKS fetches) | 10 |
| FLNET_OIDC_KEY_MAX_AGE | max_key_age (seconds before keys are refetched) | 3600 |

Tokens of the audiences in `tenant_audiences` (default: "user") must carry a tenant (or
`default_tenant` applies); runtime and orchestrator credentials need not.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import descriptor

from .audit import AuditSink
from .interceptor import AuthInterceptor
from .jwks import (
    DEFAULT_MAX_AGE,
    DEFAULT_MIN_REFRESH_INTERVAL,
    DEFAULT_TIMEOUT,
    JwksClient,
    KeySource,
    check_url,
)
from .policy import ADMIN_SCOPE, MethodPolicy
from .tokens import (
    DEFAULT_ALGORITHMS,
    DEFAULT_LEEWAY,
    SUPPORTED_ALGORITHMS,
    TokenValidator,
    Validator,
)

USER = "user"
RUNTIME = "runtime"
ORCHESTRATOR = "orchestrator"


def default_audiences() -> dict[str, tuple[str, ...]]:
    return {
        USER: ("flnet",),
        RUNTIME: ("flnet-runtime",),
        ORCHESTRATOR: ("flnet-orchestrator",),
    }


@dataclass(frozen=True)
class AuthSettings:
    """Everything authentication needs; see the module docstring for each field."""

    issuer: str
    audiences: Mapping[str, tuple[str, ...]] = field(default_factory=default_audiences)
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway: float = DEFAULT_LEEWAY
    tenant_claim: str = "tenant"
    default_tenant: str | None = None
    tenant_audiences: tuple[str, ...] = (USER,)
    roles_claims: tuple[str, ...] = ("roles",)
    role_scopes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    admin_scope: str | None = ADMIN_SCOPE
    jwks_uri: str | None = None
    ca_file: Path | None = None
    allow_http: bool = False
    http_timeout: float = DEFAULT_TIMEOUT
    min_refresh_interval: float = DEFAULT_MIN_REFRESH_INTERVAL
    max_key_age: float = DEFAULT_MAX_AGE

    def __post_init__(self) -> None:
        check_url(self.issuer, allow_http=self.allow_http)
        refused = set(self.algorithms) - SUPPORTED_ALGORITHMS
        if refused or not self.algorithms:
            raise ValueError(
                f"algorithms not accepted: {sorted(refused) or 'none given'}; "
                f"choose from {sorted(SUPPORTED_ALGORITHMS)}"
            )
        if not 0 <= self.leeway <= 300:
            raise ValueError("leeway must be between 0 and 300 seconds")
        for kind, values in self.audiences.items():
            if not values:
                raise ValueError(f"no accepted `aud` value for audience {kind!r}")
        if self.min_refresh_interval < 0 or self.http_timeout <= 0 or self.max_key_age <= 0:
            raise ValueError("timeouts and intervals must be positive")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> AuthSettings:
        """Settings from FLNET_OIDC_* variables (`env`, default os.environ); `overrides`
        (not None) win. ValueError names the variable at fault."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def number(name: str, key: str) -> None:
            raw = text(name)
            if raw is not None:
                try:
                    values[key] = float(raw)
                except ValueError:
                    raise ValueError(f"{name}: not a number: {raw!r}") from None

        if (issuer := text("FLNET_OIDC_ISSUER")) is not None:
            values["issuer"] = issuer
        audiences = default_audiences()
        for name, kind in (
            ("FLNET_OIDC_AUDIENCE", USER),
            ("FLNET_RUNTIME_AUDIENCE", RUNTIME),
            ("FLNET_ORCHESTRATOR_AUDIENCE", ORCHESTRATOR),
        ):
            if (raw := text(name)) is not None:
                audiences[kind] = _split(raw)
        values["audiences"] = audiences
        if (raw := text("FLNET_OIDC_ALGORITHMS")) is not None:
            values["algorithms"] = _split(raw)
        number("FLNET_OIDC_LEEWAY", "leeway")
        if (raw := text("FLNET_OIDC_TENANT_CLAIM")) is not None:
            values["tenant_claim"] = raw
        if (raw := text("FLNET_OIDC_DEFAULT_TENANT")) is not None:
            values["default_tenant"] = raw
        if (raw := text("FLNET_OIDC_ROLES_CLAIM")) is not None:
            values["roles_claims"] = _split(raw)
        if (raw := text("FLNET_OIDC_ROLE_SCOPES")) is not None:
            values["role_scopes"] = parse_role_scopes(raw, "FLNET_OIDC_ROLE_SCOPES")
        if "FLNET_OIDC_ADMIN_SCOPE" in env:
            values["admin_scope"] = text("FLNET_OIDC_ADMIN_SCOPE")
        if (raw := text("FLNET_OIDC_JWKS_URI")) is not None:
            values["jwks_uri"] = raw
        if (raw := text("FLNET_OIDC_CA_FILE")) is not None:
            values["ca_file"] = Path(raw).expanduser()
        if (raw := text("FLNET_OIDC_ALLOW_HTTP")) is not None:
            values["allow_http"] = raw.lower() in {"1", "true", "yes", "on"}
        number("FLNET_OIDC_TIMEOUT", "http_timeout")
        number("FLNET_OIDC_REFRESH_INTERVAL", "min_refresh_interval")
        number("FLNET_OIDC_KEY_MAX_AGE", "max_key_age")
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "issuer" not in values:
            raise ValueError("FLNET_OIDC_ISSUER is not set")
        return cls(**values)

    def jwks_client(self, *, clock: Callable[[], float] = time.monotonic) -> JwksClient:
        """The issuer's key source (discovery, cache, rotation). `clock`: monotonic
        seconds, for the refresh interval and key age."""
        context = None
        if self.ca_file is not None:
            context = ssl.create_default_context(cafile=str(self.ca_file))
        return JwksClient(
            self.issuer,
            jwks_uri=self.jwks_uri,
            timeout=self.http_timeout,
            min_refresh_interval=self.min_refresh_interval,
            max_age=self.max_key_age,
            ssl_context=context,
            allow_http=self.allow_http,
            clock=clock,
        )

    def validator(self, audience: str, keys: KeySource) -> TokenValidator:
        """The validator of one audience ("user", "runtime", "orchestrator")."""
        if audience not in self.audiences:
            raise ValueError(f"no `aud` values configured for audience {audience!r}")
        return TokenValidator(
            keys,
            issuer=self.issuer,
            audiences=self.audiences[audience],
            audience_kind=audience,
            algorithms=self.algorithms,
            leeway=self.leeway,
            tenant_claim=self.tenant_claim,
            default_tenant=self.default_tenant,
            require_tenant=audience in self.tenant_audiences,
            roles_claims=self.roles_claims,
            role_scopes=self.role_scopes,
        )

    def interceptor(
        self,
        services: Iterable[str | descriptor.ServiceDescriptor],
        *,
        keys: KeySource | None = None,
        validators: Mapping[str, Validator] | None = None,
        audit: AuditSink | None = None,
    ) -> AuthInterceptor:
        """The AuthInterceptor of a server that registers `services`: the policy of their
        methods, and a validator for each audience they declare, all over one key source
        (default: a new JwksClient of the issuer; `close()` the interceptor at shutdown).
        `validators` replace the issuer's for their audiences (the control plane validates
        run credentials with its own keys); `audit` receives a record of every call."""
        policy = MethodPolicy.from_services(services, admin_scope=self.admin_scope)
        given = dict(validators or {})
        needed = sorted(policy.audiences - set(given))
        if needed:
            keys = keys if keys is not None else self.jwks_client()
            given.update({kind: self.validator(kind, keys) for kind in needed})
        return AuthInterceptor(policy, given, audit=audit)


def _split(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def parse_role_scopes(raw: str, source: str = "role scopes") -> dict[str, tuple[str, ...]]:
    """A role map from JSON: {"role": ["scope", ...]} or {"role": "scope scope"}."""
    try:
        document = json.loads(raw)
    except ValueError:
        raise ValueError(f"{source}: not JSON") from None
    if not isinstance(document, dict):
        raise ValueError(f"{source}: expected a JSON object of role -> scopes")
    result: dict[str, tuple[str, ...]] = {}
    for role, scopes in document.items():
        if isinstance(scopes, str):
            result[role] = tuple(scopes.split())
        elif isinstance(scopes, list) and all(isinstance(s, str) for s in scopes):
            result[role] = tuple(scopes)
        else:
            raise ValueError(f"{source}: scopes of role {role!r} must be a list of strings")
    return result
