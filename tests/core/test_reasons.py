"""Error reasons come from the contracts' enums: every reason the servers raise is declared
(and documented) there, and none can be made up in Python."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flnet.api.common.v1 import errors_pb2 as common_errors
from flnet.control.reasons import Reason as ControlReason
from flnet.orchestrator.errors import Reason as OrchestratorReason
from flnet.reasons import Reasons
from flnet.server.auth.errors import Reason as AuthReason

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["control", "orchestrator", "runtime", "flnet", "issuer", "gateway"]


def test_a_reason_is_its_enum_value_without_the_prefix() -> None:
    reasons = Reasons(common_errors.AuthErrorReason.DESCRIPTOR)
    assert reasons.TOKEN_EXPIRED == "TOKEN_EXPIRED"
    assert "TOKEN_EXPIRED" in reasons
    assert "UNSPECIFIED" not in reasons
    assert list(reasons)[:2] == ["TOKEN_MISSING", "TOKEN_MALFORMED"]


def test_a_reason_the_contract_does_not_declare_is_refused() -> None:
    with pytest.raises(AttributeError, match="AuthErrorReason declares no reason TOKEN_STOLEN"):
        _ = AuthReason.TOKEN_STOLEN
    with pytest.raises(AttributeError):
        _ = ControlReason.UNSPECIFIED


def test_every_reason_the_code_names_is_declared() -> None:
    """Reasons are read at raise time: a misspelt one would fail only on its error path."""
    declared = {
        "control": set(ControlReason),
        "orchestrator": set(OrchestratorReason),
    }
    named: list[tuple[str, str]] = []
    for top in SOURCES:
        for path in (ROOT / top).rglob("*.py"):
            for name in re.findall(r"\bReason\.([A-Z_]+)\b", path.read_text()):
                named.append((str(path.relative_to(ROOT)), name))
    assert len(named) > 40
    for where, name in named:
        owner = where.split("/", 1)[0]
        allowed = declared.get(owner, set()) | set(AuthReason)
        assert name in allowed, f"{where} names undeclared reason {name}"
