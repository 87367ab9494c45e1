"""Identity for FLNet servers (DESIGN.md §5): bearer-token validation against an OIDC
issuer's JWKS and the authorization interceptor driven by the contracts' method options.

Platform-only (pyjwt, cryptography, aiohttp): the runtime never imports it.

    settings = AuthSettings.from_env()                     # FLNET_OIDC_ISSUER, ...
    auth = settings.interceptor(SERVICE_NAMES)             # policy + validators + JWKS
    server = Server(SERVICE_NAMES, register, interceptors=[ErrorMapper(DOMAIN), auth])
    ...                                                    # handlers: require_principal()
    await server.stop(grace); await auth.close()
"""

from .errors import Reason
from .interceptor import AuthInterceptor, bearer_token
from .jwks import JwksClient, KeySet, KeySource, SigningKey, StaticKeys
from .policy import ADMIN_SCOPE, PUBLIC_SERVICES, MethodPolicy, Requirement
from .principal import Principal, current_principal, require_principal, use_principal
from .settings import ORCHESTRATOR, RUNTIME, USER, AuthSettings
from .tokens import (
    DEFAULT_ALGORITHMS,
    SUPPORTED_ALGORITHMS,
    TokenValidator,
    Validator,
    scopes_of_roles,
    token_roles,
    token_scopes,
)

__all__ = [
    "ADMIN_SCOPE",
    "DEFAULT_ALGORITHMS",
    "ORCHESTRATOR",
    "PUBLIC_SERVICES",
    "RUNTIME",
    "SUPPORTED_ALGORITHMS",
    "USER",
    "AuthInterceptor",
    "AuthSettings",
    "JwksClient",
    "KeySet",
    "KeySource",
    "MethodPolicy",
    "Principal",
    "Reason",
    "Requirement",
    "SigningKey",
    "StaticKeys",
    "TokenValidator",
    "Validator",
    "bearer_token",
    "current_principal",
    "require_principal",
    "scopes_of_roles",
    "token_roles",
    "token_scopes",
    "use_principal",
]
