"""ErrorInfo reasons read from the contracts: each server's reasons are a proto enum
(ControlErrorReason, OrchestratorErrorReason, AuthErrorReason), documented there once.
`Reasons(descriptor).TOO_LARGE` is the string "TOO_LARGE" the wire carries; a name the enum
does not declare is an AttributeError, so a reason cannot be made up in Python."""

from __future__ import annotations

import re
from collections.abc import Iterator

from google.protobuf.descriptor import EnumDescriptor


def _prefix(enum_name: str) -> str:
    """`CONTROL_ERROR_REASON_` for ControlErrorReason (buf's ENUM_VALUE_PREFIX)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum_name).upper() + "_"


class Reasons:
    def __init__(self, enum: EnumDescriptor) -> None:
        prefix = _prefix(enum.name)
        self.enum = enum
        self._names = tuple(
            value.name.removeprefix(prefix) for value in enum.values if value.number
        )

    def __getattr__(self, name: str) -> str:
        if name in self._names:
            return name
        raise AttributeError(f"{self.enum.full_name} declares no reason {name}")

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names
