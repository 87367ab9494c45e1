"""The control-plane process: wires store, artifact store, run logic, the placement loop and
the services into one grpc.aio server, plus its supervision loops.

Every RPC but health and reflection is authenticated and authorized (flnet.server.auth): user
and orchestrator tokens of the configured OIDC issuer (its JWKS, or `keys` given to the
app), run credentials with the control plane's own key. Orchestrators dial in (Attach): the
control plane calls nobody."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from sqlalchemy.exc import OperationalError

from flnet.api.control.v1 import (
    artifact_service_pb2,
    audit_service_pb2,
    fleet_service_pb2,
    run_service_pb2,
    tool_service_pb2,
)
from flnet.api.control.v1 import artifact_service_pb2_grpc as asg
from flnet.api.control.v1 import audit_service_pb2_grpc as aug
from flnet.api.control.v1 import fleet_service_pb2_grpc as fsg
from flnet.api.control.v1 import run_service_pb2_grpc as rsg
from flnet.api.control.v1 import tool_service_pb2_grpc as tsg
from flnet.api.orchestrator.v1 import session_service_pb2
from flnet.api.orchestrator.v1 import session_service_pb2_grpc as spg
from flnet.api.runtime.v1 import runtime_service_pb2
from flnet.api.runtime.v1 import runtime_service_pb2_grpc as rtg
from flnet.control import engine_socket
from flnet.control.blobs import open_blob_store
from flnet.control.database import create_engine, make_private, migrate
from flnet.control.news import RunFeed
from flnet.control.notifications import EventNotifications, notify_fleet
from flnet.control.runs import RunContext, RunController
from flnet.control.services.artifact_service import ArtifactService
from flnet.control.services.audit_service import AuditService
from flnet.control.services.fleet_service import FleetService
from flnet.control.services.run_service import RunService
from flnet.control.services.runtime_service import RuntimeService
from flnet.control.services.session_service import SessionService
from flnet.control.services.tool_service import ToolService
from flnet.control.sessions import SessionRegistry
from flnet.control.settings import ControlSettings
from flnet.control.storage_uris import HideStorageUris
from flnet.control.store import Store
from flnet.control.store.audit import AuditLog
from flnet.control.tenant_limits import TenantLimits
from flnet.control.tool_sources import SourceSnapshots, ToolSources
from flnet.datadir import own_private_dir
from flnet.server.auth import RUNTIME, KeySource
from flnet.server.interceptors import ErrorMapper
from flnet.server.serving import Server

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The control plane cannot start (its database or artifact store is unreachable); the
    message says which and why, in one line."""


SERVICE_NAMES = [
    tool_service_pb2.DESCRIPTOR.services_by_name["ToolService"].full_name,
    run_service_pb2.DESCRIPTOR.services_by_name["RunService"].full_name,
    artifact_service_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name,
    runtime_service_pb2.DESCRIPTOR.services_by_name["RuntimeService"].full_name,
    audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    fleet_service_pb2.DESCRIPTOR.services_by_name["FleetService"].full_name,
    session_service_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name,
]


