"""Launching a placed run: the launch command its orchestrator gets (image or source, limits,
deadline, run credential) and what the orchestrator's answer does to the run. An
orchestrator shutting down hands the run back to the queue; one that refuses the run's
artifact or cannot start it ends the run."""

from __future__ import annotations

import logging

import grpc

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.api.orchestrator.v1 import orchestrator_pb2 as op
from flnet.api.orchestrator.v1 import session_service_pb2 as sp
from flnet.control.clock import duration, now_us
from flnet.control.runs.context import RunContext
from flnet.control.store import RunRow
from flnet.errors import FailedPrecondition

log = logging.getLogger(__name__)
S = lc.RunState
R = lc.ErrorReason

# Answers that say the run's artifact cannot be run.
ARTIFACT_REFUSED = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT})
# A run's scratch space (/tmp) when its tool version does not say (tool.proto Resources).
DEFAULT_SCRATCH_BYTES = 64 * 1024**2


def writable_bytes(row: RunRow, version: tp.ToolVersion, output_default: int) -> int:
    """What the run may write: its inputs (as staged), its declared outputs at their size
    limits, and the tool version's scratch space."""
    inputs = sum(i.size_bytes for i in row.spec.inputs)
    outputs = sum(o.max_size_bytes or output_default for o in version.outputs)
    return inputs + outputs + (version.resources.scratch_bytes or DEFAULT_SCRATCH_BYTES)


def launch_command_id(run_id: str) -> str:
    return f"launch {run_id}"


def status_code(code: int) -> grpc.StatusCode:
    return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)


class Launcher:
    def __init__(self, context: RunContext) -> None:
        self.context = context

    def credential(self, row: RunRow) -> str:
        """A run credential for `row`, valid until its deadline (if any)."""
        return self.context.credentials.mint(row.name, self.seconds_left(row))

    @staticmethod
    def seconds_left(row: RunRow) -> float | None:
        if row.deadline_us is None:
            return None
        return (row.deadline_us - now_us()) / 1e6

    async def command(self, row: RunRow) -> sp.FleetCommand:
        """The launch command of a placed run (FlnetError when its version cannot run)."""
        context = self.context
        version = await context.tool_version(row.spec.tool_version)
        request = op.LaunchRunRequest(
            run=row.name,
            tenant=row.tenant,
            credential=self.credential(row),
            control_address=context.engine_address,
        )
        if version.HasField("image"):
            request.image_digest = version.image.digest
            request.entrypoint = version.image.entrypoint
        elif version.HasField("source"):
            request.source_path = str(await context.sources.snapshot(version))
            request.entrypoint = version.source.entrypoint
        else:
            raise FailedPrecondition(f"{version.name} has nothing to run")
        res = version.resources
        request.limits.CopyFrom(
            op.Limits(
                cpu_millis=res.cpu_millis,
                memory_bytes=res.memory_bytes,
                pids=res.pids,
                disk_bytes=writable_bytes(row, version, context.settings.max_output_bytes),
            )
        )
        left = self.seconds_left(row)
        if left is not None:
            request.deadline.CopyFrom(duration(max(left, 0.001)))
        return sp.FleetCommand(id=launch_command_id(row.id), launch=request)

    async def refused(
        self, row: RunRow, orchestrator: str, code: grpc.StatusCode, why: str
    ) -> None:
        """The orchestrator did not launch the run: back to the queue when it is going away,
        the run's end otherwise."""
        if code == grpc.StatusCode.UNAVAILABLE:
            await self.context.store.fleet.requeue(
                row.id,
                orchestrator,
                f"orchestrator {orchestrator} could not launch the run ({why}):"
                " it waits to be placed again",
            )
            self.context.placer.kick()
            return
        reason = (
            R.ERROR_REASON_IMAGE_MISSING if code in ARTIFACT_REFUSED else R.ERROR_REASON_INTERNAL
        )
        await self.context.store.runs.transition(
            row.id,
            S.RUN_STATE_ERROR,
            actor="orchestrator",
            message="launch failed",
            error=lifecycle.make_error(
                reason,
                f"could not launch the run on {orchestrator}: {why}",
                phase=S.RUN_STATE_PENDING,
                context={"orchestrator": orchestrator},
            ),
        )

    def connect_clock(self, row: RunRow) -> int:
        """Since when the run's engine is expected to connect (µs): its launch."""
        return max(row.launched_us or row.create_us, self.context.started_us)
