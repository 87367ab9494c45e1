"""Tool version contracts: validation and the digest that makes versions immutable."""

from __future__ import annotations

import hashlib
import re

from flnet.api.control.v1 import tool_pb2 as tp
from flnet.control import names
from flnet.control.media_types import media_type_problem
from flnet.control.validation import check_schema, struct_to_dict
from flnet.errors import InvalidArgument
from flnet.server.ranges import duration_violation

# \Z, not $: "$" would accept a value ending in a newline.
IO_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}\Z")
ENTRYPOINT = re.compile(r"[A-Za-z0-9_./-]+\.py:[A-Za-z_][A-Za-z0-9_]*\Z")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
# The length of the column a version's kind is stored in.
KIND_MAX_CHARS = 63


def contract_sha256(version: tp.ToolVersion) -> str:
    """Digest of everything that defines a version's behaviour (not its name or times)."""
    contract = tp.ToolVersion()
    contract.CopyFrom(version)
    contract.ClearField("name")
    contract.ClearField("create_time")
    contract.ClearField("contract_sha256")
    return hashlib.sha256(contract.SerializeToString(deterministic=True)).hexdigest()


def prepare_tool_version(tenant: str, tool: str, version: tp.ToolVersion) -> tp.ToolVersion:
    """Validates a submitted version and returns it named, digested and ready to store."""
    v = tp.ToolVersion()
    v.CopyFrom(version)
    violations: list[tuple[str, str]] = []
    f = "tool_version"
    if not names.VERSION_RE.match(v.version):
        violations.append((f"{f}.version", "must match [a-z0-9][a-z0-9.+-]{0,62}"))
    # Stored in columns of their own: as long as those hold, without NUL (PostgreSQL refuses it).
    if len(v.kind) > KIND_MAX_CHARS or "\x00" in v.kind:
        violations.append((f"{f}.kind", f"at most {KIND_MAX_CHARS} characters, without NUL"))
    if "\x00" in v.description:
        violations.append((f"{f}.description", "must not contain NUL"))
    if v.HasField("config_schema"):
        schema_field = f"{f}.config_schema"
        check_schema(struct_to_dict(v.config_schema, schema_field), schema_field)
    else:
        violations.append((f"{f}.config_schema", "a JSON Schema is required"))
    for kind, specs in (("inputs", v.inputs), ("outputs", v.outputs)):
        seen: set[str] = set()
        for i, spec in enumerate(specs):
            if not IO_NAME.match(spec.name):
                violations.append((f"{f}.{kind}[{i}].name", "must match [a-z][a-z0-9_]{0,62}"))
            elif spec.name in seen:
                violations.append((f"{f}.{kind}[{i}].name", f"'{spec.name}' is declared twice"))
            seen.add(spec.name)
            if spec.max_size_bytes < 0:
                violations.append((f"{f}.{kind}[{i}].max_size_bytes", "must not be negative"))
            if problem := media_type_problem(spec.media_type):
                violations.append((f"{f}.{kind}[{i}].media_type", problem))
    which = v.WhichOneof("artifact")
    if which == "image":
        if not DIGEST.match(v.image.digest):
            violations.append((f"{f}.image.digest", "must be sha256:<64 hex digits>"))
        if problem := entrypoint_problem(v.image.entrypoint):
            violations.append((f"{f}.image.entrypoint", problem))
    elif which == "source":
        v.source.ClearField("sha256")  # output only: the archive's, set when it is admitted
        archive = names.ARTIFACT_RE.match(v.source.archive)
        if archive is None or archive["tenant"] != tenant:
            violations.append(
                (f"{f}.source.archive", f"must be an artifact of tenants/{tenant}, uploaded first")
            )
        if problem := entrypoint_problem(v.source.entrypoint):
            violations.append((f"{f}.source.entrypoint", problem))
    elif which == "local_source":
        violations.append(
            (
                f"{f}.local_source",
                "the control plane reads no host path: upload the tool's files as an archive "
                "and name it in source (flnet tool register DIR does both)",
            )
        )
    else:
        violations.append((f"{f}.artifact", "an image or a source archive is required"))
    for field in ("memory_bytes", "cpu_millis", "pids", "scratch_bytes"):
        if getattr(v.resources, field) < 0:
            violations.append((f"{f}.resources.{field}", "must not be negative"))
    if len(v.resources.required_labels) > MAX_REQUIRED_LABELS:
        violations.append(
            (f"{f}.resources.required_labels", f"at most {MAX_REQUIRED_LABELS} labels")
        )
    for i, label in enumerate(v.resources.required_labels[:MAX_REQUIRED_LABELS]):
        if not REQUIRED_LABEL.fullmatch(label):
            violations.append(
                (
                    f"{f}.resources.required_labels[{i}]",
                    "'key' or 'key=value', each of a-z, 0-9, '.', '_', '-' (at most 63)",
                )
            )
    for timeout, value in v.timeouts.ListFields():  # durations, all of them
        if violation := duration_violation(value, f"{f}.timeouts.{timeout.name}"):
            violations.append(violation)
    if violations:
        raise InvalidArgument(
            "invalid tool version: " + "; ".join(f"{a}: {b}" for a, b in violations[:5]),
            violations=violations,
        )
    v.name = f"{names.tool_name(tenant, tool)}/versions/{v.version}"
    v.ClearField("create_time")
    v.contract_sha256 = contract_sha256(v)
    return v


# A label an orchestrator must have: "gpu" or "site=eu" (control.fleet.scheduler).
REQUIRED_LABEL = re.compile(r"[a-z0-9._-]{1,63}(=[a-z0-9._-]{1,63})?")
MAX_REQUIRED_LABELS = 16


def entrypoint_problem(entrypoint: str) -> str | None:
    """What is wrong with "file.py:function", if anything: the file must lie inside the
    tool's files (a relative path without "." or ".." segments)."""
    if not ENTRYPOINT.match(entrypoint):
        return "must be 'file.py:function'"
    file = entrypoint.rpartition(":")[0]
    if file.startswith("/") or any(part in ("", ".", "..") for part in file.split("/")):
        return "the file must be a path inside the tool, without '.' or '..' segments"
    return None
