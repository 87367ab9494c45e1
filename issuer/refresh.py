"""Refresh tokens with rotation and reuse detection (OAuth 2.0 Security BCP §4.14).

A refresh token is an opaque random string; only its SHA-256 is stored. Each use returns a
new token of the same *family* and marks the used one. Presenting a used token again means
that it leaked: the whole family is revoked, so that neither the thief nor the client can
refresh any more. The store survives restarts in a 0600 JSON file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from flnet.datadir import write_private
from flnet.issuer.errors import OAuthError
from flnet.issuer.keys import Clock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshRecord:
    """What a refresh token may renew: the user's grant through one client."""

    family: str
    client_id: str
    username: str
    scopes: tuple[str, ...]
    auth_time: int
    expires_at: float
    used: bool = False


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class RefreshTokenStore:
    """Refresh tokens by digest, persisted to `path` after every change (None: memory only)."""

    def __init__(self, path: Path | None, clock: Clock = time.time) -> None:
        self._path = path
        self._clock = clock
        self._records: dict[str, RefreshRecord] = {}
        if path is not None and path.exists():
            data = json.loads(path.read_text())
            for digest, fields in data.items():
                fields["scopes"] = tuple(fields["scopes"])
                self._records[digest] = RefreshRecord(**fields)

    def issue(
        self,
        client_id: str,
        username: str,
        scopes: tuple[str, ...],
        auth_time: int,
        ttl: float,
        family: str | None = None,
    ) -> tuple[str, str]:
        """A new refresh token, in `family` or a new one; returns (token, family)."""
        token = secrets.token_urlsafe(32)
        family = family or secrets.token_hex(16)
        self._records[_digest(token)] = RefreshRecord(
            family, client_id, username, scopes, auth_time, self._clock() + ttl
        )
        self._save()
        return token, family

    def redeem(self, token: str, client_id: str) -> RefreshRecord:
        """Marks `token` used and returns its record; raises invalid_grant if it is unknown,
        expired, another client's, or already used (which revokes its family)."""
        digest = _digest(token)
        record = self._records.get(digest)
        if record is None or record.expires_at <= self._clock():
            raise OAuthError("invalid_grant", "unknown or expired refresh token")
        if record.client_id != client_id:
            raise OAuthError("invalid_grant", "refresh token issued to another client")
        if record.used:
            self.revoke_family(record.family)
            log.warning(
                "refresh token reused (client %s, user %s): family revoked",
                record.client_id,
                record.username,
            )
            raise OAuthError("invalid_grant", "refresh token already used; session revoked")
        self._records[digest] = replace(record, used=True)
        self._save()
        return record

    def revoke_family(self, family: str) -> None:
        self._records = {d: r for d, r in self._records.items() if r.family != family}
        self._save()

    def _save(self) -> None:
        now = self._clock()
        self._records = {d: r for d, r in self._records.items() if r.expires_at > now}
        if self._path is not None:
            data = {d: asdict(r) for d, r in self._records.items()}
            write_private(self._path, json.dumps(data))
