"""Values a request can carry but the control plane cannot hold (NaN and ±Infinity in JSON,
timestamps and durations far out of range) are INVALID_ARGUMENT naming the field, never an
exception deep inside answered INTERNAL (issue 12)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.common.v1.lifecycle_pb2 import RunState
from flnet.api.control.v1 import audit_service_pb2 as au
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.control.app import ControlApp
from flnet.structs import dict_to_struct
from flnet.toolspec import load_tool_spec
from tests.conftest import FIXTURES, TENANT, Clients, clients_for, request_id
from tests.control.hand_engine import HandEngine, dev_run
from tests.identity import IDENTITY
from tests.status import drain, reason, violations

NOOP = FIXTURES / "tools" / "noop"
BIG = 2**62


async def failure(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    return raised.value


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
async def test_a_run_config_holding_a_non_finite_number(api: Clients, number: float) -> None:
    version = await api.register(NOOP)
    artifact = await api.upload(b"a\n1\n")
    run = rp.Run(
        tool_version=version.name,
        config=dict_to_struct({"rate": 0.5, "nested": {"depth": number}}),
        inputs=[rp.RunInput(name="data", artifact=artifact)],
    )
    error = await failure(
        api.runs.CreateRun(rs.CreateRunRequest(parent=TENANT, request_id=request_id(), run=run))
    )
    assert (reason(error), violations(error)) == ("CONFIG_INVALID", ["run.config.nested.depth"])
    session, _ = await dev_run(api, version.name, artifact)
    update = rs.UpdateDevConfigRequest(name=session.name, config=dict_to_struct({"rate": number}))
    error = await failure(api.runs.UpdateDevConfig(update))
    assert (reason(error), violations(error)) == ("CONFIG_INVALID", ["config.rate"])


async def _version_request(api: Clients) -> ts.CreateToolVersionRequest:
    spec = load_tool_spec(NOOP)
    return ts.CreateToolVersionRequest(
        parent=f"{TENANT}/tools/{spec.name}", tool_version=await api.with_source(spec)
    )


async def test_a_config_schema_holding_a_non_finite_number(api: Clients) -> None:
    request = await _version_request(api)
    properties = request.tool_version.config_schema.fields["properties"].struct_value
    properties.fields["rate"].struct_value.fields["maximum"].number_value = math.inf
    error = await failure(api.tools.CreateToolVersion(request))
    assert violations(error) == ["tool_version.config_schema.properties.rate.maximum"]


async def test_a_config_schema_that_cannot_be_evaluated(api: Clients) -> None:
    """Valid JSON Schema, yet a $ref cycle or a $ref to nowhere raised inside jsonschema when
    a run was created (INTERNAL). What an empty configuration shows is refused with the tool
    version; the rest fails the run's creation as the tool version's fault."""
    request = await _version_request(api)
    schema = request.tool_version.config_schema
    schema.fields["$ref"].string_value = "#"
    error = await failure(api.tools.CreateToolVersion(request))
    assert violations(error) == ["tool_version.config_schema"]
    assert "recurse" in (error.details() or "")
    request = await _version_request(api)
    properties = request.tool_version.config_schema.fields["properties"].struct_value
    properties.fields["nested"].struct_value.Clear()
    properties.fields["nested"].struct_value.fields["$ref"].string_value = "https://x.invalid/n"
    version = (await api.tools.CreateToolVersion(request)).tool_version
    run = rp.Run(
        tool_version=version.name,
        config=dict_to_struct({"rate": 0.5, "nested": {"depth": 1}}),
        inputs=[rp.RunInput(name="data", artifact=await api.upload(b"a\n1\n"))],
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.runs.CreateRun(rs.CreateRunRequest(parent=TENANT, run=run))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(raised.value) == "CONFIG_INVALID"
    assert "unresolvable $ref 'https://x.invalid/n'" in (raised.value.details() or "")


@pytest.mark.parametrize(
    ("seconds", "nanos", "field"),
    [
        (BIG, 0, "tool_version.timeouts.deadline"),
        (-1, 0, "tool_version.timeouts.deadline"),
        (1, -5, "tool_version.timeouts.deadline.nanos"),
    ],
)
async def test_tool_timeouts_out_of_range(
    api: Clients, seconds: int, nanos: int, field: str
) -> None:
    """They were stored as given; the run of such a version then failed INTERNAL."""
    request = await _version_request(api)
    request.tool_version.timeouts.deadline.CopyFrom(
        duration_pb2.Duration(seconds=seconds, nanos=nanos)
    )
    request.tool_version.timeouts.cancel_grace.CopyFrom(duration_pb2.Duration(seconds=-BIG))
    error = await failure(api.tools.CreateToolVersion(request))
    assert violations(error) == [field, "tool_version.timeouts.cancel_grace"]


@pytest.mark.parametrize("seconds", [BIG, -BIG, 253_402_300_800])
async def test_run_list_filters_out_of_range(api: Clients, seconds: int) -> None:
    """±2^62 seconds overflowed SQLite's integers."""
    far = timestamp_pb2.Timestamp(seconds=seconds)
    for field in ("create_time_start", "create_time_end"):
        request = rs.ListRunsRequest(parent=TENANT, **{field: far})  # type: ignore[arg-type]
        assert violations(await failure(api.runs.ListRuns(request))) == [field]
    request = rs.ListRunsRequest(parent=TENANT, create_time_start=timestamp_pb2.Timestamp(nanos=-1))
    assert violations(await failure(api.runs.ListRuns(request))) == ["create_time_start.nanos"]


