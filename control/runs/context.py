"""What the run jobs share: the store, the engines and orchestrators connected here, the
placement loop, the settings, the tool sources, run credentials, cached tool versions, and
the few effects more than one job has on an engine or its container (pass on a cancel, close
a session, stop a container)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from google.protobuf import struct_pb2

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.control import credentials, names
from flnet.control.clock import duration, now_us, seconds
from flnet.control.fleet.links import Links
from flnet.control.fleet.placement import Placer
from flnet.control.reasons import Reason
from flnet.control.sessions import Session, SessionRegistry
from flnet.control.settings import ControlSettings
from flnet.control.store import RunRow, Store
from flnet.control.tool_sources import ToolSources
from flnet.control.validation import struct_to_dict, validate_config
from flnet.errors import InvalidArgument

S = lc.RunState
# The grace of a cancel whose tool version is not cached yet (see send_cancel).
DEFAULT_GRACE = 10.0
# The largest configuration a run may have (serialized): a configuration is read by every
# listing of its run, and validating it must not stall the other tenants' calls.
MAX_CONFIG_BYTES = 64 * 1024


class RunContext:
    def __init__(
        self,
        store: Store,
        sessions: SessionRegistry,
        settings: ControlSettings,
        sources: ToolSources,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.links = Links()
        self.settings = settings
        self.sources = sources
        # Where launched engines connect; the app sets it to its socket when not configured.
        self.engine_address = settings.engine_address
        self.credentials = credentials.RunCredentials(settings.resolved_runtime_key_file)
        self.started_us = now_us()
        self._versions: dict[str, tp.ToolVersion] = {}
        # Gets an orchestrator's pending commands to it (control.runs.fleet_sessions sets it).
        self.commands_for: Callable[[str], None] = lambda name: None
        self.placer = Placer(
            store.fleet,
            lambda name: self.commands_for(name),  # noqa: PLW0108 (set later)
            default_quota=settings.default_quota,
            interval=settings.placement_interval,
        )

    async def tool_version(self, name: str) -> tp.ToolVersion:
        """Tool versions are immutable: cache them by name."""
        found = self._versions.get(name)
        if found is None:
            tv = names.parse_tool_version(name)
            found = self._versions[name] = await self.store.tools.get_tool_version(*tv)
        return found

    async def validated_config(
        self, version: tp.ToolVersion, config: struct_pb2.Struct, field: str
    ) -> dict[str, Any]:
        """`config` checked against the tool version's schema, with its defaults applied. The
        schema is evaluated in a worker thread: a slow schema delays only its own caller."""
        size = config.ByteSize()
        if size > MAX_CONFIG_BYTES:
            raise InvalidArgument(
                f"{field} is {size} bytes; at most {MAX_CONFIG_BYTES} are accepted",
                reason=Reason.CONFIG_INVALID,
                violations=[(field, f"at most {MAX_CONFIG_BYTES} bytes")],
            )
        schema = struct_to_dict(version.config_schema)
        return await asyncio.to_thread(validate_config, schema, struct_to_dict(config), field)

    def send_cancel(self, row: RunRow, session: Session) -> None:
        """The run's recorded cancel, to its engine, once per session. The grace counts from
        the request, not from when the engine hears of it. Callers cache the run's tool
        version first (its grace period)."""
        assert row.cancellation is not None
        if session.cancel_sent:
            return
        session.cancel_sent = True
        version = self._versions.get(row.spec.tool_version)
        grace = grace_of(version) if version is not None else DEFAULT_GRACE
        waited = (now_us() - row.cancellation.request_time.ToMicroseconds()) / 1e6
        cancel = rt.Cancel(
            reason=row.cancellation.reason, grace_period=duration(max(0.0, grace - waited))
        )
        session.command(rt.Command(cancel=cancel))

    def close_session(self, run_id: str, reason: str, state: int) -> None:
        """Tells the run's engine, if connected here, how its run ended, and ends its stream."""
        session = self.sessions.get(run_id)
        if session is not None:
            close = rt.Close(reason=reason, state=S.ValueType(state))
            session.close(rt.ConnectResponse(close=close))

    async def stop(self, row: RunRow, grace: float) -> None:
        """Has the run's orchestrator stop its container (a development session's engine is
        not ours to stop; a run placed nowhere has none)."""
        if row.spec.dev_session or row.spec.dev_session_run:
            return
        orchestrator = await self.store.fleet.request_stop(row.id, grace)
        if orchestrator is not None:
            self.commands_for(orchestrator)


def grace_of(version: tp.ToolVersion, default: float = 10.0) -> float:
    """Seconds between a cancel request and a forced stop."""
    if version.timeouts.HasField("cancel_grace"):
        return seconds(version.timeouts.cancel_grace)
    return default
