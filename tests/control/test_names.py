"""control.names: the contracts' grammar (flnet.resource_names) with the control plane's
errors: INVALID_ARGUMENT naming the field and the expected form, and NOT_FOUND for a name of a
tenant the caller may not see."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from flnet import resource_names
from flnet.control import names
from flnet.errors import InvalidArgument, NotFound
from flnet.server.auth import Principal, use_principal

PARSERS: list[tuple[Callable[..., object], str, str, str, object]] = [
    # parser, default field, valid name, expected form, what it returns
    (names.parse_tenant, "parent", "tenants/acme", "tenants/{tenant}", "acme"),
    (
        names.parse_tool,
        "parent",
        "tenants/acme/tools/csv-stats",
        "tenants/{tenant}/tools/{tool}",
        ("acme", "csv-stats"),
    ),
    (
        names.parse_tool_version,
        "name",
        "tenants/acme/tools/t/versions/1.0.0+b.7",
        "tenants/{tenant}/tools/{tool}/versions/{version}",
        ("acme", "t", "1.0.0+b.7"),
    ),
    (
        names.parse_run,
        "name",
        "tenants/acme/runs/r-1",
        "tenants/{tenant}/runs/{run}",
        ("acme", "r-1"),
    ),
    (
        names.parse_artifact,
        "name",
        "tenants/acme/artifacts/a1",
        "tenants/{tenant}/artifacts/{artifact}",
        ("acme", "a1"),
    ),
    (
        names.parse_upload,
        "name",
        "tenants/acme/uploads/u1",
        "tenants/{tenant}/uploads/{upload}",
        ("acme", "u1"),
    ),
]
IDS = [p[0].__name__ for p in PARSERS]


@pytest.mark.parametrize(("parse", "field", "valid", "form", "parsed"), PARSERS, ids=IDS)
def test_a_valid_name_parses(
    parse: Callable[..., object], field: str, valid: str, form: str, parsed: object
) -> None:
    assert parse(valid) == parsed
    assert parse(valid, "other.field") == parsed


@pytest.mark.parametrize(("parse", "field", "valid", "form", "parsed"), PARSERS, ids=IDS)
def test_an_invalid_name_names_its_field_and_the_expected_form(
    parse: Callable[..., object], field: str, valid: str, form: str, parsed: object
) -> None:
    bad = ["", "tenants/", "tenants/a_b", "x/acme", valid + "\n", valid + "/", valid.upper()]
    for value in bad:
        with pytest.raises(InvalidArgument) as e:
            parse(value)
        assert e.value.message == f"{field}: {value!r} is not a valid name; expected {form}"
        assert e.value.violations == [(field, f"expected {form}")]
        with pytest.raises(InvalidArgument) as e:
            parse(value, "run.inputs[0].artifact")
        assert e.value.violations == [("run.inputs[0].artifact", f"expected {form}")]
        assert e.value.message.startswith(f"run.inputs[0].artifact: {value!r} is not a valid")


@pytest.mark.parametrize(("parse", "field", "valid", "form", "parsed"), PARSERS, ids=IDS)
def test_a_name_of_another_tenant_does_not_exist_for_a_user(
    parse: Callable[..., object], field: str, valid: str, form: str, parsed: object
) -> None:
    kind = {"parse_tool_version": "tool version"}.get(parse.__name__, parse.__name__[6:])
    with use_principal(Principal(subject="s", audience="user", issuer="i", tenant="beta")):
        with pytest.raises(NotFound) as e:
            parse(valid)
        assert e.value.message == f"{kind} {valid} does not exist"
    with use_principal(Principal(subject="s", audience="user", issuer="i", tenant="acme")):
        assert parse(valid) == parsed


def test_names_are_formatted_as_the_contracts_declare() -> None:
    assert names.tool_name("acme", "t") == "tenants/acme/tools/t"
    assert names.run_name("acme", "r1") == "tenants/acme/runs/r1"
    assert names.artifact_name("acme", "a1") == "tenants/acme/artifacts/a1"
    assert names.upload_name("acme", "u1") == "tenants/acme/uploads/u1"
    assert str(names.ToolVersionName("acme", "t", "1.0")) == "tenants/acme/tools/t/versions/1.0"


def test_the_patterns_callers_match_with_are_the_contracts() -> None:
    assert names.TENANT_RE is resource_names.TENANT.regex
    assert names.TOOL_RE is resource_names.TOOL.regex
    assert names.TOOL_VERSION_RE is resource_names.TOOL_VERSION.regex
    assert names.RUN_RE is resource_names.RUN.regex
    assert names.ARTIFACT_RE is resource_names.ARTIFACT.regex
    assert names.UPLOAD_RE is resource_names.UPLOAD.regex
    # `.match` (what callers use) is a whole-name match, group names are the variables.
    m = names.ARTIFACT_RE.match("tenants/acme/artifacts/a1")
    assert m is not None and (m["tenant"], m["artifact"]) == ("acme", "a1")
    assert names.ARTIFACT_RE.match("tenants/acme/artifacts/a1/x") is None
    assert names.TOOL_RE.match("tenants/acme/tools/t/versions/1") is None
    assert names.RUN_RE.match("tenants/acme/runs/r1\n") is None
    assert names.VERSION_RE.match("1.0.0+build.7")
    for bad in ("", "1.0\n", "V1", "-1", "1_0", "1" * 64):
        assert not names.VERSION_RE.match(bad), bad
