"""MethodPolicy read from the contracts, bearer parsing, the principal context, settings."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

import flnet.api
from flnet.errors import PermissionDenied, Unauthenticated
from flnet.server.auth import (
    PUBLIC_SERVICES,
    AuthInterceptor,
    AuthSettings,
    MethodPolicy,
    Principal,
    Reason,
    Requirement,
    StaticKeys,
    bearer_token,
    current_principal,
    require_principal,
    use_principal,
)
from flnet.server.auth.settings import parse_role_scopes


def all_flnet_services() -> list[str]:
    """Every service of every contract in proto/ (the generated modules)."""
    names: list[str] = []
    for module in pkgutil.walk_packages(flnet.api.__path__, "flnet.api."):
        if module.name.endswith("_pb2"):
            file = importlib.import_module(module.name).DESCRIPTOR
            names += [s.full_name for s in file.services_by_name.values()]
    return sorted(names)


def test_every_rpc_of_every_contract_declares_its_authorization() -> None:
    services = all_flnet_services()
    assert len(services) == 7
    policy = MethodPolicy.from_services(services)
    undeclared = [m for m, r in policy.methods.items() if r is None]
    assert undeclared == []
    assert policy.audiences == {"user", "runtime", "orchestrator"}
    assert policy.requirement("/flnet.api.control.v1.RunService/GetRun") == Requirement(
        "user", frozenset({"runs:read"})
    )
    assert policy.requirement("/flnet.api.runtime.v1.RuntimeService/Connect") == Requirement(
        "runtime", frozenset({"runtime"})
    )
    assert policy.requirement("/flnet.api.orchestrator.v1.SessionService/Attach") == Requirement(
        "orchestrator", frozenset({"orchestrator"})
    )
    assert policy.requirement(
        "/flnet.api.control.v1.FleetService/UpdateTenantQuota"
    ) == Requirement("user", frozenset({"admin"}))


def test_public_and_undeclared_methods() -> None:
    policy = MethodPolicy.from_services(
        ["flnet.api.control.v1.RunService", *sorted(PUBLIC_SERVICES)]
    )
    assert policy.is_public("/grpc.health.v1.Health/Check")
    assert policy.is_public("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert not policy.is_public("/flnet.api.control.v1.RunService/GetRun")
    for method in ("/flnet.api.control.v1.ToolService/GetTool", "/x.Y/Z", "", "/"):
        assert policy.requirement(method) is None
        with pytest.raises(PermissionDenied) as raised:
            policy.declared(method)
        assert raised.value.reason == Reason.METHOD_UNDECLARED
    with pytest.raises(ValueError):
        MethodPolicy.from_services(["flnet.api.control.v1.NoSuchService"])


def test_a_method_without_the_option_is_undeclared() -> None:
    pool = descriptor_pool.DescriptorPool()
    file = descriptor_pb2.FileDescriptorProto(name="probe.proto", package="probe.v1")
    file.message_type.add(name="Empty")
    service = file.service.add(name="Probe")
    service.method.add(name="Call", input_type=".probe.v1.Empty", output_type=".probe.v1.Empty")
    pool.Add(file)
    policy = MethodPolicy.from_services(["probe.v1.Probe"], pool=pool)
    assert policy.methods == {"/probe.v1.Probe/Call": None}
    assert policy.audiences == frozenset()


def test_scopes_and_admin() -> None:
    needed = Requirement("user", frozenset({"runs:read", "runs:write"}))

    def principal(*scopes: str) -> Principal:
        return Principal(subject="s", audience="user", issuer="i", scopes=frozenset(scopes))

    policy = MethodPolicy({})
    policy.check_scopes(needed, principal("runs:read", "runs:write", "tools:read"))
    policy.check_scopes(needed, principal("admin"))
    policy.check_scopes(Requirement("user"), principal())
    with pytest.raises(PermissionDenied) as raised:
        policy.check_scopes(needed, principal("runs:read"))
    assert raised.value.reason == Reason.SCOPE_MISSING
    assert raised.value.metadata == {"missing_scopes": "runs:write"}
    with pytest.raises(PermissionDenied):
        MethodPolicy({}, admin_scope=None).check_scopes(needed, principal("admin"))


def test_bearer_metadata() -> None:
    assert bearer_token([("authorization", "Bearer abc.def.ghi")]) == "abc.def.ghi"
    assert bearer_token([("x", "y"), ("authorization", "bearer  abc ")]) == "abc"
    with pytest.raises(Unauthenticated) as raised:
        bearer_token([("x-authorization", "Bearer abc")])
    assert raised.value.reason == Reason.TOKEN_MISSING
    for value in ("Bearer", "Bearer ", "Basic abc", "Bearer a b", "abc", b"Bearer abc"):
        with pytest.raises(Unauthenticated) as raised:
            bearer_token([("authorization", value)])
        assert raised.value.reason == Reason.TOKEN_MALFORMED
    with pytest.raises(Unauthenticated) as raised:
        bearer_token([("authorization", "Bearer a"), ("authorization", "Bearer b")])
    assert raised.value.reason == Reason.TOKEN_MALFORMED


def test_principal_context() -> None:
    assert current_principal() is None
    with pytest.raises(Unauthenticated):
        require_principal()
    p = Principal(subject="s", audience="user", issuer="i")
    with use_principal(p):
        assert require_principal() is p
    assert current_principal() is None


def test_an_interceptor_needs_a_validator_per_declared_audience() -> None:
    policy = MethodPolicy.from_services(all_flnet_services())
    settings = AuthSettings(issuer="https://login.example.com/realms/flnet")
    keys = StaticKeys({"keys": []})
    validators: dict[str, Any] = {"user": settings.validator("user", keys)}
    with pytest.raises(ValueError, match="orchestrator, runtime"):
        AuthInterceptor(policy, validators)
    auth = settings.interceptor(all_flnet_services(), keys=keys)
    assert set(auth.validators) == {"user", "runtime", "orchestrator"}


def test_settings_from_env() -> None:
    env = {
        "FLNET_OIDC_ISSUER": "https://login.example.com/realms/flnet",
        "FLNET_OIDC_AUDIENCE": "flnet-api, account",
        "FLNET_RUNTIME_AUDIENCE": "rt",
        "FLNET_OIDC_ALGORITHMS": "ES256",
        "FLNET_OIDC_LEEWAY": "10",
        "FLNET_OIDC_TENANT_CLAIM": "org",
        "FLNET_OIDC_ROLES_CLAIM": "realm_access.roles,roles",
        "FLNET_OIDC_ROLE_SCOPES": '{"viewer": ["runs:read"], "op": "runs:read runs:write"}',
        "FLNET_OIDC_ADMIN_SCOPE": "",
        "FLNET_OIDC_REFRESH_INTERVAL": "30",
    }
    s = AuthSettings.from_env(env)
    assert s.audiences == {
        "user": ("flnet-api", "account"),
        "runtime": ("rt",),
        "orchestrator": ("flnet-orchestrator",),
    }
    assert (s.algorithms, s.leeway, s.tenant_claim) == (("ES256",), 10.0, "org")
    assert s.roles_claims == ("realm_access.roles", "roles")
    assert s.role_scopes == {"viewer": ("runs:read",), "op": ("runs:read", "runs:write")}
    assert s.admin_scope is None
    assert s.min_refresh_interval == 30.0
    assert AuthSettings.from_env(env, leeway=5.0).leeway == 5.0
    user = s.validator("user", StaticKeys({"keys": []}))
    assert (user.require_tenant, user.audiences) == (True, ("flnet-api", "account"))
    assert not s.validator("runtime", StaticKeys({"keys": []})).require_tenant

    bad: list[dict[str, str]] = [
        {},
        {**env, "FLNET_OIDC_ISSUER": "http://login.example.com"},
        {**env, "FLNET_OIDC_ALGORITHMS": "HS256"},
        {**env, "FLNET_OIDC_ALGORITHMS": "none"},
        {**env, "FLNET_OIDC_LEEWAY": "soon"},
        {**env, "FLNET_OIDC_LEEWAY": "3600"},
        {**env, "FLNET_OIDC_ROLE_SCOPES": "viewer=runs:read"},
    ]
    for variables in bad:
        with pytest.raises(ValueError):
            AuthSettings.from_env(variables)
    assert AuthSettings.from_env(
        {**env, "FLNET_OIDC_ISSUER": "http://keycloak:8080/realms/f", "FLNET_OIDC_ALLOW_HTTP": "1"}
    ).allow_http
    with pytest.raises(ValueError):
        parse_role_scopes('{"viewer": [1]}')
