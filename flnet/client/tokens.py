"""Reading a bearer token without verifying it: for display and for naming resources only
(the servers verify every token)."""

from __future__ import annotations

import base64
import json
from typing import Any


def unverified_claims(token: str) -> dict[str, Any]:
    """A JWT's claims read without verification ({} if it is not a JWT): for display and for
    naming resources only; the servers verify."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}
