"""Opaque page tokens (AIP-158): the position after the last item, bound to the request's
filters so that a token cannot be replayed against a different query. Pages are bounded in
bytes as well as in items (`fitting`): a page of 1000 runs with 64 KiB configurations would
be 64 MB, far past the 4 MiB an ordinary gRPC client accepts."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message

from flnet.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: What the items of one page may add up to: under the 4 MiB message limit of ordinary gRPC
#: clients, with room for the rest of the response.
MAX_PAGE_BYTES = 3 * 1024 * 1024


def page_size(
    requested: int, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE
) -> int:
    if requested < 0:
        raise InvalidArgument(
            "page_size must not be negative", violations=[("page_size", "must not be negative")]
        )
    return min(requested or default, maximum)


def fitting(items: Sequence[Message]) -> int:
    """How many of `items`, from the first, fit in a page of MAX_PAGE_BYTES; at least one,
    so that a page always moves on."""
    budget = MAX_PAGE_BYTES
    total = 0
    for count, item in enumerate(items):
        total += item.ByteSize() + 6  # the field's tag and length
        if total > budget and count > 0:
            return count
    return len(items)


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
