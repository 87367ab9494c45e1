"""Tenants: a user sees its own tenant only. Another tenant's run, tool, artifact, upload,
event stream or audit log does not exist for it (NOT_FOUND, worded as for a name that exists
nowhere), whatever its scopes, and nothing of the other tenant changes."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc

from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import audit_service_pb2 as au
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.control.app import ControlApp
from flnet.structs import dict_to_struct
from tests.conftest import FIXTURES, TENANT, Clients, clients_for, request_id
from tests.control.hand_engine import dev_run
from tests.identity import IDENTITY
from tests.status import drain

NOOP = FIXTURES / "tools" / "noop"
CSV = b"a,b\n1,2\n"


async def code_and_message(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as e:
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""


async def test_another_tenant_sees_nothing_and_changes_nothing(
    control: ControlApp, api: Clients
) -> None:
    version = await api.register(NOOP)
    artifact = await api.upload(CSV)
    run, _ = await dev_run(api, version.name, artifact)
    upload = (
        await api.artifacts.StartUpload(asv.StartUploadRequest(parent=TENANT, filename="x.csv"))
    ).upload.name
    tool = version.name.rsplit("/versions/", 1)[0]
    # An administrator of tenant globex: every scope, in its own tenant.
    mallory = clients_for(
        f"127.0.0.1:{control.port}",
        IDENTITY.token(subject="mallory", tenant="globex", roles=["admin"], scopes=()),
    )
    m = mallory
    own_version = str(version.name).replace("tenants/default", "tenants/globex")
    calls: dict[str, Awaitable[Any]] = {
        "GetRun": m.runs.GetRun(rs.GetRunRequest(name=run.name)),
        "ListRuns": m.runs.ListRuns(rs.ListRunsRequest(parent=TENANT)),
        "WatchRun": drain(m.runs.WatchRun(rs.WatchRunRequest(name=run.name))),
        "ListRunEvents": m.runs.ListRunEvents(rs.ListRunEventsRequest(parent=run.name)),
        "CancelRun": m.runs.CancelRun(rs.CancelRunRequest(name=run.name, reason="mine now")),
        "ReproduceRun": m.runs.ReproduceRun(
            rs.ReproduceRunRequest(name=run.name, request_id=request_id())
        ),
        "UpdateDevConfig": m.runs.UpdateDevConfig(
            rs.UpdateDevConfigRequest(name=run.name, config=dict_to_struct({"rate": 0.1}))
        ),
        "StartDevTest": m.runs.StartDevTest(rs.StartDevTestRequest(name=run.name)),
        "ExportRun": drain(m.runs.ExportRun(rs.ExportRunRequest(name=run.name))),
        "CreateRun in their tenant": m.runs.CreateRun(
            rs.CreateRunRequest(
                parent=TENANT, request_id=request_id(), run=rp.Run(tool_version=version.name)
            )
        ),
        "CreateRun of their tool": m.runs.CreateRun(
            rs.CreateRunRequest(
                parent="tenants/globex",
                request_id=request_id(),
                run=rp.Run(tool_version=version.name),
            )
        ),
        "CreateRun with their input": m.runs.CreateRun(
            rs.CreateRunRequest(
                parent="tenants/globex",
                request_id=request_id(),
                run=rp.Run(
                    tool_version=own_version,
                    inputs=[rp.RunInput(name="data", artifact=artifact)],
                ),
            )
        ),
        "GetTool": m.tools.GetTool(ts.GetToolRequest(name=tool)),
        "ListTools": m.tools.ListTools(ts.ListToolsRequest(parent=TENANT)),
        "GetToolVersion": m.tools.GetToolVersion(ts.GetToolVersionRequest(name=version.name)),
        "ListToolVersions": m.tools.ListToolVersions(ts.ListToolVersionsRequest(parent=tool)),
        "CreateToolVersion": m.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(parent=f"{TENANT}/tools/intruder")
        ),
        "ListArtifacts of the run": m.artifacts.ListArtifacts(
            asv.ListArtifactsRequest(parent=run.name)
        ),
        "ListArtifacts": m.artifacts.ListArtifacts(asv.ListArtifactsRequest(parent=TENANT)),
        "DownloadArtifact": drain(
            m.artifacts.DownloadArtifact(asv.DownloadArtifactRequest(name=artifact))
        ),
        "StartUpload": m.artifacts.StartUpload(asv.StartUploadRequest(parent=TENANT)),
        "GetUpload": m.artifacts.GetUpload(asv.GetUploadRequest(name=upload)),
        "UploadChunk": m.artifacts.UploadChunk(
            asv.UploadChunkRequest(name=upload, offset=0, data=b"x")
        ),
        "FinishUpload": m.artifacts.FinishUpload(asv.FinishUploadRequest(name=upload)),
        "ListAuditEvents": m.audit.ListAuditEvents(au.ListAuditEventsRequest(parent=TENANT)),
    }
    outcomes = {name: await code_and_message(call) for name, call in calls.items()}
    await mallory.channel.close()
    assert {name: code for name, (code, _) in outcomes.items()} == dict.fromkeys(
        calls, grpc.StatusCode.NOT_FOUND
    )
    # Worded exactly as for names that exist nowhere: nothing tells "hidden" from "absent".
    assert outcomes["GetRun"][1] == f"run {run.name} does not exist"
    missing = await code_and_message(
        api.runs.GetRun(rs.GetRunRequest(name=f"{TENANT}/runs/nosuchrun"))
    )
    assert missing == (grpc.StatusCode.NOT_FOUND, f"run {TENANT}/runs/nosuchrun does not exist")
    assert outcomes["ListRuns"][1] == f"tenant {TENANT} does not exist"

    # Nothing changed: the run is still pending with its config, nothing was added.
    after = (await api.runs.GetRun(rs.GetRunRequest(name=run.name))).run
    assert (after.state, after.config) == (run.state, run.config)
    assert not after.HasField("cancellation")
    listed = await api.runs.ListRuns(rs.ListRunsRequest(parent=TENANT))
    assert [r.name for r in listed.runs] == [run.name]
    tools = await api.tools.ListTools(ts.ListToolsRequest(parent=TENANT))
    assert [t.name for t in tools.tools] == [tool]
    got = (await api.artifacts.GetUpload(asv.GetUploadRequest(name=upload))).upload
    assert got.committed_size == 0
