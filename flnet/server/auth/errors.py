"""Reasons (`ErrorInfo.reason`) of the errors authentication and authorization raise.

The errors themselves are the shared ones of flnet.errors: `Unauthenticated` (no credential,
or one that is not valid: the caller should obtain a new token), `PermissionDenied` (a valid
credential that may not call this method) and `Unavailable` (the identity provider cannot be
reached: retry later). flnet.server.interceptors.ErrorMapper turns them into statuses. Their
messages are fixed texts: never the token, never a library's exception text.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a call was refused, machine-readable."""

    # UNAUTHENTICATED
    TOKEN_MISSING = "TOKEN_MISSING"
    """No `authorization` metadata."""
    TOKEN_MALFORMED = "TOKEN_MALFORMED"
    """Not `Bearer <token>`, or the token is not a compact JWS."""
    TOKEN_INVALID = "TOKEN_INVALID"
    """Bad signature, algorithm not accepted, unknown signing key, required claim missing."""
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    """`exp` is past (beyond the leeway)."""
    TOKEN_NOT_YET_VALID = "TOKEN_NOT_YET_VALID"
    """`nbf` or `iat` is in the future (beyond the leeway)."""
    TOKEN_ISSUER_INVALID = "TOKEN_ISSUER_INVALID"
    """`iss` is not the configured issuer."""
    TOKEN_AUDIENCE_INVALID = "TOKEN_AUDIENCE_INVALID"
    """`aud` is not one this method's audience accepts (e.g. a user token on RuntimeService)."""
    # PERMISSION_DENIED
    SCOPE_MISSING = "SCOPE_MISSING"
    """The token lacks a scope the method declares."""
    TENANT_MISSING = "TENANT_MISSING"
    """The token carries no tenant where one is required."""
    METHOD_UNDECLARED = "METHOD_UNDECLARED"
    """The method has no `flnet.api.common.v1.authorization` option: denied to everyone."""
    # UNAVAILABLE
    ISSUER_UNAVAILABLE = "ISSUER_UNAVAILABLE"
    """The issuer's discovery document or JWKS could not be fetched."""
