"""The grammar of resource names (flnet.resource_names) is the one the contracts declare:
every resource descriptor in proto/ is in it, each derived pattern matches exactly the names
its declaration describes, and declarations that make no grammar are refused."""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest
from google.protobuf import descriptor

import flnet.api
from flnet import resource_names
from flnet.api.common.v1 import resource_pb2
from flnet.resource_names import RESOURCES, ResourceType, declarations, derive

# A valid id of each variable; a new resource must bring one (test_every_variable_has_a_sample).
SAMPLE_IDS = {
    "tenant": "acme",
    "tool": "csv-stats",
    "version": "1.0.0+build.7",
    "run": "0f3a9c1e2b7d4a5f6c8e",
    "artifact": "a-1",
    "upload": "u1",
    "orchestrator": "gpu-01",
}
# Ids no declared rule admits: empty, a path, dot names, spaces, upper case, "_" (the
# orchestrator's work dirs "<tenant>_<run>" rely on it for tenants), non-ASCII, 64 characters,
# a trailing newline (which `$` would let through).
INVALID_IDS = ["", "a/b", "/", ".", "..", " a", "a b", "A", "aB", "a_b", "é", "a" * 64, "a\n"]


def _all_contract_files() -> list[descriptor.FileDescriptor]:
    """The file descriptor of every generated module of the contracts."""
    files = []
    for info in pkgutil.walk_packages(flnet.api.__path__, "flnet.api."):
        if info.name.endswith("_pb2"):
            files.append(importlib.import_module(info.name).DESCRIPTOR)
    assert files
    return files


def _declared() -> list[resource_pb2.ResourceDescriptor]:
    return declarations(_all_contract_files())


def _sample_name(resource: ResourceType, **override: str) -> str:
    return resource.format(*(override.get(v, SAMPLE_IDS[v]) for v in resource.variables))


def test_every_declared_resource_is_in_the_grammar() -> None:
    declared = _declared()
    assert sorted(d.type for d in declared) == sorted(RESOURCES)
    assert sorted(d.type for d in declarations()) == sorted(RESOURCES)


def test_the_resources_the_components_name() -> None:
    assert {r.pattern for r in RESOURCES.values()} == {
        "tenants/{tenant}",
        "tenants/{tenant}/tools/{tool}",
        "tenants/{tenant}/tools/{tool}/versions/{version}",
        "tenants/{tenant}/runs/{run}",
        "tenants/{tenant}/artifacts/{artifact}",
        "orchestrators/{orchestrator}",
        "tenants/{tenant}/uploads/{upload}",
    }
    assert resource_names.RUN.type == "flnet.io/Run"
    assert resource_names.TOOL_VERSION.kind == "tool version"
    assert resource_names.TENANT.kind == "tenant"


@pytest.mark.parametrize("declared", _declared(), ids=lambda d: d.type)
def test_the_derived_pattern_is_the_declared_one(declared: resource_pb2.ResourceDescriptor) -> None:
    resource = RESOURCES[declared.type]
    assert [resource.pattern] == list(declared.pattern)
    assert resource.singular == declared.singular and resource.plural == declared.plural
    assert resource.variables == tuple(re.findall(r"\{(\w+)\}", declared.pattern[0]))
    # The rule of its own id is the declared one, and holds for its variable everywhere.
    assert resource.id_rule.pattern == rf"\A(?:{declared.id_regex})\Z"
    assert resource_names.ID_RULES[resource.variables[-1]] is resource.id_rule

    # A name made of valid ids parses back into them, whichever way it is matched.
    name = _sample_name(resource)
    assert name == re.sub(r"\{(\w+)\}", lambda m: SAMPLE_IDS[m[1]], declared.pattern[0])
    ids = tuple(SAMPLE_IDS[v] for v in resource.variables)
    assert resource.parse(name) == ids
    match = resource.regex.match(name)
    assert match is not None and tuple(match[v] for v in resource.variables) == ids
    assert resource.format(*ids) == name


@pytest.mark.parametrize("declared", _declared(), ids=lambda d: d.type)
def test_the_derived_pattern_refuses_what_the_declaration_does_not_describe(
    declared: resource_pb2.ResourceDescriptor,
) -> None:
    resource = RESOURCES[declared.type]
    name = _sample_name(resource)
    segments = name.split("/")
    refused = [
        name + "/",
        name + "\n",
        "/" + name,
        name + "/x",
        name + "/x/y",
        "/".join(segments[:-1]),
        "/".join(segments[:-2]),
    ]
    # Each segment, one at a time, in upper case; each collection id misspelt.
    for i, segment in enumerate(segments):
        refused.append("/".join([*segments[:i], segment.upper(), *segments[i + 1 :]]))
        if i % 2 == 0:
            refused.append("/".join([*segments[:i], segment + "x", *segments[i + 1 :]]))
    # Each variable, one at a time, with an id its rule refuses.
    for variable in resource.variables:
        refused += [_sample_name(resource, **{variable: bad}) for bad in INVALID_IDS]
    for bad in refused:
        assert resource.parse(bad) is None, bad
        assert resource.regex.match(bad) is None, bad
        assert resource.regex.search(bad) is None, bad


