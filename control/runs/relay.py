"""Passing on what another replica decided: when a run's engine is connected here and another
replica records its cancel or its end (heard through control.notifications), the engine hears
of it from here."""

from __future__ import annotations

import asyncio
import logging

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.control.runs.context import RunContext

log = logging.getLogger(__name__)
S = lc.RunState


class Relay:
    def __init__(self, context: RunContext) -> None:
        self.context = context
        # Runs whose change is being passed on to their engine here: whether another change
        # came in meanwhile.
        self._following: dict[str, bool] = {}
        self._background: set[asyncio.Task[None]] = set()

    def on_remote_change(self, run_id: str) -> None:
        """Another replica wrote to `run_id`: its watchers here read what is new, and if the
        run's engine is connected here it hears what was decided there."""
        self.context.store.feed.wake(run_id)
        self.pass_on_soon(run_id)

    def on_missed_changes(self) -> None:
        """Other replicas' changes may have gone unheard: everyone here catches up."""
        self.context.store.feed.wake_all()
        for session in self.context.sessions.all():
            self.on_remote_change(session.run_id)

    def pass_on_soon(self, run_id: str) -> None:
        """Reads the run and tells its engine, if connected here, of a cancel or an end."""
        if self.context.sessions.get(run_id) is None:
            return
        if run_id in self._following:
            self._following[run_id] = True  # read again once the current read is done
            return
        self._following[run_id] = False
        task = asyncio.create_task(self._follow(run_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _follow(self, run_id: str) -> None:
        try:
            while True:
                try:
                    await self._pass_on(run_id)
                except Exception:
                    log.exception("telling the engine of %s what changed failed", run_id)
                if not self._following[run_id]:
                    return
                self._following[run_id] = False
        finally:
            del self._following[run_id]

    async def _pass_on(self, run_id: str) -> None:
        context = self.context
        row = await context.store.runs.get_run_by_id(run_id)
        session = context.sessions.get(run_id)
        if row is None or session is None:
            return
        if row.terminal:
            reason = row.error.message if row.error is not None else "the run has ended"
            context.close_session(run_id, reason, row.state)
        elif row.cancellation is not None and row.state != S.RUN_STATE_PENDING:
            await context.tool_version(row.spec.tool_version)
            context.send_cancel(row, session)

    async def close(self) -> None:
        """Ends the background work."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
