"""Cancelling a run: the request is recorded first (once); its engine hears of it, or, before
an engine connected, whatever was launched is stopped and the outcome recorded at once."""

from __future__ import annotations

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.control.runs.context import RunContext
from flnet.control.store import RunRow

S = lc.RunState


async def cancel(context: RunContext, tenant: str, run_id: str, reason: str, actor: str) -> RunRow:
    store = context.store
    row = await store.runs.get_run(tenant, run_id)
    if row.terminal:
        return row
    row = await store.runs.request_cancel(row.id, actor, reason or "cancelled by user")
    if row.terminal:
        return row
    await context.tool_version(row.spec.tool_version)  # cached for the grace period
    session = context.sessions.get(row.id)
    if row.state != S.RUN_STATE_PENDING:
        if session is not None:
            context.send_cancel(row, session)
        # Otherwise the engine is connected to another replica (which hears of the cancel from
        # the database's notification and passes it on), or between sessions (it gets the
        # Cancel when it reconnects); the supervisor stops it once the grace period is over —
        # never without a grace.
    else:
        # No engine yet: stop whatever was launched and record the outcome now.
        await context.stop(row, 0.0)
        await store.runs.transition(
            row.id,
            S.RUN_STATE_CANCELLED,
            actor=actor,
            message=reason or "cancelled before the engine connected",
        )
        context.placer.kick()
    return await store.runs.get_run(tenant, run_id)