@pytest.mark.parametrize("variable", sorted(resource_names.ID_RULES))
def test_every_variable_has_a_sample_and_its_rule_refuses_paths(variable: str) -> None:
    rule = resource_names.ID_RULES[variable]
    assert rule.fullmatch(SAMPLE_IDS[variable])
    for bad in INVALID_IDS:
        assert not rule.match(bad), bad


def test_declared_ids_follow_the_control_planes_rules() -> None:
    """The rules the control plane enforced before they moved into the contracts."""
    label = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    version = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,62}$")
    samples = ["a", "0", "a-b", "ab", "a" * 63, "a" * 64, "-a", "a-", "a.b", "a+b", "1.0.0+b.7"]
    for variable, rule in resource_names.ID_RULES.items():
        old = version if variable == "version" else label
        for sample in samples:
            assert bool(rule.fullmatch(sample)) == bool(old.match(sample)), (variable, sample)


def test_format_takes_one_id_per_variable() -> None:
    assert resource_names.RUN.format("acme", "r1") == "tenants/acme/runs/r1"
    assert resource_names.TOOL_VERSION.format("a", "t", "1.0") == "tenants/a/tools/t/versions/1.0"
    with pytest.raises(TypeError, match="takes 2 ids, not 1"):
        resource_names.RUN.format("acme")


def _d(type_: str, *patterns: str, id_regex: str = "[a-z]+") -> resource_pb2.ResourceDescriptor:
    singular = type_.rpartition("/")[2].lower()
    return resource_pb2.ResourceDescriptor(
        type=type_, pattern=patterns, singular=singular, plural=singular + "s", id_regex=id_regex
    )


TENANT = _d("x.io/Tenant", "tenants/{tenant}")


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ([_d("x.io/Tenant")], "declares 0 patterns, not 1"),
        ([_d("x.io/Tenant", "tenants/{tenant}", "orgs/{tenant}")], "declares 2 patterns"),
        ([_d("x.io/Tenant", "tenants")], "is not collection/{variable} pairs"),
        ([_d("x.io/Tenant", "{tenant}/tenants")], "is not collection/{variable} pairs"),
        ([_d("x.io/Tenant", "tenants/tenant")], "is not collection/{variable} pairs"),
        ([_d("x.io/Tenant", "Tenants/{tenant}")], "is not collection/{variable} pairs"),
        ([_d("x.io/Tenant", "tenants/{Tenant}")], "is not collection/{variable} pairs"),
        ([_d("x.io/Tenant", "tenants/{t}/runs/{t}")], "is not collection/{variable} pairs"),
        ([_d("x.io/Tenant", "tenants//{tenant}")], "is not collection/{variable} pairs"),
        ([TENANT, _d("x.io/Org", "orgs/{tenant}")], "the rule of {tenant} is declared twice"),
        ([_d("x.io/Run", "tenants/{tenant}/runs/{run}")], "no resource declares the rule of"),
        (
            [TENANT, _d("x.io/Version", "tenants/{tenant}/tools/{tool}/versions/{version}")],
            "no resource declares the rule of {tool}",
        ),
        (
            [
                TENANT,
                _d("x.io/Tool", "tools/{tool}"),
                _d("x.io/V", "tenants/{tenant}/tools/{tool}/v/{v}"),
            ],
            "its parent 'tenants/{tenant}/tools/{tool}' is not a declared resource",
        ),
        ([_d("x.io/Tenant", "tenants/{tenant}", id_regex="[a-z")], "is invalid"),
        ([_d("x.io/Tenant", "tenants/{tenant}", id_regex="")], "is empty or has named groups"),
        ([_d("x.io/Tenant", "tenants/{tenant}", id_regex="(?P<x>a)")], "has named groups"),
        ([TENANT, _d("x.io/Tenant", "orgs/{org}")], "a type declared twice"),
        ([resource_pb2.ResourceDescriptor(pattern=["a/{a}"], id_regex="a")], "no type or singular"),
    ],
)
def test_declarations_that_make_no_grammar_are_refused(
    declared: list[resource_pb2.ResourceDescriptor], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        derive(declared)


def test_a_well_formed_declaration_set_derives() -> None:
    types = derive([TENANT, _d("x.io/Run", "tenants/{tenant}/runs/{run}", id_regex="r[0-9]+")])
    assert types["x.io/Run"].parse("tenants/ab/runs/r12") == ("ab", "r12")
    assert types["x.io/Run"].parse("tenants/ab/runs/x12") is None
    assert types["x.io/Run"].parse("tenants/a1/runs/r12") is None  # {tenant} obeys the tenant's
