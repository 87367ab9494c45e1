"""OAuth 2.0 errors (RFC 6749 §5.2), raised by the grant logic and rendered by the endpoints."""

from __future__ import annotations


class OAuthError(Exception):
    """An error response: `error` code, human `description`, HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def as_dict(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class InvalidClient(OAuthError):
    """Client authentication failed (401). `basic` when the client tried HTTP Basic, which
    then gets a WWW-Authenticate challenge."""

    def __init__(self, description: str, *, basic: bool = False) -> None:
        super().__init__("invalid_client", description, 401)
        self.basic = basic


class RedirectedError(OAuthError):
    """An authorization-request error sent back to the (already validated) redirect URI."""

    def __init__(self, error: str, description: str, redirect_uri: str, state: str | None) -> None:
        super().__init__(error, description)
        self.redirect_uri = redirect_uri
        self.state = state


class UntrustedRequest(Exception):
    """An authorization request whose client or redirect URI cannot be trusted: shown on an
    error page, never redirected (RFC 6749 §4.1.2.1)."""
