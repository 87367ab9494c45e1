"""Development sessions: an engine on the developer's machine, connected as a run that stays
open; its configuration can be changed while connected, and each test run it executes is a run
of its own (dev_session_run) driven by a child of that engine."""

from __future__ import annotations

from typing import Any

from flnet import timeouts
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.control.runs.admission import Admission
from flnet.control.runs.context import RunContext
from flnet.control.sessions import Session
from flnet.control.store import RunRow
from flnet.control.validation import (
    canonical_sha256,
    dict_to_struct,
    struct_to_dict,
)
from flnet.errors import FailedPrecondition

# How long the developer's engine has to accept or refuse a new configuration.
UPDATE_TIMEOUT = 30.0


class DevSessions:
    def __init__(self, context: RunContext, admission: Admission) -> None:
        self.context = context
        self.admission = admission

    async def _connected(self, tenant: str, run_id: str) -> tuple[RunRow, Session]:
        row = await self.context.store.runs.get_run(tenant, run_id)
        if not row.spec.dev_session:
            raise FailedPrecondition(f"{row.name} is not a development session")
        session = self.context.sessions.get(row.id)
        if row.terminal or session is None:
            raise FailedPrecondition(f"development session {row.name} is not connected")
        return row, session

    async def update_config(
        self, tenant: str, run_id: str, patch: dict[str, Any], actor: str
    ) -> RunRow:
        """Merges `patch` into the session's configuration once its engine accepts it."""
        row, session = await self._connected(tenant, run_id)
        version = await self.context.tool_version(row.spec.tool_version)
        merged = dict_to_struct(struct_to_dict(row.spec.config) | patch)
        config = await self.context.validated_config(version, merged, "config")
        result = await timeouts.wait_for(
            session.command(
                rt.Command(update_config=rt.UpdateConfig(config=dict_to_struct(config)))
            ),
            UPDATE_TIMEOUT,
        )
        if not result.ok:
            raise FailedPrecondition(f"the engine refused the configuration: {result.message}")
        await self.context.store.runs.update_dev_config(
            row.id,
            rp.ConfigChange(
                config=dict_to_struct(config), config_sha256=canonical_sha256(config), actor=actor
            ),
        )
        return await self.context.store.runs.get_run(tenant, run_id)

    async def start_test(self, tenant: str, run_id: str, creator: str) -> RunRow:
        """A test run of the session's current configuration, executed by its engine."""
        row, session = await self._connected(tenant, run_id)
        run = rp.Run(
            tool_version=row.spec.tool_version,
            config=row.spec.config,
            inputs=[rp.RunInput(name=i.name, artifact=i.artifact) for i in row.spec.inputs],
        )
        test, credential = await self.admission.create(
            tenant, run, "", creator, dev_session_run=row.name
        )
        session.command(rt.Command(execute=rt.Execute(run=test.name, credential=credential)))
        return test
