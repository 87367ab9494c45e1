"""Resource names (AIP-122): parse and format, with errors that name the offending field."""

from __future__ import annotations

import re
from typing import NamedTuple

from flnet.control.identity import check_visible
from flnet.errors import InvalidArgument

_ID = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_VERSION = r"[a-z0-9][a-z0-9.+-]{0,62}"
TENANT_RE = re.compile(rf"^tenants/(?P<tenant>{_ID})$")
TOOL_RE = re.compile(rf"^tenants/(?P<tenant>{_ID})/tools/(?P<tool>{_ID})$")
TOOL_VERSION_RE = re.compile(
    rf"^tenants/(?P<tenant>{_ID})/tools/(?P<tool>{_ID})/versions/(?P<version>{_VERSION})$"
)
RUN_RE = re.compile(rf"^tenants/(?P<tenant>{_ID})/runs/(?P<run>{_ID})$")
ARTIFACT_RE = re.compile(rf"^tenants/(?P<tenant>{_ID})/artifacts/(?P<artifact>{_ID})$")
UPLOAD_RE = re.compile(rf"^tenants/(?P<tenant>{_ID})/uploads/(?P<upload>{_ID})$")
ID_RE = re.compile(rf"^{_ID}$")
VERSION_RE = re.compile(rf"^{_VERSION}$")


class ToolVersionName(NamedTuple):
    tenant: str
    tool: str
    version: str

    def __str__(self) -> str:
        return f"tenants/{self.tenant}/tools/{self.tool}/versions/{self.version}"


# What each name pattern names, for "{kind} {name} does not exist".
_KINDS = {
    TENANT_RE: "tenant",
    TOOL_RE: "tool",
    TOOL_VERSION_RE: "tool version",
    RUN_RE: "run",
    ARTIFACT_RE: "artifact",
    UPLOAD_RE: "upload",
}


def _match(pattern: re.Pattern[str], value: str, field: str, form: str) -> re.Match[str]:
    """The parts of a valid name of a tenant the caller may see (control.identity)."""
    m = pattern.match(value)
    if m is None:
        raise InvalidArgument(
            f"{field}: {value!r} is not a valid name; expected {form}",
            violations=[(field, f"expected {form}")],
        )
    check_visible(m["tenant"], _KINDS[pattern], value)
    return m


def parse_tenant(value: str, field: str = "parent") -> str:
    return _match(TENANT_RE, value, field, "tenants/{tenant}")["tenant"]


def parse_tool(value: str, field: str = "parent") -> tuple[str, str]:
    m = _match(TOOL_RE, value, field, "tenants/{tenant}/tools/{tool}")
    return m["tenant"], m["tool"]


def parse_tool_version(value: str, field: str = "name") -> ToolVersionName:
    m = _match(TOOL_VERSION_RE, value, field, "tenants/{tenant}/tools/{tool}/versions/{version}")
    return ToolVersionName(m["tenant"], m["tool"], m["version"])


def parse_run(value: str, field: str = "name") -> tuple[str, str]:
    m = _match(RUN_RE, value, field, "tenants/{tenant}/runs/{run}")
    return m["tenant"], m["run"]


def parse_artifact(value: str, field: str = "name") -> tuple[str, str]:
    m = _match(ARTIFACT_RE, value, field, "tenants/{tenant}/artifacts/{artifact}")
    return m["tenant"], m["artifact"]


def parse_upload(value: str, field: str = "name") -> tuple[str, str]:
    m = _match(UPLOAD_RE, value, field, "tenants/{tenant}/uploads/{upload}")
    return m["tenant"], m["upload"]


def tool_name(tenant: str, tool: str) -> str:
    return f"tenants/{tenant}/tools/{tool}"


def run_name(tenant: str, run: str) -> str:
    return f"tenants/{tenant}/runs/{run}"


def artifact_name(tenant: str, artifact: str) -> str:
    return f"tenants/{tenant}/artifacts/{artifact}"


def upload_name(tenant: str, upload: str) -> str:
    return f"tenants/{tenant}/uploads/{upload}"
