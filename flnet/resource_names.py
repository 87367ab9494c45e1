"""Resource names (AIP-122): the one grammar of "tenants/{tenant}/runs/{run}" and its kin.

Nothing here is written by hand: the grammar is derived from the resource descriptors of
the contracts (proto/), the `flnet.api.common.v1.resource` message option and the
`resource_definition` file option (common/v1/resource.proto). Each descriptor gives a
resource's name pattern and the rule of its own id, the pattern's last variable; that rule
holds for the variable wherever it appears ({tenant} of a run name obeys the tenant's).

The control plane (which mints names), the orchestrator and the engine all parse names
with it, so they accept and refuse the same ones. The engine imports it: protobuf only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from google.protobuf import descriptor

from flnet.api.common.v1 import resource_pb2
from flnet.api.control.v1 import artifact_pb2, fleet_pb2, run_pb2, tenant_pb2, tool_pb2

#: The contract files that declare resources; a test checks that no other file does.
DECLARING_FILES: tuple[descriptor.FileDescriptor, ...] = (
    tenant_pb2.DESCRIPTOR,
    tool_pb2.DESCRIPTOR,
    run_pb2.DESCRIPTOR,
    artifact_pb2.DESCRIPTOR,
    fleet_pb2.DESCRIPTOR,
)

_COLLECTION = re.compile(r"[a-z][a-zA-Z0-9]*")
_VARIABLE = re.compile(r"\{(?P<variable>[a-z][a-z0-9_]*)\}")


@dataclass(frozen=True)
class ResourceType:
    """One resource's names, derived from its descriptor. `regex` matches a whole name
    (`match` or `fullmatch`; it is anchored at both ends), with one named group per
    variable; `id_rule` matches a whole id of the resource."""

    type: str
    pattern: str
    singular: str
    plural: str
    variables: tuple[str, ...]
    regex: re.Pattern[str]
    id_rule: re.Pattern[str]
    # What error messages call it: singular "toolVersion" -> "tool version".
    kind: str
    # The pattern with "{}" for each variable (collection ids hold no braces).
    template: str = field(repr=False)

    def parse(self, name: str) -> tuple[str, ...] | None:
        """The ids of a valid name, in pattern order; None when `name` is not one."""
        m = self.regex.fullmatch(name)
        return None if m is None else tuple(m[v] for v in self.variables)

    def format(self, *ids: str) -> str:
        """The name of these ids, in pattern order (not checked against the id rules: the
        ids come from names parsed before, or from the authority that minted them)."""
        if len(ids) != len(self.variables):
            raise TypeError(f"{self.pattern} takes {len(self.variables)} ids, not {len(ids)}")
        return self.template.format(*ids)


def declarations(
    files: Iterable[descriptor.FileDescriptor] = DECLARING_FILES,
) -> list[resource_pb2.ResourceDescriptor]:
    """The resource descriptors that `files` declare, in file order: file-level
    `resource_definition`s first, then the `resource` options of their messages."""
    found: list[resource_pb2.ResourceDescriptor] = []
    for file in files:
        found.extend(file.GetOptions().Extensions[resource_pb2.resource_definition])
        pending = list(file.message_types_by_name.values())
        while pending:
            message = pending.pop(0)
            options = message.GetOptions()
            if options.HasExtension(resource_pb2.resource):
                found.append(options.Extensions[resource_pb2.resource])
            pending.extend(message.nested_types)
    return found


def _segments(declared: resource_pb2.ResourceDescriptor) -> list[str]:
    """The pattern's segments, checked: collection ids alternating with variables, the
    first a collection id, the last a variable, no variable twice."""
    if len(declared.pattern) != 1:
        raise ValueError(f"{declared.type}: declares {len(declared.pattern)} patterns, not 1")
    segments = declared.pattern[0].split("/")
    variables = [_VARIABLE.fullmatch(s) for s in segments[1::2]]
    if (
        len(segments) % 2
        or not all(_COLLECTION.fullmatch(s) for s in segments[::2])
        or not all(variables)
        or len({m["variable"] for m in variables if m}) != len(variables)
    ):
        raise ValueError(
            f"{declared.type}: pattern {declared.pattern[0]!r} is not collection/{{variable}} "
            "pairs with distinct variables"
        )
    return segments


def derive(declared: Iterable[resource_pb2.ResourceDescriptor]) -> dict[str, ResourceType]:
    """The resource types of these declarations, by type. ValueError when they do not make
    one grammar: a malformed pattern or id rule, a type or an id variable declared twice, a
    variable no resource declares the rule of, a parent pattern that is not declared."""
    resources = list(declared)
    rules: dict[str, str] = {}
    for d in resources:
        variable = _segments(d)[-1][1:-1]
        if variable in rules:
            raise ValueError(f"{d.type}: the rule of {{{variable}}} is declared twice")
        try:
            re.compile(d.id_regex)
        except re.error as exc:
            raise ValueError(f"{d.type}: id_regex {d.id_regex!r} is invalid: {exc}") from exc
        if not d.id_regex or "?P<" in d.id_regex:
            raise ValueError(f"{d.type}: id_regex {d.id_regex!r} is empty or has named groups")
        rules[variable] = d.id_regex
    patterns = {d.pattern[0] for d in resources}
    types: dict[str, ResourceType] = {}
    for d in resources:
        segments = _segments(d)
        parts: list[str] = []
        variables: list[str] = []
        for segment in segments:
            m = _VARIABLE.fullmatch(segment)
            if m is None:
                parts.append(re.escape(segment))
                continue
            variable = m["variable"]
            if variable not in rules:
                raise ValueError(f"{d.type}: no resource declares the rule of {segment}")
            variables.append(variable)
            parts.append(f"(?P<{variable}>(?:{rules[variable]}))")
        parent = "/".join(segments[:-2])
        if parent and parent not in patterns:
            raise ValueError(f"{d.type}: its parent {parent!r} is not a declared resource")
        if not d.type or not d.singular or d.type in types:
            raise ValueError(f"{d.type!r}: no type or singular, or a type declared twice")
        types[d.type] = ResourceType(
            type=d.type,
            pattern=d.pattern[0],
            singular=d.singular,
            plural=d.plural,
            variables=tuple(variables),
            regex=re.compile(r"\A" + "/".join(parts) + r"\Z"),
            id_rule=re.compile(rf"\A(?:{d.id_regex})\Z"),
            kind=re.sub(r"(?<!^)(?=[A-Z])", " ", d.singular).lower(),
            template=_VARIABLE.sub("{}", d.pattern[0]),
        )
    return types


#: Every resource type of the contracts, by type ("flnet.io/Run").
RESOURCES: Mapping[str, ResourceType] = derive(declarations())
#: The rule of each id variable ("run" -> its id rule), wherever the variable appears.
ID_RULES: Mapping[str, re.Pattern[str]] = {r.variables[-1]: r.id_rule for r in RESOURCES.values()}

TENANT = RESOURCES["flnet.io/Tenant"]
TOOL = RESOURCES["flnet.io/Tool"]
TOOL_VERSION = RESOURCES["flnet.io/ToolVersion"]
RUN = RESOURCES["flnet.io/Run"]
ARTIFACT = RESOURCES["flnet.io/Artifact"]
UPLOAD = RESOURCES["flnet.io/Upload"]
ORCHESTRATOR = RESOURCES["flnet.io/Orchestrator"]
