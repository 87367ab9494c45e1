"""Launching a run's container. An orchestrator that cannot be reached (restarting, say) does
not fail the run: the run waits PENDING, visibly (a line in its history says why), and the
supervisor launches it again (backing off) until an orchestrator answers, the run's deadline
passes, or `launch_patience` runs out. LaunchRun is idempotent per run, so a launch that was
answered after all is not doubled. Which runs wait is known to this replica only: a run whose
replica died while it waited ends by its connect timeout, as before."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.control.clock import now_us, timestamp
from flnet.control.orchestration import LaunchFailed
from flnet.control.runs.context import RunContext
from flnet.control.store import RunRow
from flnet.errors import FlnetError

log = logging.getLogger(__name__)
S = lc.RunState
R = lc.ErrorReason

# Answers that say no orchestrator could take the call now, not that it refused the run.
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# Answers that say the run's artifact cannot be run.
ARTIFACT_REFUSED = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT})


# A run's scratch space (/tmp) when its tool version does not say (tool.proto Resources).
DEFAULT_SCRATCH_BYTES = 64 * 1024**2
# Retries of a waiting launch back off from one supervision pass up to this (seconds).
MAX_RETRY_INTERVAL = 5.0


def writable_bytes(row: RunRow, version: tp.ToolVersion, output_default: int) -> int:
    """What the run may write: its inputs (as staged), its declared outputs at their size
    limits, and the tool version's scratch space."""
    inputs = sum(i.size_bytes for i in row.spec.inputs)
    outputs = sum(o.max_size_bytes or output_default for o in version.outputs)
    return inputs + outputs + (version.resources.scratch_bytes or DEFAULT_SCRATCH_BYTES)


@dataclass
class Waiting:
    since_us: int
    next_try_us: int
    error: str  # the latest answer
    attempts: int = 1


class Launcher:
    def __init__(self, context: RunContext) -> None:
        self.context = context
        self._waiting: dict[str, Waiting] = {}
        # When runs that waited were launched at last: their connect timeout counts from then.
        self._late: dict[str, int] = {}

    def credential(self, row: RunRow) -> str:
        """A run credential for `row`, valid until its deadline (if any)."""
        return self.context.credentials.mint(row.name, self.seconds_left(row))

    @staticmethod
    def seconds_left(row: RunRow) -> float | None:
        if row.deadline_us is None:
            return None
        return (row.deadline_us - now_us()) / 1e6

    async def launch(self, row: RunRow, version: tp.ToolVersion, credential: str) -> None:
        """Asks the orchestrator for the run's container; an orchestrator that cannot be
        reached makes the run wait, any other refusal ends it."""
        left = self.seconds_left(row)
        if left is not None and left <= 0:
            waited = self._waiting.pop(row.id, None)
            message = "the run's deadline passed before an orchestrator could launch it"
            if waited is not None:
                message += f": {waited.error}"
            await self._end(row, R.ERROR_REASON_DEADLINE_EXCEEDED, message, "control")
            return
        try:
            await self.call(row, version, credential)
        except LaunchFailed as e:
            if e.code in UNREACHABLE:
                await self._wait(row, e)
                return
            self._waiting.pop(row.id, None)
            reason = R.ERROR_REASON_INTERNAL
            if e.code in ARTIFACT_REFUSED:
                reason = R.ERROR_REASON_IMAGE_MISSING
            await self._end(row, reason, f"could not launch the run: {e}", "orchestrator")
            return
        if self._waiting.pop(row.id, None) is not None:
            self._late[row.id] = now_us()
            await self._note(row, "an orchestrator answered: the run is launched")

    async def call(self, row: RunRow, version: tp.ToolVersion, credential: str) -> None:
        """One LaunchRun of the run (LaunchFailed when it is refused or unanswered)."""
        context = self.context
        source = None
        if version.HasField("source"):
            try:
                source = await context.sources.snapshot(version)
            except FlnetError as e:
                raise LaunchFailed(e.code, str(e)) from None
        await context.orchestrator.launch(
            row.name,
            row.tenant,
            version,
            credential,
            context.engine_address,
            self.seconds_left(row),
            writable_bytes(row, version, context.settings.max_output_bytes),
            source,
        )

    async def _wait(self, row: RunRow, error: LaunchFailed) -> None:
        now = now_us()
        waiting = self._waiting.get(row.id)
        if waiting is not None:
            waiting.attempts += 1
            waiting.error = str(error)
            backoff = min(MAX_RETRY_INTERVAL, 0.25 * 2**waiting.attempts)
            waiting.next_try_us = now + int(backoff * 1e6)
            return
        self._waiting[row.id] = Waiting(now, now, str(error))
        log.warning("no orchestrator could launch %s (%s): it waits", row.name, error)
        await self._note(
            row,
            f"waiting for an orchestrator ({error}): the launch is retried until one answers",
            tm.LOG_SEVERITY_WARNING,
        )

    def waiting(self, run_id: str) -> bool:
        return run_id in self._waiting

    async def retry(self, row: RunRow, now: int) -> None:
        """Launches a waiting run again, or ends it once it cannot wait any longer."""
        waiting = self._waiting[row.id]
        if now < waiting.next_try_us:
            return
        patience = self.context.settings.launch_patience
        if now - waiting.since_us > patience * 1e6:
            self._waiting.pop(row.id)
            message = f"no orchestrator could launch the run within {patience:g} s: {waiting.error}"
            await self._end(row, R.ERROR_REASON_INTERNAL, message, "control")
            return
        version = await self.context.tool_version(row.spec.tool_version)
        await self.launch(row, version, self.credential(row))

    def connect_clock(self, row: RunRow) -> int:
        """Since when the run's engine is expected to connect (µs)."""
        return max(row.create_us, self.context.started_us, self._late.get(row.id, 0))

    def forget(self, active: set[str]) -> None:
        """Drops what is kept of runs no longer in flight."""
        for kept in (self._waiting, self._late):
            for run_id in [r for r in kept if r not in active]:
                del kept[run_id]

    async def _end(self, row: RunRow, reason: int, message: str, actor: str) -> None:
        await self.context.store.runs.transition(
            row.id,
            S.RUN_STATE_ERROR,
            actor=actor,
            message="launch failed",
            error=lifecycle.make_error(reason, message, phase=S.RUN_STATE_PENDING),
        )

    async def _note(self, row: RunRow, message: str, severity: int = tm.LOG_SEVERITY_INFO) -> None:
        record = tm.LogRecord(
            time=timestamp(now_us()),
            severity=tm.LogSeverity.ValueType(severity),
            message=message,
            logger="flnet.control",
        )
        await self.context.store.runs.note(row.id, record)
