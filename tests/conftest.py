"""Shared fixtures: real FLNet servers on loopback ports, started inside the test's loop."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from flnet import lifecycle, timeouts
from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import artifact_service_pb2_grpc as asg
from flnet.api.control.v1 import audit_service_pb2_grpc as aug
from flnet.api.control.v1 import fleet_service_pb2_grpc as fsg
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import run_service_pb2_grpc as rsg
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.api.control.v1 import tool_service_pb2_grpc as tsg
from flnet.api.runtime.v1 import runtime_service_pb2_grpc as rtg
from flnet.channels import insecure_channel
from flnet.control.app import ControlApp
from flnet.control.settings import ControlSettings
from flnet.control.tenant_limits import TenantShare
from flnet.sources import MEDIA_TYPE as SOURCE_MEDIA_TYPE
from flnet.sources import pack_source
from flnet.toolspec import ToolSpec, load_tool_spec
from tests.auth.issuer import Issuer
from tests.identity import IDENTITY, served_issuer

if TYPE_CHECKING:
    from flnet.orchestrator.app import OrchestratorApp

# --database sqlite|postgresql, the session's PostgreSQL cluster and each test's databases;
# --artifacts file|s3, the session's SeaweedFS and each test's artifact stores.
pytest_plugins = ("tests.postgres", "tests.s3")
pytest.register_assert_rewrite("tests.postgres", "tests.s3")
from tests.postgres import POSTGRESQL, backend, database_url  # noqa: E402
from tests.s3 import artifact_settings  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLES = Path(__file__).parent.parent / "examples" / "tools"
TENANT = "tenants/default"


@dataclass
class Clients:
    """Stubs of every control-plane service over one channel."""

    channel: grpc.aio.Channel
    tools: tsg.ToolServiceAsyncStub
    runs: rsg.RunServiceAsyncStub
    artifacts: asg.ArtifactServiceAsyncStub
    runtime: rtg.RuntimeServiceAsyncStub
    audit: aug.AuditServiceAsyncStub
    fleet: fsg.FleetServiceAsyncStub

    async def register(self, tool_dir: Path) -> tp.ToolVersion:
        spec = load_tool_spec(tool_dir)
        res = await self.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(
                parent=f"{TENANT}/tools/{spec.name}", tool_version=await self.with_source(spec)
            )
        )
        return res.tool_version

    async def with_source(self, spec: ToolSpec) -> tp.ToolVersion:
        """`spec`'s version, running its folder uploaded as a source archive."""
        archive = await self.upload(packed(spec.directory), "source.tar.gz", SOURCE_MEDIA_TYPE)
        return spec.with_source(archive)

    async def upload(
        self, data: bytes, filename: str = "data.csv", media_type: str = "text/csv"
    ) -> str:
        res = await self.artifacts.UploadInput(upload_messages(TENANT, data, filename, media_type))
        return res.artifact.name

    async def watch(self, run: str, into: list[rp.RunEvent]) -> None:
        """Follows `run` from its first event until it ends, appending what arrives."""
        async for res in self.runs.WatchRun(rs.WatchRunRequest(name=run)):
            into.extend(res.events)
            if any(
                e.HasField("state_change") and lifecycle.is_terminal(e.state_change.to_state)
                for e in res.events
            ):
                return


