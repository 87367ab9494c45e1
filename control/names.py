"""Resource names (AIP-122): parse and format, with errors that name the offending field.

The grammar is the contracts' (flnet.resource_names, derived from the resource descriptors
in proto/); this module adds what the control plane does with a name: the field an invalid
one came in, and the tenant check of control.identity."""

from __future__ import annotations

import re
from typing import NamedTuple

from flnet import resource_names
from flnet.control.identity import check_visible
from flnet.errors import InvalidArgument
from flnet.resource_names import ResourceType

# Whole names (anchored at both ends, so `.match` is a full match), one group per variable.
TENANT_RE = resource_names.TENANT.regex
TOOL_RE = resource_names.TOOL.regex
TOOL_VERSION_RE = resource_names.TOOL_VERSION.regex
RUN_RE = resource_names.RUN.regex
ARTIFACT_RE = resource_names.ARTIFACT.regex
UPLOAD_RE = resource_names.UPLOAD.regex
# A whole tool version id, e.g. "1.0.0".
VERSION_RE = resource_names.TOOL_VERSION.id_rule


class ToolVersionName(NamedTuple):
    tenant: str
    tool: str
    version: str

    def __str__(self) -> str:
        return resource_names.TOOL_VERSION.format(*self)


def _match(resource: ResourceType, value: str, field: str) -> re.Match[str]:
    """The parts of a valid name of a tenant the caller may see (control.identity)."""
    m = resource.regex.fullmatch(value)
    if m is None:
        form = resource.pattern
        raise InvalidArgument(
            f"{field}: {value!r} is not a valid name; expected {form}",
            violations=[(field, f"expected {form}")],
        )
    check_visible(m["tenant"], resource.kind, value)
    return m


def parse_tenant(value: str, field: str = "parent") -> str:
    return _match(resource_names.TENANT, value, field)["tenant"]


def parse_tool(value: str, field: str = "parent") -> tuple[str, str]:
    m = _match(resource_names.TOOL, value, field)
    return m["tenant"], m["tool"]


def parse_tool_version(value: str, field: str = "name") -> ToolVersionName:
    m = _match(resource_names.TOOL_VERSION, value, field)
    return ToolVersionName(m["tenant"], m["tool"], m["version"])


def parse_run(value: str, field: str = "name") -> tuple[str, str]:
    m = _match(resource_names.RUN, value, field)
    return m["tenant"], m["run"]


def parse_artifact(value: str, field: str = "name") -> tuple[str, str]:
    m = _match(resource_names.ARTIFACT, value, field)
    return m["tenant"], m["artifact"]


def parse_upload(value: str, field: str = "name") -> tuple[str, str]:
    m = _match(resource_names.UPLOAD, value, field)
    return m["tenant"], m["upload"]


def tool_name(tenant: str, tool: str) -> str:
    return resource_names.TOOL.format(tenant, tool)


def run_name(tenant: str, run: str) -> str:
    return resource_names.RUN.format(tenant, run)


def artifact_name(tenant: str, artifact: str) -> str:
    return resource_names.ARTIFACT.format(tenant, artifact)


def upload_name(tenant: str, upload: str) -> str:
    return resource_names.UPLOAD.format(tenant, upload)
