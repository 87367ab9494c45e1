"""RunController: the one door of the run logic. The user-facing services call it; the jobs
behind it are modules of their own (admission, launching, cancellation, dev_sessions,
engine_sessions, fleet_sessions, relay, supervision, watching), sharing a RunContext."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.control import credentials, names
from flnet.control.runs import cancellation, watching
from flnet.control.runs.admission import Admission
from flnet.control.runs.context import RunContext
from flnet.control.runs.dev_sessions import DevSessions
from flnet.control.runs.engine_sessions import EngineSessions
from flnet.control.runs.fleet_sessions import FleetSessions
from flnet.control.runs.launching import Launcher
from flnet.control.runs.relay import Relay
from flnet.control.runs.supervision import Supervisor
from flnet.control.store import EventList, RunFilter, RunRow


@dataclass
class ExportSources:
    """What an RO-Crate of a run is made of (see control.export)."""

    run: rp.Run
    tool: tp.ToolVersion
    inputs: list[ap.Artifact]
    events: AsyncIterator[rp.RunEvent]


class RunController:
    def __init__(self, context: RunContext) -> None:
        self.context = context
        self.launcher = Launcher(context)
        self.admission = Admission(context)
        self.dev_sessions = DevSessions(context, self.admission)
        self.relay = Relay(context)
        self.engines = EngineSessions(context, self.relay)
        self.supervisor = Supervisor(context, self.launcher)
        self.fleet = FleetSessions(context, self.launcher, self.supervisor)
        self._store = context.store

    @property
    def credentials(self) -> credentials.RunCredentials:
        return self.context.credentials

    @property
    def engine_address(self) -> str:
        return self.context.engine_address

    @engine_address.setter
    def engine_address(self, address: str) -> None:
        self.context.engine_address = address

    # --------------------------------------------------------------------------- commands

    async def create(
        self, tenant: str, run: rp.Run, request_id: str, creator: str
    ) -> tuple[RunRow, str]:
        """See Admission.create."""
        return await self.admission.create(tenant, run, request_id, creator)

    async def cancel(self, tenant: str, run_id: str, reason: str, actor: str) -> RunRow:
        return await cancellation.cancel(self.context, tenant, run_id, reason, actor)

    async def reproduce(self, tenant: str, run_id: str, request_id: str, creator: str) -> RunRow:
        return await self.admission.reproduce(tenant, run_id, request_id, creator)

    async def update_dev_config(
        self, tenant: str, run_id: str, patch: dict[str, Any], actor: str
    ) -> RunRow:
        return await self.dev_sessions.update_config(tenant, run_id, patch, actor)

    async def start_dev_test(self, tenant: str, run_id: str, creator: str) -> RunRow:
        return await self.dev_sessions.start_test(tenant, run_id, creator)

    # ------------------------------------------------------------------------------ reads

    async def get(self, tenant: str, run_id: str) -> RunRow:
        return await self._store.runs.get_run(tenant, run_id)

    async def list_runs(
        self, tenant: str, where: RunFilter, *, after: tuple[int, str] | None, limit: int
    ) -> list[RunRow]:
        """Newest first, after the (create_us, id) of the previous page's last run."""
        return await self._store.runs.list_runs(tenant, where, after=after, limit=limit)

    async def run_proto(self, row: RunRow) -> rp.Run:
        """The run as the API shows it; a queued run with its place in its tenant's queue
        (a listing shows why runs wait, not where: that is a count each)."""
        [run] = await self.run_protos([row])
        if row.queued_us is not None:
            run.queue.position = await self._store.fleet.queue_position(row)
        return run

    async def run_protos(self, rows: Sequence[RunRow]) -> list[rp.Run]:
        outputs = await self._store.artifacts.run_outputs([r.id for r in rows])
        runs = [r.to_proto(outputs[r.id]) for r in rows]
        # A queued run without a reason of its own waits for its tenant's queue.
        waiting = {r.tenant for r in rows if r.queued_us is not None and not r.queue_reason}
        if waiting:
            reasons = await self._store.fleet.tenant_reasons(sorted(waiting))
            for row, run in zip(rows, runs, strict=True):
                if row.queued_us is not None and not row.queue_reason:
                    run.queue.reason = reasons.get(row.tenant, run.queue.reason)
        return runs

    async def events(self, row: RunRow, into: EventList, *, after: int, limit: int) -> bool:
        """Appends to `into.events` the run's events after `after`, at most `limit`;
        whether there may be more."""
        return (await self._store.history.read_events(row, into, after=after, limit=limit)).full

    def watch(self, row: RunRow, after_sequence: int) -> AsyncIterator[rs.WatchRunResponse]:
        return watching.watch(self._store, row, after_sequence)

    async def export_sources(self, tenant: str, run_id: str) -> ExportSources:
        row = await self._store.runs.get_run(tenant, run_id)
        run = await self.run_proto(row)
        tv = names.parse_tool_version(run.tool_version, "run.tool_version")
        tool = await self._store.tools.get_tool_version(tv.tenant, tv.tool, tv.version)
        inputs = [
            await self._store.artifacts.get_artifact(tenant, names.parse_artifact(i.artifact)[1])
            for i in run.inputs
        ]
        return ExportSources(run, tool, inputs, self._all_events(row))

    async def _all_events(self, row: RunRow) -> AsyncIterator[rp.RunEvent]:
        after = 0
        while True:
            page = rs.ListRunEventsResponse()
            full = await self.events(row, page, after=after, limit=watching.WATCH_BATCH)
            for event in page.events:
                yield event
            if not full or not page.events:
                return
            after = page.events[-1].sequence

    # ----------------------------------------------------------------- news from elsewhere

    def on_remote_change(self, run_id: str) -> None:
        self.relay.on_remote_change(run_id)

    def on_missed_changes(self) -> None:
        self.relay.on_missed_changes()

    def on_remote_commands(self, orchestrator: str) -> None:
        self.fleet.on_remote(orchestrator)

    async def supervise_once(self) -> None:
        await self.supervisor.supervise_once()
        await self.fleet.judge_leases()
        for link in self.context.links.all():  # whatever a lost notification held back
            self.fleet.commands_for(link.name)

    def start(self) -> None:
        """Starts the background work (placing queued runs)."""
        self.context.placer.start()

    def close_sessions(self) -> None:
        """Ends every engine and orchestrator session held here (the server is stopping)."""
        for session in self.context.sessions.all():
            session.close()
        for link in self.context.links.all():
            link.close()

    async def close(self) -> None:
        """Ends the background work (placing, passing on other replicas' changes)."""
        await self.context.placer.close()
        await self.fleet.close()
        await self.relay.close()