def upload_messages(
    parent: str,
    data: bytes,
    filename: str = "source.tar.gz",
    media_type: str = SOURCE_MEDIA_TYPE,
) -> AsyncIterator[asv.UploadInputRequest]:
    """An UploadInput stream of `data` (a source archive unless told otherwise)."""

    async def messages() -> AsyncIterator[asv.UploadInputRequest]:
        yield asv.UploadInputRequest(
            metadata=asv.UploadMetadata(
                parent=parent,
                filename=filename,
                media_type=media_type,
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
        for i in range(0, len(data), 65536):
            yield asv.UploadInputRequest(chunk=data[i : i + 65536])

    return messages()


def packed(directory: Path) -> bytes:
    """The files of `directory` as a source archive."""
    buffer = io.BytesIO()
    pack_source(directory, buffer)
    return buffer.getvalue()


def clients_for(address: str, token: str | None = None) -> Clients:
    """Stubs whose calls carry `token` (default: a data scientist of the default tenant)."""
    channel = insecure_channel(address, token if token is not None else IDENTITY.token())
    return Clients(
        channel=channel,
        tools=tsg.ToolServiceStub(channel),
        runs=rsg.RunServiceStub(channel),
        artifacts=asg.ArtifactServiceStub(channel),
        runtime=rtg.RuntimeServiceStub(channel),
        audit=aug.AuditServiceStub(channel),
        fleet=fsg.FleetServiceStub(channel),
    )


UNLIMITED_SHARE = TenantShare(rate=1e9, burst=1e9, calls=1 << 30, streams=1 << 30)


def control_settings(tmp_path: Path, **overrides: object) -> ControlSettings:
    """The settings of a test's control plane, on the session's database (tests.postgres):
    SQLite in its data directory by default, else a PostgreSQL database of the test; and on
    the session's artifact store (tests.s3): files in its data directory by default, else a
    prefix of the session's S3 bucket."""
    values: dict[str, object] = {
        "auth": IDENTITY.settings(),
        "data_dir": tmp_path / "control",
        "heartbeat_interval": 0.5,
        "heartbeat_lease": 5.0,
        "supervision_interval": 0.2,
        # Floods here test other things (malformed input, many runs): the tenants' shares
        # are tested with shares of their own (tests/control/test_tenant_limits.py).
        "tenant_share": UNLIMITED_SHARE,
    }
    values.update(overrides)
    if backend() == POSTGRESQL and "database_url" not in overrides:
        values["database_url"] = database_url(Path(str(values["data_dir"])))
    if "artifact_url" not in overrides:
        values.update(artifact_settings(Path(str(values["data_dir"]))))
    return ControlSettings(**values)  # type: ignore[arg-type]


def control_app(settings: ControlSettings) -> ControlApp:
    """A control plane trusting the tests' issuer key (whichever issuer URL `settings.auth`
    names)."""
    return ControlApp(settings, keys=IDENTITY.keys())


async def attach_orchestrator(
    control: str,
    data_dir: Path,
    *,
    name: str = "local",
    issuer: str | None = None,
    client: str = "orchestrator",
    run_slots: int = 64,
    labels: dict[str, str] | None = None,
    **kwargs: Any,
) -> OrchestratorApp:
    """An orchestrator (process backend unless `kwargs` say otherwise) attached to the control
    plane at `control`, with a token of the tests' issuer (`issuer`: its URL when the control
    plane trusts a served one) for `client`. The caller stops it."""
    from flnet.orchestrator.app import OrchestratorApp
    from flnet.orchestrator.link import Identity

    async def token() -> str:
        return IDENTITY.orchestrator_token(issuer=issuer, client=client)

    identity = Identity(
        name,
        cpu_millis=kwargs.pop("cpu_millis", 64_000),
        memory_bytes=kwargs.pop("memory_bytes", 64 * 1024**3),
        run_slots=run_slots,
        labels=labels or {},
    )
    kwargs.setdefault("kill_grace", 2.0)
    app = OrchestratorApp(
        data_dir, control_address=control, token=token, identity=identity, **kwargs
    )
    await app.start()
    try:
        await timeouts.wait_for(app.link.attached.wait(), 60)
    except BaseException:
        await app.stop()
        raise
    return app


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[ControlApp]:
    """A control plane without orchestrator: runs are driven by hand or by dev engines."""
    app = control_app(control_settings(tmp_path))
    await app.start("127.0.0.1:0")
    yield app
    await app.stop(0.5)


@pytest.fixture
async def api(control: ControlApp) -> AsyncIterator[Clients]:
    clients = clients_for(f"127.0.0.1:{control.port}")
    yield clients
    await clients.channel.close()


def request_id() -> str:
    return uuid.uuid4().hex


@pytest.fixture
async def http_issuer() -> AsyncIterator[Issuer]:
    """The tests' issuer over HTTP (tests.identity.served_issuer), for servers started as
    processes."""
    issuer = await served_issuer()
    yield issuer
    await issuer.stop()
