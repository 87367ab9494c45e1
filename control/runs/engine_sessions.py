"""The engine-session protocol, control-plane side: what an engine is told when it connects
(Welcome, then a Start or Cancel it may have missed), what its batches do to the run, and the
outputs and inputs it may move. RuntimeService speaks gRPC; this module decides."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from flnet import lifecycle
from flnet.api.common.v1 import io_pb2 as io
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.control import names
from flnet.control.clock import duration
from flnet.control.engine_batches import EngineBatch
from flnet.control.reasons import Reason
from flnet.control.runs.context import RunContext, grace_of
from flnet.control.runs.relay import Relay
from flnet.control.sessions import Session
from flnet.control.store import BatchOutcome, RunRow
from flnet.control.tools import IO_NAME
from flnet.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted

S = lc.RunState


class EngineSessions:
    def __init__(self, context: RunContext, relay: Relay) -> None:
        self.context = context
        self.relay = relay

    async def run_of(self, run_name: str) -> RunRow:
        """The run an engine's call names (NotFound when it does not exist)."""
        tenant, run_id = names.parse_run(run_name, "run")
        row = await self.context.store.runs.get_run_by_id(run_id)
        if row is None or row.tenant != tenant:
            raise NotFound(f"run {run_name} does not exist")
        return row

    async def connect(self, row: RunRow) -> Session:
        """Opens the session of the run's engine (closing an older one) with its Welcome
        queued first, then what a reconnecting engine may have missed. An engine whose run
        has ended learns the outcome only (a Close with the state): its credential no longer
        gets the run's spec and configuration."""
        if row.terminal:
            session = self.context.sessions.open(row.id)
            session.close(closing(row.state, "the run has ended"))
            return session
        welcome = await self.welcome(row)
        # No await from here to the Welcome's queueing: nothing may reach the engine first.
        session = self.context.sessions.open(row.id)
        session.send(rt.ConnectResponse(welcome=welcome))
        self._after_connect(row, session)
        return session

    def disconnect(self, session: Session) -> None:
        self.context.sessions.discard(session)
        # The engine may reconnect to another replica: our kept events may go stale.
        self.context.store.feed.forget(session.run_id)

    def heard(self, run_id: str) -> None:
        """A heartbeat: the engine is alive (activity is telemetry, see ingest)."""
        self.context.sessions.touch(run_id)

    async def welcome(self, row: RunRow) -> rt.Welcome:
        version = await self.context.tool_version(row.spec.tool_version)
        spec = rt.RunSpec(
            run=row.name,
            tool_version=row.spec.tool_version,
            config=row.spec.config,
            config_schema=version.config_schema,
            outputs=version.outputs,
            dev_session=row.spec.dev_session,
            cancel_grace=duration(grace_of(version)),
        )
        media = {i.name: i.media_type for i in version.inputs}
        spec.inputs.extend(
            rt.InputRef(
                name=i.name,
                media_type=media.get(i.name, ""),
                sha256=i.sha256,
                size_bytes=i.size_bytes,
            )
            for i in row.spec.inputs
        )
        return rt.Welcome(
            spec=spec,
            state=S.ValueType(row.state),
            acked_sequence=row.last_batch,
            heartbeat_interval=duration(self.context.settings.heartbeat_interval),
        )

    def _after_connect(self, row: RunRow, session: Session) -> None:
        """A reconnecting engine whose run is INITIALIZED may have missed its Start."""
        if row.state == S.RUN_STATE_INITIALIZED and not row.spec.dev_session:
            session.command(rt.Command(start=rt.Start(config=row.spec.config)))
        if row.cancellation is not None and not row.terminal and row.state != S.RUN_STATE_PENDING:
            self.context.send_cancel(row, session)
        # `row` was read before the session opened: a cancel or an end recorded meanwhile
        # (here or by another replica) found no session to tell.
        self.relay.pass_on_soon(row.id)

    async def ingest(self, row: RunRow, session: Session, batches: Sequence[EngineBatch]) -> rt.Ack:
        """Stores the engine's batches; an INITIALIZED run is told to Start."""
        store = self.context.store
        # Shielded: a session that ends mid-commit must not cancel the transaction between
        # its commit and the publish that wakes the run's watchers.
        outcome: BatchOutcome = await asyncio.shield(store.runs.apply_batches(row.id, batches))
        self.context.sessions.touch(row.id, activity=True)
        for _, to_state in outcome.transitions:
            if lifecycle.is_terminal(to_state):
                self.context.placer.kick()  # what it held is free for a queued run
            if to_state == S.RUN_STATE_INITIALIZED and not row.spec.dev_session:
                fresh = await store.runs.get_run_by_id(row.id)
                assert fresh is not None
                # To the engine's current session: it may have reconnected meanwhile (its
                # Welcome then said PENDING); a repeated Start is ignored by the engine.
                current = self.context.sessions.get(row.id) or session
                current.command(rt.Command(start=rt.Start(config=fresh.spec.config)))
        return rt.Ack(
            sequence=outcome.acked, rejections=outcome.rejections, state=S.ValueType(outcome.state)
        )

    async def output_accepted(self, row: RunRow, meta: rt.OutputMetadata) -> tuple[str, int]:
        """The media type and size limit of an output the engine may upload now."""
        if not IO_NAME.match(meta.name):
            raise InvalidArgument(
                f"{meta.name!r} is not a valid output name (no path separators or '..')",
                reason=Reason.OUTPUT_NAME_INVALID,
                violations=[("metadata.name", "invalid name")],
            )
        version = await self.context.tool_version(row.spec.tool_version)
        spec = _declared(version, meta.name)
        if spec is None:
            raise InvalidArgument(
                f"output {meta.name!r} is not declared by {version.name}",
                reason=Reason.OUTPUT_UNDECLARED,
                violations=[("metadata.name", "not declared")],
            )
        if row.state != S.RUN_STATE_RUNNING:
            raise FailedPrecondition(
                f"outputs are accepted while the run is RUNNING, not "
                f"{lifecycle.state_name(row.state)}"
            )
        limit = spec.max_size_bytes or self.context.settings.max_output_bytes
        if meta.size_bytes > limit:
            raise ResourceExhausted(
                f"output {meta.name!r} of {meta.size_bytes} bytes exceeds its limit of {limit}",
                reason=Reason.TOO_LARGE,
            )
        return spec.media_type or "application/octet-stream", limit

    async def record_output(
        self, row: RunRow, name: str, media_type: str, sha256: str, size: int, uri: str
    ) -> ap.Artifact:
        """Records an uploaded output (its blob already stored at `uri`)."""
        artifact = await self.context.store.artifacts.add_output_artifact(
            artifact_id=uuid.uuid4().hex[:20],
            run=row,
            output_name=name,
            sha256=sha256,
            size=size,
            media_type=media_type,
            uri=uri,
        )
        self.context.sessions.touch(row.id, activity=True)
        return artifact

    async def input_of(self, row: RunRow, name: str) -> ap.Artifact:
        """The artifact bound to the run's input `name`."""
        found = next((i for i in row.spec.inputs if i.name == name), None)
        if found is None:
            raise NotFound(f"the run has no input {name!r}")
        return await self.context.store.artifacts.get_artifact(
            row.tenant, names.parse_artifact(found.artifact)[1]
        )


def _declared(version: tp.ToolVersion, name: str) -> io.IoSpec | None:
    return next((o for o in version.outputs if o.name == name), None)


def closing(state: int, reason: str) -> rt.ConnectResponse:
    """The last message of a session whose run ended in `state`."""
    return rt.ConnectResponse(close=rt.Close(reason=reason, state=S.ValueType(state)))
