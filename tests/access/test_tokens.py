"""Every request is authenticated: against each kind of issuer (a minimal JWKS issuer,
FLNet's embedded one, the certified oidc-provider), a real control plane refuses each kind of
bad token with UNAUTHENTICATED, a valid token without the method's scope with
PERMISSION_DENIED, accepts rotated keys without a restart, and audits every call."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable

import grpc
import pytest

from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.toolspec import load_tool_spec
from tests.access.conftest import REFRESH_INTERVAL, Guarded
from tests.access.issuers import TrustedIssuer, forge, other_key, public_pem
from tests.auth.issuer import b64, bearer
from tests.conftest import FIXTURES, packed, upload_messages
from tests.status import reason

LIST_RUNS = "/flnet.api.control.v1.RunService/ListRuns"


def unsigned(issuer: TrustedIssuer) -> str:
    """`alg: none` with otherwise valid claims."""
    valid = forge(issuer).split(".")[1]
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{valid}."


def hs256_with_public_key(issuer: TrustedIssuer) -> str:
    """Key confusion: HS256 keyed with the issuer's public key (PEM) under its real kid."""
    kid = issuer.signing_key()[0]
    header = b64({"alg": "HS256", "typ": "JWT", "kid": kid})
    signing_input = f"{header}.{forge(issuer).split('.')[1]}"
    mac = hmac.new(public_pem(issuer), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def bad_tokens() -> dict[str, Callable[[TrustedIssuer], str | None]]:
    now = int(time.time())
    return {
        "missing": lambda i: None,
        "malformed": lambda i: "not-a-jwt",
        "alg none": unsigned,
        "HS256 with the public key": hs256_with_public_key,
        "wrong key": lambda i: forge(i, key=other_key(i)),
        "wrong issuer": lambda i: forge(i, iss="http://127.0.0.1:9/elsewhere"),
        "wrong audience": lambda i: forge(i, aud="flnet-orchestrator"),
        "expired": lambda i: forge(i, iat=now - 3600, nbf=now - 3600, exp=now - 120),
        "not yet valid": lambda i: forge(i, iat=now, nbf=now + 600, exp=now + 1200),
    }


async def list_runs(guarded: Guarded, token: str | None) -> grpc.StatusCode:
    metadata = bearer(token) if token is not None else ()
    try:
        await guarded.runs.ListRuns(rs.ListRunsRequest(parent="tenants/acme"), metadata=metadata)
    except grpc.aio.AioRpcError as e:
        assert token is None or token not in (e.details() or ""), "the token was echoed"
        return e.code()
    return grpc.StatusCode.OK


async def test_bad_tokens_are_unauthenticated_and_audited(guarded: Guarded) -> None:
    issuer = guarded.issuer
    tokens = {case: make(issuer) for case, make in bad_tokens().items()}
    codes = {case: await list_runs(guarded, token) for case, token in tokens.items()}
    assert codes == dict.fromkeys(tokens, grpc.StatusCode.UNAUTHENTICATED)
    # A real token of the issuer, for another audience (the orchestrator's), is no better.
    assert await list_runs(guarded, await issuer.token("acme-service")) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    assert await list_runs(guarded, await issuer.token("acme-app")) == grpc.StatusCode.OK

    await guarded.app.audit.flush()
    refused = await guarded.app.audit.list("", method=LIST_RUNS)  # nobody's tenant
    assert [r.code for r in refused] == ["UNAUTHENTICATED"] * (len(tokens) + 1)
    assert {r.reason for r in refused} == {
        "TOKEN_MISSING", "TOKEN_MALFORMED", "TOKEN_INVALID", "TOKEN_ISSUER_INVALID",
        "TOKEN_AUDIENCE_INVALID", "TOKEN_EXPIRED", "TOKEN_NOT_YET_VALID",
    }  # fmt: skip
    assert all(r.subject == "" and r.resource == "tenants/acme" for r in refused)
    [accepted] = await guarded.app.audit.list("acme", method=LIST_RUNS)
    assert (accepted.subject, accepted.client_id, accepted.code) == ("acme-app", "acme-app", "OK")


async def test_a_valid_token_without_the_scope_is_permission_denied(guarded: Guarded) -> None:
    reader = bearer(await guarded.issuer.token("acme-reader"))  # runs:read only
    await guarded.runs.ListRuns(rs.ListRunsRequest(parent="tenants/acme"), metadata=reader)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await guarded.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(
                parent="tenants/acme/tools/t", tool_version=tp.ToolVersion(version="1.0.0")
            ),
            metadata=reader,
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason(e.value) == "SCOPE_MISSING"
    await guarded.app.audit.flush()
    [denied] = await guarded.app.audit.list("acme", code="PERMISSION_DENIED")
    assert (denied.subject, denied.method, denied.resource) == (
        "acme-reader",
        "/flnet.api.control.v1.ToolService/CreateToolVersion",
        "tenants/acme/tools/t",
    )


async def test_rotated_issuer_keys_are_accepted_without_restart(guarded: Guarded) -> None:
    issuer = guarded.issuer
    before = issuer.signing_key()[0]
    assert await list_runs(guarded, await issuer.token("acme-app")) == grpc.StatusCode.OK
    await issuer.rotate()
    assert issuer.signing_key()[0] != before
    await asyncio.sleep(REFRESH_INTERVAL)  # the key source refetches at most this often
    token = await issuer.token("acme-app")
    assert await list_runs(guarded, token) == grpc.StatusCode.OK


async def test_tenants_do_not_see_each_other(guarded: Guarded) -> None:
    acme = bearer(await guarded.issuer.token("acme-app"))
    globex = bearer(await guarded.issuer.token("globex-app"))
    noop = FIXTURES / "tools" / "noop"
    upload = upload_messages("tenants/acme", packed(noop))
    archive = (await guarded.artifacts.UploadInput(upload, metadata=acme)).artifact.name
    created = await guarded.tools.CreateToolVersion(
        ts.CreateToolVersionRequest(
            parent="tenants/acme/tools/secret",
            tool_version=load_tool_spec(noop).with_source(archive),
        ),
        metadata=acme,
    )
    name = created.tool_version.name
    await guarded.tools.GetToolVersion(ts.GetToolVersionRequest(name=name), metadata=acme)
    for call in (
        guarded.tools.GetToolVersion(ts.GetToolVersionRequest(name=name), metadata=globex),
        guarded.tools.ListTools(ts.ListToolsRequest(parent="tenants/acme"), metadata=globex),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    own = await guarded.tools.ListTools(
        ts.ListToolsRequest(parent="tenants/globex"), metadata=globex
    )
    assert list(own.tools) == []
