"""Run credentials: a random secret per run, stored only as its sha256. It lets an engine
speak for its own run and nothing else. (Issue 4 turns these into short-lived JWTs.)"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable


def mint() -> tuple[str, str]:
    """A new credential and the digest to store."""
    token = "flr_" + secrets.token_urlsafe(32)
    return token, digest(token)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The token of an `authorization: Bearer <token>` entry, or ''."""
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :].strip()
    return ""
