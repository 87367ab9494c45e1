"""The authorization server's decisions, free of HTTP: client authentication, the token
endpoint's grants (client_credentials, authorization_code with PKCE S256, refresh_token),
the authorization request and the login. Errors are OAuthError (see errors.py).

Scopes: a client gets what it asks for within its allowed scopes (else invalid_scope), all of
them when it asks for none. A user's token is further narrowed to what the user's roles grant
(the OpenID scopes `openid`, `profile`, `email` need no role): an auditor asking for
`runs:write` gets a token without it, and the token response says which scopes it holds
(RFC 6749 §3.3).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlencode

from flnet.issuer.config import (
    AUTHORIZATION_CODE,
    CLIENT_CREDENTIALS,
    GRANT_TYPES,
    IDENTITY_SCOPES,
    REFRESH_TOKEN,
    SUPPORTED_SCOPES,
    Client,
    IssuerConfig,
    User,
)
from flnet.issuer.errors import InvalidClient, OAuthError, RedirectedError, UntrustedRequest
from flnet.issuer.keys import Clock
from flnet.issuer.passwords import dummy_hash, verify_secret
from flnet.issuer.refresh import RefreshTokenStore
from flnet.issuer.sessions import AuthorizationCode, ExpiringStore, PendingLogin
from flnet.issuer.tokens import Grant, TokenMinter, ordered_scopes

log = logging.getLogger(__name__)

# RFC 7636 §4.1: 43 to 128 unreserved characters; an S256 challenge is 43 base64url ones.
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")


def s256(verifier: str) -> str:
    """The PKCE S256 code challenge of `verifier`."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def parse_scope(text: str | None) -> tuple[str, ...] | None:
    """The scopes of a `scope` parameter (None when absent); unknown scopes: invalid_scope."""
    if text is None:
        return None
    scopes = text.split()
    unknown = [s for s in scopes if s not in SUPPORTED_SCOPES]
    if unknown:
        raise OAuthError("invalid_scope", f"unknown scope {unknown[0]!r}")
    return ordered_scopes(scopes)


