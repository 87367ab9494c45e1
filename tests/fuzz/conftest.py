"""Fixtures of the fuzz suite: the real control plane of the other suites (tests/conftest.py),
holding a few real resources, with tokens of every audience it accepts; and its log lines."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.message import Message

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import audit_service_pb2 as au
from flnet.api.control.v1 import fleet_pb2 as fp
from flnet.api.control.v1 import fleet_service_pb2 as fs
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.api.orchestrator.v1 import session_service_pb2 as sp
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.control.app import ControlApp
from flnet.server.auth import ORCHESTRATOR, RUNTIME, USER
from flnet.structs import dict_to_struct
from tests.conftest import FIXTURES, TENANT, clients_for
from tests.control.hand_engine import dev_run
from tests.fuzz.targets import Target
from tests.identity import IDENTITY

NOOP = FIXTURES / "tools" / "noop"


def _now(offset: float = 0.0) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int((time.time() + offset) * 1e9))
    return stamp


def _seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


@pytest.fixture
async def control_target(control: ControlApp) -> AsyncIterator[Target]:
    """The control plane with a tool version, an input, an upload under way and a
    development run (whose credential opens RuntimeService); an administrator's token opens
    the rest. A valid request of every method."""
    address = f"127.0.0.1:{control.port}"
    api = clients_for(address)
    version = await api.register(NOOP)
    tool = version.name.rsplit("/versions/", 1)[0]
    artifact = await api.upload(b"a\n1\n")
    run, credential = await dev_run(api, version.name, artifact)
    data = b"abcd"
    digest = hashlib.sha256(data).hexdigest()
    upload = (
        await api.artifacts.StartUpload(
            asv.StartUploadRequest(parent=TENANT, filename="f.csv", total_size=4, sha256=digest)
        )
    ).upload.name
    await api.channel.close()
    newer = tp.ToolVersion()
    newer.CopyFrom(version)
    newer.version = "2.0.0"
    entry = rt.Entry(log=tm.LogRecord(time=_now(), message="hello", logger="tool"))
    metric = rt.Entry(metric=tm.MetricPoint(time=_now(), name="loss", value=0.5, step=1))
    progress = rt.Entry(progress=tm.Progress(time=_now(), fraction=0.5, message="half"))
    output = rt.OutputMetadata(run=run.name, name="notes", sha256=digest, size_bytes=4)
    templates: dict[str, list[Message]] = {
        "ToolService/CreateToolVersion": [
            ts.CreateToolVersionRequest(parent=tool, tool_version=newer)
        ],
        "ToolService/GetTool": [ts.GetToolRequest(name=tool)],
        "ToolService/ListTools": [ts.ListToolsRequest(parent=TENANT, page_size=10)],
        "ToolService/GetToolVersion": [ts.GetToolVersionRequest(name=version.name)],
        "ToolService/ListToolVersions": [ts.ListToolVersionsRequest(parent=tool, page_size=10)],
        "RunService/CreateRun": [
            rs.CreateRunRequest(
                parent=TENANT,
                request_id="fuzz",
                run=rp.Run(
                    tool_version=version.name,
                    config=dict_to_struct({"rate": 0.5, "epochs": 2, "nested": {"depth": 1}}),
                    inputs=[rp.RunInput(name="data", artifact=artifact)],
                    dev_session=True,
                ),
            )
        ],
        "RunService/GetRun": [rs.GetRunRequest(name=run.name)],
        "RunService/ListRuns": [
            rs.ListRunsRequest(
                parent=TENANT,
                page_size=10,
                tool=tool,
                states=[lc.RUN_STATE_PENDING],
                create_time_start=_now(-3600),
                create_time_end=_now(3600),
            )
        ],
        "RunService/CancelRun": [rs.CancelRunRequest(name=run.name, reason="fuzz")],
        "RunService/WatchRun": [rs.WatchRunRequest(name=run.name, after_sequence=1)],
        "RunService/ListRunEvents": [
            rs.ListRunEventsRequest(parent=run.name, page_size=10, after_sequence=1)
        ],
        "RunService/ReproduceRun": [rs.ReproduceRunRequest(name=run.name, request_id="fuzz")],
        "RunService/ExportRun": [rs.ExportRunRequest(name=run.name)],
        "RunService/UpdateDevConfig": [
            rs.UpdateDevConfigRequest(name=run.name, config=dict_to_struct({"rate": 0.25}))
        ],
        "RunService/StartDevTest": [rs.StartDevTestRequest(name=run.name)],
        "ArtifactService/UploadInput": [
            asv.UploadInputRequest(
                metadata=asv.UploadMetadata(
                    parent=TENANT, filename="x.csv", media_type="text/csv", sha256=digest
                )
            ),
            asv.UploadInputRequest(chunk=data),
        ],
        "ArtifactService/StartUpload": [
            asv.StartUploadRequest(parent=TENANT, filename="f.csv", total_size=4, sha256=digest)
        ],
        "ArtifactService/UploadChunk": [
            asv.UploadChunkRequest(name=upload, offset=0, data=data[:2])
        ],
        "ArtifactService/GetUpload": [asv.GetUploadRequest(name=upload)],
        "ArtifactService/FinishUpload": [asv.FinishUploadRequest(name=upload)],
        "ArtifactService/ListArtifacts": [asv.ListArtifactsRequest(parent=TENANT, page_size=10)],
        "ArtifactService/DownloadArtifact": [asv.DownloadArtifactRequest(name=artifact, offset=1)],
        "AuditService/ListAuditEvents": [
            au.ListAuditEventsRequest(
                parent=TENANT,
                page_size=10,
                subject="alice",
                method="/flnet.api.control.v1.RunService/GetRun",
                code="OK",
                resource=run.name,
                time_start=_now(-3600),
                time_end=_now(3600),
            )
        ],
        "RuntimeService/Connect": [
            rt.ConnectRequest(hello=rt.Hello(run=run.name, engine_version="fuzz", pid=1)),
            rt.ConnectRequest(batch=rt.Batch(sequence=1, entries=[entry, metric, progress])),
            rt.ConnectRequest(heartbeat=rt.Heartbeat(time=_now())),
        ],
        "RuntimeService/UploadOutput": [
            rt.UploadOutputRequest(metadata=output),
            rt.UploadOutputRequest(chunk=data),
        ],
        "RuntimeService/FetchInput": [rt.FetchInputRequest(run=run.name, name="data")],
        "FleetService/ListOrchestrators": [fs.ListOrchestratorsRequest()],
        "FleetService/GetTenantQuota": [fs.GetTenantQuotaRequest(tenant=TENANT)],
        "FleetService/UpdateTenantQuota": [
            fs.UpdateTenantQuotaRequest(quota=fp.TenantQuota(tenant=TENANT, max_runs=100))
        ],
        "SessionService/Attach": [
            sp.AttachRequest(
                registration=sp.Registration(
                    name="fuzz",
                    backend="process",
                    capacity=sp.Capacity(cpu_millis=1000, memory_bytes=2**30, run_slots=2),
                    labels={"site": "fuzz"},
                )
            ),
            sp.AttachRequest(
                report=sp.Report(
                    sequence=1,
                    container=pb.RunContainer(run=run.name, state=pb.CONTAINER_STATE_EXITED),
                )
            ),
            sp.AttachRequest(heartbeat=sp.OrchestratorHeartbeat(time=_now())),
        ],
    }
    packages = {"Runtime": "runtime", "Session": "orchestrator"}
    target = Target(
        "control plane",
        address,
        tokens={
            USER: IDENTITY.token(subject="fuzz", scopes=("admin",)),
            RUNTIME: credential,
            ORCHESTRATOR: IDENTITY.orchestrator_token(),
        },
        names=(TENANT, run.name, version.name, tool, artifact, upload),
        templates={
            f"/flnet.api.{packages.get(k[:7], 'control')}.v1.{k}": v for k, v in templates.items()
        },
    )
    yield target
    await target.close()


class Lines(logging.Handler):
    """Every log record of the process at INFO and above, formatted as a server writes it."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        self.records: list[logging.LogRecord] = []
        self.text: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.text.append(self.format(record))

    @property
    def size(self) -> int:
        return sum(len(line) + 1 for line in self.text)

    def faults(self) -> list[str]:
        """Lines that say the server failed: errors and tracebacks."""
        return [
            line
            for record, line in zip(self.records, self.text, strict=True)
            if record.levelno >= logging.ERROR or record.exc_info or "Traceback" in line
        ]


@pytest.fixture
def server_logs(tmp_path: Path) -> Iterator[Lines]:
    """The log lines written while the test runs (the servers run in this process)."""
    root = logging.getLogger()
    lines = Lines()
    level = root.level
    root.addHandler(lines)
    root.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        root.removeHandler(lines)
        root.setLevel(level)
