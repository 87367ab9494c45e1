"""Outcomes decided from below and over time: container exits, deadlines passed in the queue,
connect timeouts, heartbeat leases, inactivity and cancel grace periods, each recorded as the
run's end."""

from __future__ import annotations

import logging

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.orchestrator.v1 import orchestrator_pb2 as op
from flnet.control import names
from flnet.control.clock import now_us, seconds
from flnet.control.runs.context import RunContext, grace_of
from flnet.control.runs.launching import Launcher
from flnet.control.store import RunRow
from flnet.errors import FlnetError

log = logging.getLogger(__name__)
S = lc.RunState
R = lc.ErrorReason

DEFAULT_CONNECT_TIMEOUT = 60.0


class Supervisor:
    def __init__(self, context: RunContext, launcher: Launcher) -> None:
        self.context = context
        self.launcher = launcher
        self.store = context.store
        self.sessions = context.sessions
        self.settings = context.settings
        self._marked_us = 0

    async def on_container(self, container: op.RunContainer) -> None:
        """A container event from the orchestrator: an exit ends a run still in flight."""
        if container.state != op.CONTAINER_STATE_EXITED:
            return
        try:
            _, run_id = names.parse_run(container.run)
        except FlnetError:
            return
        row = await self.store.runs.get_run_by_id(run_id)
        if row is None or row.terminal:
            return
        if row.cancellation is not None:
            await self.store.runs.transition(
                row.id, S.RUN_STATE_CANCELLED, actor="orchestrator", message="stopped after cancel"
            )
            return
        await self.store.runs.transition(
            row.id,
            S.RUN_STATE_ERROR,
            actor="orchestrator",
            message="container exited",
            error=exit_error(container, row),
        )
        self.sessions.forget(row.id)

    async def supervise_once(self) -> None:
        """Connect timeouts, heartbeat leases, inactivity and cancel grace periods."""
        now = now_us()
        if now - self._marked_us >= self.settings.heartbeat_interval * 1e6:
            # Engines connected here and heard lately (within two heartbeats): every replica
            # judges their leases by this record.
            heard = [
                s.run_id
                for s in self.sessions.all()
                if self.sessions.silent_for(s.run_id) < 2 * self.settings.heartbeat_interval
            ]
            await self.store.runs.mark_engines_seen(heard, now)
            self._marked_us = now
        active = await self.store.runs.nonterminal_runs()
        self.sessions.forget_ended({row.id for row in active}, 2 * self.settings.heartbeat_lease)
        for row in active:
            try:
                await self._supervise(row, now)
            except Exception:
                log.exception("supervising %s failed", row.name)

    async def _supervise(self, row: RunRow, now: int) -> None:
        version = await self.context.tool_version(row.spec.tool_version)
        t = version.timeouts
        if row.cancellation is not None:
            waited = (now - row.cancellation.request_time.ToMicroseconds()) / 1e6
            if waited > grace_of(version) + 2 * self.settings.supervision_interval + 1:
                await self.context.stop(row, 1.0)
                message = "grace period expired; stopped"
                applied, _ = await self.store.runs.transition(
                    row.id, S.RUN_STATE_CANCELLED, actor="control", message=message
                )
                if applied:
                    self.context.close_session(row.id, message, S.RUN_STATE_CANCELLED)
                return
        session = self.sessions.get(row.id)
        if row.state == S.RUN_STATE_PENDING and session is None and row.engine_seen_us is None:
            if row.queued_us is not None:
                if row.deadline_us is not None and now > row.deadline_us:
                    why = row.queue_reason or (
                        await self.store.fleet.tenant_reasons([row.tenant])
                    ).get(row.tenant, "waiting to be placed")
                    await self._fail(
                        row,
                        R.ERROR_REASON_DEADLINE_EXCEEDED,
                        f"the run's deadline passed while it waited to be placed ({why})",
                    )
                return
            if row.orchestrator is not None and row.launched_us is None:
                return  # placed, not launched yet: its orchestrator's lease decides
            limit = seconds(t.connect) if t.HasField("connect") else DEFAULT_CONNECT_TIMEOUT
            since = (now - self.launcher.connect_clock(row)) / 1e6
            if since > limit:
                await self._fail(
                    row,
                    R.ERROR_REASON_CONNECT_TIMEOUT,
                    f"the engine did not connect within {limit:g} s",
                )
            return
        if self.silent_for(row, now) > self.settings.heartbeat_lease:
            await self._fail(
                row,
                R.ERROR_REASON_LOST,
                f"no heartbeat from the engine for {self.settings.heartbeat_lease:g} s",
            )
            return
        if (
            row.state == S.RUN_STATE_RUNNING
            and session is not None  # the replica holding the engine judges its activity
            and t.HasField("inactivity")
            and 0 < seconds(t.inactivity) < self.sessions.inactive_for(row.id)
        ):
            await self._fail(
                row,
                R.ERROR_REASON_INACTIVITY_TIMEOUT,
                f"no telemetry for {seconds(t.inactivity):g} s",
            )

    def silent_for(self, row: RunRow, now: int) -> float:
        """Seconds since any replica last heard the run's engine: here (since our start if
        never), or by another replica's record."""
        here = self.sessions.silent_for(row.id)
        if row.engine_seen_us is None:
            return here
        return min(here, (now - row.engine_seen_us) / 1e6)

    async def _fail(self, row: RunRow, reason: int, message: str) -> None:
        applied, _ = await self.store.runs.transition(
            row.id,
            S.RUN_STATE_ERROR,
            actor="control",
            message=message,
            error=lifecycle.make_error(reason, message, phase=row.state),
        )
        if applied:
            self.context.close_session(row.id, message, S.RUN_STATE_ERROR)
            await self.context.stop(row, 1.0)