def with_query(uri: str, params: Mapping[str, str | None]) -> str:
    """`uri` with `params` appended to its query (None values left out)."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{uri}{'&' if '?' in uri else '?'}{query}"


@dataclass(frozen=True)
class LoginResult:
    """The outcome of a login form: a redirect back to the client, or the form again."""

    redirect_to: str | None = None
    retry_nonce: str | None = None
    pending: PendingLogin | None = None


class Provider:
    """One issuer's clients, users, codes and refresh tokens."""

    def __init__(
        self,
        config: IssuerConfig,
        minter: TokenMinter,
        refresh_tokens: RefreshTokenStore,
        clock: Clock = time.time,
    ) -> None:
        self.config = config
        self.minter = minter
        self._refresh = refresh_tokens
        self._clock = clock
        self._logins: ExpiringStore[PendingLogin] = ExpiringStore(clock=clock)
        self._codes: ExpiringStore[AuthorizationCode] = ExpiringStore(clock=clock)

    @property
    def issuer(self) -> str:
        return self.minter.issuer

    # ----------------------------------------------------------------- client auth

    def authenticate_client(self, form: Mapping[str, str], authorization: str | None) -> Client:
        """The client of a token request: HTTP Basic (client_secret_basic), form fields
        (client_secret_post) or, for public clients, `client_id` alone."""
        client_id = form.get("client_id")
        secret = form.get("client_secret")
        basic = False
        if authorization and authorization.lower().startswith("basic "):
            if secret is not None:
                raise OAuthError("invalid_request", "use one client authentication method")
            basic = True
            basic_id, secret = _parse_basic(authorization)
            if client_id is not None and client_id != basic_id:
                raise InvalidClient("client_id does not match the authenticated client", basic=True)
            client_id = basic_id
        if not client_id:
            raise InvalidClient("client authentication required")
        client = self.config.clients.get(client_id)
        if client is None:
            if secret is not None:
                verify_secret(secret, dummy_hash())  # unknown clients take as long
            raise InvalidClient("unknown client or wrong secret", basic=basic)
        if client.secret_hash is None:
            if secret is not None:
                raise InvalidClient("public clients have no secret", basic=basic)
            return client
        if secret is None or not verify_secret(secret, client.secret_hash):
            raise InvalidClient("unknown client or wrong secret", basic=basic)
        return client

    # ----------------------------------------------------------------------- /token

    def token(self, form: Mapping[str, str], authorization: str | None) -> dict[str, Any]:
        """The token endpoint: the JSON body of a successful response."""
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant_type not in GRANT_TYPES:
            raise OAuthError("unsupported_grant_type", f"grant type {grant_type!r}")
        client = self.authenticate_client(form, authorization)
        if grant_type not in client.grant_types:
            raise OAuthError("unauthorized_client", f"{client.client_id} may not use {grant_type}")
        if grant_type == CLIENT_CREDENTIALS:
            return self._client_credentials(client, form)
        if grant_type == AUTHORIZATION_CODE:
            return self._authorization_code(client, form)
        return self._refresh_token(client, form)

    def _client_credentials(self, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
        requested = parse_scope(form.get("scope"))
        scopes = ordered_scopes(client.scopes) if requested is None else requested
        not_allowed = [s for s in scopes if s not in client.scopes]
        if not_allowed:
            raise OAuthError("invalid_scope", _not_allowed(client, not_allowed))
        assert client.tenant is not None  # checked when the configuration was loaded
        grant = Grant(
            subject=client.client_id,
            client_id=client.client_id,
            scopes=scopes,
            tenant=client.tenant,
            roles=client.roles,
            audience=client.audience or self.config.audience,
        )
        return self._response(grant)

    def _authorization_code(self, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
        code, redirect_uri = form.get("code"), form.get("redirect_uri")
        if not code or not redirect_uri:
            raise OAuthError("invalid_request", "code and redirect_uri are required")
        record = self._codes.get(code)
        if record is None:
            raise OAuthError("invalid_grant", "unknown or expired authorization code")
        if record.used:
            # RFC 6749 §4.1.2: a code presented twice revokes what it was exchanged for.
            if record.family:
                self._refresh.revoke_family(record.family)
            log.warning("authorization code reused (client %s)", record.client_id)
            raise OAuthError("invalid_grant", "authorization code already used")
        record.used = True  # whatever happens next: one attempt per code
        if record.client_id != client.client_id:
            raise OAuthError("invalid_grant", "authorization code issued to another client")
        if record.redirect_uri != redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request")
        verifier = form.get("code_verifier")
        if not verifier or not _VERIFIER.fullmatch(verifier):
            raise OAuthError("invalid_grant", "a code_verifier of 43-128 characters is required")
        if not hmac.compare_digest(s256(verifier), record.code_challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        user = self._user(record.username)
        grant = self._user_grant(client, user, record.scopes, record.auth_time)
        response = self._response(grant, nonce=record.nonce)
        if REFRESH_TOKEN in client.grant_types:
            token, record.family = self._refresh.issue(
                client.client_id,
                user.username,
                grant.scopes,
                record.auth_time,
                self.config.refresh_token_ttl,
            )
            response["refresh_token"] = token
        return response

    def _refresh_token(self, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
        token = form.get("refresh_token")
        if not token:
            raise OAuthError("invalid_request", "refresh_token is required")
        record = self._refresh.redeem(token, client.client_id)
        requested = parse_scope(form.get("scope"))
        if requested is not None and not set(requested) <= set(record.scopes):
            raise OAuthError("invalid_scope", "a refresh cannot widen the original scope")
        user = self._user(record.username)
        grant = self._user_grant(
            client, user, record.scopes if requested is None else requested, record.auth_time
        )
        response = self._response(grant)
        # The new refresh token keeps the originally granted scopes (RFC 6749 §6).
        response["refresh_token"], _ = self._refresh.issue(
            client.client_id,
            user.username,
            record.scopes,
            record.auth_time,
            self.config.refresh_token_ttl,
            family=record.family,
        )
        return response

    def _user(self, username: str) -> User:
        user = self.config.users.get(username)
        if user is None:
            raise OAuthError("invalid_grant", "the user no longer exists")
        return user

    def _user_grant(
        self, client: Client, user: User, requested: tuple[str, ...], auth_time: int
    ) -> Grant:
        """A user's grant through `client`: the requested scopes within what the client
        may ask for and what the user's roles (as configured now) grant."""
        allowed = self.config.scopes_of_roles(user.roles) | set(IDENTITY_SCOPES)
        scopes = ordered_scopes(s for s in requested if s in allowed and s in client.scopes)
        return Grant(
            subject=user.subject,
            client_id=client.client_id,
            scopes=scopes,
            tenant=user.tenant,
            roles=user.roles,
            audience=client.audience or self.config.audience,
            user=user,
            auth_time=auth_time,
        )

    def _response(self, grant: Grant, nonce: str | None = None) -> dict[str, Any]:
        issued = self.minter.access_token(grant)
        log.info(
            "issued access token %s to %s via %s, scope %r",
            issued.jti,
            grant.subject,
            grant.client_id,
            grant.scope,
        )
        response: dict[str, Any] = {
            "access_token": issued.token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "scope": grant.scope,
        }
        if grant.user is not None and "openid" in grant.scopes:
            response["id_token"] = self.minter.id_token(grant, nonce)
        return response

    # -------------------------------------------------------------------- /authorize

    def begin_authorization(self, params: Mapping[str, str]) -> tuple[str, PendingLogin]:
        """Validates an authorization request; returns the nonce of its login form.
        Raises UntrustedRequest (bad client or redirect URI) or RedirectedError."""
        client = self.config.clients.get(params.get("client_id", ""))
        if client is None:
            raise UntrustedRequest("unknown client_id")
        redirect_uri = params.get("redirect_uri")
        if not redirect_uri:
            raise UntrustedRequest("redirect_uri is required")
        if not client.allows_redirect(redirect_uri):
            raise UntrustedRequest("redirect_uri is not registered for this client")
        state = params.get("state")

        def fail(error: str, description: str) -> RedirectedError:
            return RedirectedError(error, description, redirect_uri, state)

        if params.get("prompt") == "none":
            # No single sign-on session here: every authorization shows the login form.
            raise fail("login_required", "this issuer always asks for the password")
        if params.get("response_type") != "code":
            raise fail("unsupported_response_type", "only response_type=code is supported")
        if AUTHORIZATION_CODE not in client.grant_types:
            raise fail("unauthorized_client", "this client may not use the authorization code")
        challenge = params.get("code_challenge", "")
        if params.get("code_challenge_method") != "S256" or not _CHALLENGE.fullmatch(challenge):
            raise fail("invalid_request", "PKCE is required: code_challenge_method=S256")
        try:
            requested = parse_scope(params.get("scope"))
        except OAuthError as e:
            raise fail(e.error, e.description) from None
        scopes = ordered_scopes(client.scopes) if requested is None else requested
        not_allowed = [s for s in scopes if s not in client.scopes]
        if not_allowed:
            raise fail("invalid_scope", _not_allowed(client, not_allowed))
        pending = PendingLogin(
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scopes=scopes,
            state=state,
            code_challenge=challenge,
            nonce=params.get("nonce"),
            expires_at=self._clock() + self.config.login_ttl,
        )
        return self._logins.add(pending), pending

    def login(self, nonce: str, username: str, password: str) -> LoginResult:
        """Checks a submitted login form. The nonce is single-use: success redirects with a
        code; a wrong password gets the form again under a new nonce. Raises UntrustedRequest
        for an unknown or expired nonce."""
        pending = self._logins.pop(nonce)
        if pending is None:
            raise UntrustedRequest("this login page has expired; start again from the application")
        user = self.config.users.get(username)
        valid = verify_secret(password, user.password_hash if user else dummy_hash())
        if user is None or not valid:
            log.info("failed login for %r (client %s)", username, pending.client_id)
            return LoginResult(retry_nonce=self._logins.add(pending), pending=pending)
        now = self._clock()
        code = self._codes.add(
            AuthorizationCode(
                client_id=pending.client_id,
                redirect_uri=pending.redirect_uri,
                code_challenge=pending.code_challenge,
                username=user.username,
                scopes=pending.scopes,
                nonce=pending.nonce,
                auth_time=int(now),
                expires_at=now + self.config.authorization_code_ttl,
            )
        )
        log.info("user %s logged in (client %s)", user.username, pending.client_id)
        location = with_query(
            pending.redirect_uri, {"code": code, "state": pending.state, "iss": self.issuer}
        )
        return LoginResult(redirect_to=location)

    # -------------------------------------------------------------------- /userinfo

    def userinfo(self, authorization: str | None) -> dict[str, Any]:
        """Claims about the subject of a bearer access token (OpenID Connect UserInfo)."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise OAuthError("invalid_token", "a bearer access token is required", 401)
        try:
            claims = self.minter.verify_access_token(authorization[7:].strip())
        except ValueError as e:
            raise OAuthError("invalid_token", str(e), 401) from None
        info: dict[str, Any] = {"sub": claims["sub"]}
        tenant_claim = self.config.tenant_claim
        for name in (tenant_claim, "roles", "preferred_username"):
            if name in claims:
                info[name] = claims[name]
        username = claims.get("preferred_username")
        user = self.config.users.get(username) if isinstance(username, str) else None
        if user is not None and user.subject == claims["sub"]:
            info.update(
                {k: v for k, v in (("name", user.name), ("email", user.email)) if v is not None}
            )
        return info

    # -------------------------------------------------------------------- discovery

    def discovery(self) -> dict[str, Any]:
        """The OpenID Provider metadata (also served as RFC 8414 metadata)."""
        base = self.issuer
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks",
            "userinfo_endpoint": f"{base}/userinfo",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": list(GRANT_TYPES),
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.config.signing_alg],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": list(SUPPORTED_SCOPES),
            "claims_supported": [
                "iss",
                "sub",
                "aud",
                "exp",
                "iat",
                "nbf",
                "jti",
                "auth_time",
                "nonce",
                "scope",
                "client_id",
                "roles",
                self.config.tenant_claim,
                "preferred_username",
                "name",
                "email",
            ],
            "authorization_response_iss_parameter_supported": True,
            "request_parameter_supported": False,
            "claims_parameter_supported": False,
        }


def _parse_basic(authorization: str) -> tuple[str, str]:
    """client_id and secret of an HTTP Basic header (form-urlencoded, RFC 6749 §2.3.1)."""
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient("malformed Basic authorization", basic=True) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClient("malformed Basic authorization", basic=True)
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


def _not_allowed(client: Client, scopes: list[str]) -> str:
    return f"client {client.client_id} may not ask for {' '.join(scopes)}"
