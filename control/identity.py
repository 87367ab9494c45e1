"""Who is calling. Until OIDC lands (issue 4) every caller is the local developer; this is
the one place that changes when tokens are validated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Caller:
    subject: str


def caller(context: Any) -> Caller:
    return Caller(subject="local-user")