async def test_run_list_filtered_by_undeclared_states(api: Clients) -> None:
    """2^31-1 as a state overflowed PostgreSQL's smallint (INTERNAL); SQLite matched nothing.
    The unspecified zero matches nothing on either, so it is refused too."""
    undeclared = RunState.ValueType(2**31 - 1)
    request = rs.ListRunsRequest(parent=TENANT, states=[RunState.RUN_STATE_FINISHED, undeclared])
    error = await failure(api.runs.ListRuns(request))
    assert violations(error) == ["states[1]"]
    assert "2147483647 is not a RunState" in (error.details() or "")
    request = rs.ListRunsRequest(
        parent=TENANT, states=[RunState.RUN_STATE_UNSPECIFIED, RunState.ValueType(-7)]
    )
    assert violations(await failure(api.runs.ListRuns(request))) == ["states[0]", "states[1]"]
    request = rs.ListRunsRequest(
        parent=TENANT, states=[RunState.RUN_STATE_FINISHED, RunState.RUN_STATE_ERROR]
    )
    assert (await api.runs.ListRuns(request)).runs == []


@pytest.mark.parametrize("kind", ["log", "metric", "progress"])
async def test_engine_telemetry_stamped_out_of_range(api: Clients, kind: str) -> None:
    """Such a batch was stored, and the run's export failed INTERNAL ever after. Now the
    session ends with INVALID_ARGUMENT naming the entry (the engine stamps its entries: a
    broken engine), nothing of it is stored, and the run still exports."""
    version = await api.register(NOOP)
    run, credential = await dev_run(api, version.name, await api.upload(b"a\n1\n"))
    engine = HandEngine(api, run.name, credential)
    await engine.connect()
    far = timestamp_pb2.Timestamp(seconds=BIG)
    entries = {
        "log": rt.Entry(log=tm.LogRecord(time=far, message="x")),
        "metric": rt.Entry(metric=tm.MetricPoint(time=far, name="loss", value=math.nan)),
        "progress": rt.Entry(progress=tm.Progress(time=far, fraction=0.5)),
    }
    fine = rt.Entry(metric=tm.MetricPoint(name="loss", value=math.nan))  # NaN is a value
    await engine.outgoing.put(rt.ConnectRequest(batch=rt.Batch(sequence=1, entries=[fine])))
    assert (await engine.receive_kind("ack")).ack.sequence == 1
    batch = rt.Batch(sequence=2, entries=[fine, entries[kind]])
    await engine.outgoing.put(rt.ConnectRequest(batch=batch))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await engine.receive_kind("ack")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(raised.value) == [f"batch.entries[1].{kind}.time"]
    await engine.close()
    events = (await api.runs.ListRunEvents(rs.ListRunEventsRequest(parent=run.name))).events
    assert [e.WhichOneof("event") for e in events if e.HasField("metric")] == ["metric"]
    await drain(api.runs.ExportRun(rs.ExportRunRequest(name=run.name)))


async def test_negative_sizes_and_positions(api: Clients) -> None:
    """As StartUpload's total_size and WatchRun's after_sequence already were."""
    version = await api.register(NOOP)
    run, credential = await dev_run(api, version.name, await api.upload(b"a\n1\n"))
    request = rs.ListRunEventsRequest(parent=run.name, after_sequence=-1)
    assert violations(await failure(api.runs.ListRunEvents(request))) == ["after_sequence"]
    engine = HandEngine(api, run.name, credential)

    async def upload() -> AsyncIterator[rt.UploadOutputRequest]:
        meta = rt.OutputMetadata(run=run.name, name="notes", sha256="0" * 64, size_bytes=-1)
        yield rt.UploadOutputRequest(metadata=meta)

    call = api.runtime.UploadOutput(upload(), metadata=engine.metadata)
    assert violations(await failure(call)) == ["metadata.size_bytes"]


async def test_audit_filters_out_of_range(control: ControlApp) -> None:
    auditor = clients_for(f"127.0.0.1:{control.port}", IDENTITY.token(roles=["auditor"], scopes=()))
    request = au.ListAuditEventsRequest(
        parent=TENANT,
        time_start=timestamp_pb2.Timestamp(seconds=BIG),
        time_end=timestamp_pb2.Timestamp(seconds=-BIG, nanos=2**31 - 1),
    )
    error = await failure(auditor.audit.ListAuditEvents(request))
    assert violations(error) == ["time_start", "time_end.nanos"]
    request = au.ListAuditEventsRequest(
        parent=TENANT, time_end=timestamp_pb2.Timestamp(seconds=BIG)
    )
    assert violations(await failure(auditor.audit.ListAuditEvents(request))) == ["time_end"]
    await auditor.channel.close()
