"""Opaque page tokens (AIP-158): the position after the last item, bound to the request's
filters so that a token cannot be replayed against a different query."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from flnet.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(
    requested: int, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE
) -> int:
    if requested < 0:
        raise InvalidArgument(
            "page_size must not be negative", violations=[("page_size", "must not be negative")]
        )
    return min(requested or default, maximum)


def _fingerprint(query: Any) -> str:
    return hashlib.sha256(json.dumps(query, sort_keys=True).encode()).hexdigest()[:16]


def _storable(value: Any) -> bool:
    """Whether a position can be a query parameter on every database: the positions this API
    issues hold 64-bit integers and text without NUL (PostgreSQL refuses NUL in text)."""
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    return value is None or isinstance(value, float)


def encode(position: Any, query: Any) -> str:
    raw = json.dumps({"p": position, "q": _fingerprint(query)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, query: Any) -> Any:
    """The position stored in `token`, or None for the first page."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        position, fingerprint = data["p"], data["q"]
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument(
            "page_token is malformed", violations=[("page_token", "not a token this API issued")]
        ) from None
    if not _storable(position):
        raise InvalidArgument(
            "page_token is malformed", violations=[("page_token", "not a token this API issued")]
        )
    if fingerprint != _fingerprint(query):
        raise InvalidArgument(
            "page_token belongs to a different query",
            violations=[("page_token", "filters changed since the token was issued")],
        )
    return position