class ControlApp:
    def __init__(self, settings: ControlSettings, *, keys: KeySource | None = None) -> None:
        self.settings = settings
        self.port = 0
        self._keys = keys
        self._tasks: list[asyncio.Task[None]] = []
        self._server: Server | None = None
        self._resources = contextlib.AsyncExitStack()

    async def start(self, listen: str = "127.0.0.1:50051") -> int:
        """Opens everything and serves; a start that fails closes what it opened."""
        try:
            return await self._start(listen)
        except BaseException:
            await self._resources.aclose()
            raise

    async def _start(self, listen: str) -> int:
        s = self.settings
        # Closed at stop in reverse order of opening (the last opened first).
        closing = self._resources
        own_private_dir(s.data_dir)
        try:
            self.blobs = await open_blob_store(
                s.resolved_artifact_url, s3_endpoint=s.s3_endpoint, s3_region=s.s3_region
            )
        except ValueError as e:  # no store it can use, or an unreachable bucket
            raise StartupError(str(e)) from None
        closing.push_async_callback(self.blobs.close)
        make_private(s.resolved_database_url)
        self.engine = create_engine(s.resolved_database_url)
        closing.push_async_callback(self.engine.dispose)
        try:
            await migrate(self.engine)
        except (OperationalError, OSError) as e:
            shown = self.engine.url.render_as_string(hide_password=True)
            raise StartupError(f"cannot reach the database {shown}: {e}") from None
        self.store = Store(self.engine, RunFeed())
        # Its writer is not one of self._tasks: close() ends it between batches.
        self.audit = AuditLog(self.engine)
        self.audit.start()
        closing.push_async_callback(self.audit.close)
        snapshots = SourceSnapshots(s.data_dir / "sources", self.blobs)
        await snapshots.sweep()
        self.sources = sources = ToolSources(self.store, snapshots)
        self.runs = RunController(RunContext(self.store, SessionRegistry(), s, sources))
        closing.push_async_callback(self.runs.close)
        self.notifications: EventNotifications | None = None
        if self.engine.dialect.name == "postgresql":  # replicas: follow what the others write
            self.notifications = notifications = EventNotifications(
                s.resolved_database_url,
                self.store.feed.origin,
                self.runs.on_remote_change,
                self.runs.on_missed_changes,
                self.runs.on_remote_commands,
            )
            engine, origin = self.engine, self.store.feed.origin
            self.runs.fleet.notify_others = lambda name: notify_fleet(engine, origin, name)
            notifications.start()
            closing.push_async_callback(notifications.close)
        tools, runs = ToolService(self.store, sources), RunService(self.runs, self.blobs)
        artifacts = ArtifactService(self.store, self.blobs, s)
        runtime = RuntimeService(self.runs.engines, self.blobs)
        audit = AuditService(self.audit)
        fleet = FleetService(self.store.fleet, s.default_quota)
        sessions = SessionService(self.runs.fleet)

        def register(server: grpc.aio.Server) -> None:
            tsg.add_ToolServiceServicer_to_server(tools, server)
            rsg.add_RunServiceServicer_to_server(runs, server)
            asg.add_ArtifactServiceServicer_to_server(artifacts, server)
            rtg.add_RuntimeServiceServicer_to_server(runtime, server)
            aug.add_AuditServiceServicer_to_server(audit, server)
            fsg.add_FleetServiceServicer_to_server(fleet, server)
            spg.add_SessionServiceServicer_to_server(sessions, server)

        self._auth = s.auth.interceptor(
            SERVICE_NAMES,
            keys=self._keys,
            validators={RUNTIME: self.runs.credentials.validator()},
            audit=self.audit.record,
        )
        closing.push_async_callback(self._auth.close)
        self._server = Server(
            SERVICE_NAMES,
            register,
            interceptors=[
                ErrorMapper("flnet.control"),
                self._auth,
                TenantLimits(s.tenant_share),
                HideStorageUris(),
            ],
        )
        socket = s.socket_path
        engine_socket.prepare_folder(socket, s.engine_gid)
        socket.unlink(missing_ok=True)  # left behind by a control plane that was killed
        self.port = await self._server.start(listen, f"unix://{socket}")
        # This user and the engine group only: a run credential is presented after connecting.
        engine_socket.restrict_socket(socket, s.engine_gid)
        if not self.runs.engine_address:
            self.runs.engine_address = f"unix://{socket}"
        self._tasks.append(asyncio.create_task(self._supervise()))
        self.runs.start()
        log.info("control plane listening on %s:%d", listen.rsplit(":", 1)[0], self.port)
        return self.port

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self.settings.supervision_interval)
            await self.runs.supervise_once()

    async def stop(self, grace: float = 5.0) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._server is not None:
            self.runs.close_sessions()
            await self._server.stop(grace)
        await self._resources.aclose()
