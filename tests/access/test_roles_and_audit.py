"""Roles map to scopes by configuration (AuthSettings.role_scopes): an auditor reads
everything of its tenant and changes nothing; the audit log records every guarded call
(who, what, when, result) and shows it to auditors and administrators of the tenant only,
without ever a token."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import audit_service_pb2 as au
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.control.app import ControlApp
from flnet.control.schema import audit_events
from tests.conftest import FIXTURES, TENANT, Clients, clients_for, request_id
from tests.control.hand_engine import dev_run
from tests.identity import IDENTITY
from tests.status import code_of, drain

NOOP = FIXTURES / "tools" / "noop"


def as_role(control: ControlApp, subject: str, role: str, tenant: str = "default") -> Clients:
    """A user whose token carries only a role: its scopes come from the role map."""
    token = IDENTITY.token(subject=subject, tenant=tenant, roles=[role], scopes=())
    return clients_for(f"127.0.0.1:{control.port}", token)


async def test_an_auditor_reads_everything_and_changes_nothing(
    control: ControlApp, api: Clients
) -> None:
    version = await api.register(NOOP)
    artifact = await api.upload(b"a\n1\n")
    run, _ = await dev_run(api, version.name, artifact)
    auditor = as_role(control, "audrey", "auditor")
    reads: dict[str, Awaitable[Any]] = {
        "GetRun": auditor.runs.GetRun(rs.GetRunRequest(name=run.name)),
        "ListRuns": auditor.runs.ListRuns(rs.ListRunsRequest(parent=TENANT)),
        "ListRunEvents": auditor.runs.ListRunEvents(rs.ListRunEventsRequest(parent=run.name)),
        "ListTools": auditor.tools.ListTools(ts.ListToolsRequest(parent=TENANT)),
        "GetToolVersion": auditor.tools.GetToolVersion(ts.GetToolVersionRequest(name=version.name)),
        "ListArtifacts": auditor.artifacts.ListArtifacts(asv.ListArtifactsRequest(parent=TENANT)),
        "DownloadArtifact": drain(
            auditor.artifacts.DownloadArtifact(asv.DownloadArtifactRequest(name=artifact))
        ),
        "ListAuditEvents": auditor.audit.ListAuditEvents(au.ListAuditEventsRequest(parent=TENANT)),
    }
    writes: dict[str, Awaitable[Any]] = {
        "CreateRun": auditor.runs.CreateRun(
            rs.CreateRunRequest(parent=TENANT, request_id=request_id(), run=run)
        ),
        "CancelRun": auditor.runs.CancelRun(rs.CancelRunRequest(name=run.name)),
        "ReproduceRun": auditor.runs.ReproduceRun(
            rs.ReproduceRunRequest(name=run.name, request_id=request_id())
        ),
        "StartDevTest": auditor.runs.StartDevTest(rs.StartDevTestRequest(name=run.name)),
        "CreateToolVersion": auditor.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(parent=f"{TENANT}/tools/x", tool_version=version)
        ),
        "StartUpload": auditor.artifacts.StartUpload(asv.StartUploadRequest(parent=TENANT)),
    }
    assert {k: await code_of(c) for k, c in reads.items()} == dict.fromkeys(
        reads, grpc.StatusCode.OK
    )
    assert {k: await code_of(c) for k, c in writes.items()} == dict.fromkeys(
        writes, grpc.StatusCode.PERMISSION_DENIED
    )
    await auditor.channel.close()
    assert (await api.runs.GetRun(rs.GetRunRequest(name=run.name))).run.state == run.state


async def test_the_audit_log_is_for_auditors_and_administrators(
    control: ControlApp, api: Clients
) -> None:
    request = au.ListAuditEventsRequest(parent=TENANT)
    assert await code_of(api.audit.ListAuditEvents(request)) == grpc.StatusCode.PERMISSION_DENIED
    for role in ("auditor", "admin"):
        user = as_role(control, f"a-{role}", role)
        assert await code_of(user.audit.ListAuditEvents(request)) == grpc.StatusCode.OK
        await user.channel.close()


async def test_every_call_is_audited_without_tokens(control: ControlApp, api: Clients) -> None:
    version = await api.register(NOOP)
    run, credential = await dev_run(api, version.name, await api.upload(b"a\n1\n"))
    await api.runs.GetRun(rs.GetRunRequest(name=run.name))
    missing = f"{TENANT}/runs/nosuchrun"
    assert await code_of(api.runs.GetRun(rs.GetRunRequest(name=missing))) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert await code_of(api.audit.ListAuditEvents(au.ListAuditEventsRequest(parent=TENANT))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    intruder_token = IDENTITY.token(subject="mallory", tenant="globex")
    intruder = clients_for(f"127.0.0.1:{control.port}", intruder_token)
    assert await code_of(intruder.runs.GetRun(rs.GetRunRequest(name=run.name))) == (
        grpc.StatusCode.NOT_FOUND
    )
    await intruder.channel.close()
    forged = IDENTITY.token(issuer="https://elsewhere.example")
    stranger = clients_for(f"127.0.0.1:{control.port}", forged)
    assert await code_of(stranger.runs.GetRun(rs.GetRunRequest(name=run.name))) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    await stranger.channel.close()

    auditor = as_role(control, "audrey", "auditor")
    await control.audit.flush()
    events = list(
        (
            await auditor.audit.ListAuditEvents(
                au.ListAuditEventsRequest(parent=TENANT, subject="alice")
            )
        ).events
    )
    seen = [(e.method.rsplit("/", 1)[1], e.resource, e.code, e.reason) for e in events]
    assert seen[:3] == [  # newest first
        ("ListAuditEvents", TENANT, "PERMISSION_DENIED", "SCOPE_MISSING"),
        ("GetRun", missing, "NOT_FOUND", "NOT_FOUND"),
        ("GetRun", run.name, "OK", ""),
    ]
    assert {"CreateRun", "UploadInput", "CreateToolVersion"} <= {s[0] for s in seen}
    created = next(e for e in events if e.method.endswith("/CreateRun"))
    assert (created.tenant, created.client_id, created.audience) == ("default", "flnet-cli", "user")
    assert created.resource == run.name  # the run it made
    uploaded = next(e for e in events if e.method.endswith("/UploadInput"))
    assert (uploaded.resource, uploaded.code) == (TENANT, "OK")  # named by the stream's handler
    assert created.time.ToMicroseconds() > 0 and created.duration.ToNanoseconds() > 0
    # The intruder's attempt is in the intruder's tenant's log, not in ours.
    globex = await control.audit.list("globex")
    assert [(r.subject, r.resource, r.code) for r in globex] == [("mallory", run.name, "NOT_FOUND")]
    # The stranger's credential proved nothing: recorded for operators under no tenant.
    [unknown] = await control.audit.list("")
    assert (unknown.subject, unknown.code, unknown.reason) == (
        "", "UNAUTHENTICATED", "TOKEN_ISSUER_INVALID",
    )  # fmt: skip
    await auditor.channel.close()

    async with control.engine.connect() as conn:
        rows = (await conn.execute(select(audit_events))).all()
    stored = repr(rows)
    for secret in (intruder_token, forged, credential):
        assert secret not in stored
        assert secret.split(".")[2] not in stored  # not even a signature
    assert len(rows) >= 8


@pytest.mark.parametrize("role", ["data-scientist", "nobody"])
async def test_roles_grant_only_their_scopes(control: ControlApp, role: str) -> None:
    user = as_role(control, "bob", role)
    expected = grpc.StatusCode.OK if role == "data-scientist" else grpc.StatusCode.PERMISSION_DENIED
    assert await code_of(user.runs.ListRuns(rs.ListRunsRequest(parent=TENANT))) == expected
    await user.channel.close()