def exit_error(container: op.RunContainer, row: RunRow) -> lc.RunError:
    """The RunError a container exit means for a run that had not finished."""
    cause, code = container.exit_cause, container.exit_code
    if cause == op.EXIT_CAUSE_DEADLINE_EXCEEDED:
        reason, message = R.ERROR_REASON_DEADLINE_EXCEEDED, "the run exceeded its deadline"
    elif cause == op.EXIT_CAUSE_OOM_KILLED:
        reason, message = R.ERROR_REASON_OOM_KILLED, "the run exceeded its memory limit"
    elif cause == op.EXIT_CAUSE_PIDS_LIMIT_EXCEEDED:
        reason = R.ERROR_REASON_PIDS_LIMIT_EXCEEDED
        message = "the run reached its pids limit (processes and threads)"
    elif cause == op.EXIT_CAUSE_DISK_LIMIT_EXCEEDED:
        reason = R.ERROR_REASON_DISK_LIMIT_EXCEEDED
        message = "the run filled its writable space (inputs, outputs and scratch)"
    elif cause == op.EXIT_CAUSE_SIGNALED or (cause == op.EXIT_CAUSE_EXITED and code != 0):
        reason = R.ERROR_REASON_EXIT_NONZERO
        message = (
            f"the process was killed by signal {-code}"
            if code < 0
            else f"the process exited with code {code}"
        )
    elif cause == op.EXIT_CAUSE_VANISHED:
        reason = R.ERROR_REASON_LOST
        message = (
            "the container disappeared: it was removed outside the platform, or its engine"
            " outlived a restarted orchestrator, which could not learn how it ended"
        )
    elif cause == op.EXIT_CAUSE_STOPPED:
        reason = R.ERROR_REASON_LOST
        message = "the container was stopped before the run reported a result"
    else:
        reason = R.ERROR_REASON_LOST
        message = f"the process ended (exit code {code}) without reporting a result"
    return lifecycle.make_error(
        reason,
        message,
        phase=row.state,
        context={
            "exit_code": code,
            "exit_cause": op.ExitCause.Name(cause),
            "container": container.container_id,
            "backend": container.backend,
        },
        last_output_lines=list(container.last_output_lines),
    )
