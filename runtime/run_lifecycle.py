"""The steps of one run's lifecycle (DESIGN.md §4); the engine proposes, the control plane
records:

    Welcome(PENDING)  -> tool loads, config builds  -> propose INITIALIZED
    Command.start     -> ack, stage inputs (sha256)  -> propose STARTED
                      -> propose RUNNING, call main(ctx) in a worker thread
    tool returned     -> upload declared outputs     -> propose FINISHED, wait for its Ack

Errors become ERROR(reason) with a phase; a cancel ends in CANCELLED once the tool stops or the
grace period is over. A state the control plane records as terminal is the truth: the steps
stop. A development session stays INITIALIZED and serves Execute commands instead.
"""

from __future__ import annotations

import logging
from typing import Any

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.structs import struct_to_dict

from .config import ConfigError, typed_config
from .context import Context
from .dev_session import DevSession
from .errors import ToolLoadError, config_error, error_from_exception, simple_error
from .exit_codes import EXIT_FAILED, EXIT_OK
from .interrupts import CancelRequested, Interrupts, RunEnded
from .loader import ToolFunction
from .reporting import RunReporter
from .run_setup import RunSetup
from .staging import Staging
from .telemetry import EntryBuffer
from .tool_thread import run_tool

log = logging.getLogger(__name__)

S = lc.RunState
R = lc.ErrorReason


class RunLifecycle:
    """Takes one run from its first Welcome to a terminal state; returns the exit code."""

    def __init__(
        self,
        *,
        run: str,
        setup: RunSetup,
        reporter: RunReporter,
        interrupts: Interrupts,
        staging: Staging,
        dev: DevSession,
        buffer: EntryBuffer,
        log_level: int,
    ) -> None:
        self.run = run
        self._setup = setup
        self._reporter = reporter
        self._interrupts = interrupts
        self._staging = staging
        self._dev = dev
        self._buffer = buffer
        self._log_level = log_level

    async def drive(self) -> int:
        try:
            return await self._steps()
        except RunEnded:
            await self._reporter.flush()
            return EXIT_OK if lifecycle.is_terminal(self._reporter.recorded_state) else EXIT_FAILED
        except CancelRequested:
            reason = self._interrupts.cancel_reason
            if self._setup.dev_session:
                await self._dev.stop_children(reason)
            return await self._reporter.terminal(S.RUN_STATE_CANCELLED, message=reason)
        except Exception as exc:  # a fault of the engine itself, not of the tool
            log.exception("run %s: the engine failed", self.run)
            phase = self._reporter.phase
            error = error_from_exception(exc, phase=phase, reason=R.ERROR_REASON_INTERNAL)
            error.message = f"the engine failed: {error.message}"
            return await self._reporter.terminal(S.RUN_STATE_ERROR, error=error)

    async def _steps(self) -> int:
        welcome = await self._setup.welcomed
        spec = self._setup.spec
        state = welcome.state
        self._reporter.phase = state
        if lifecycle.is_terminal(state):
            log.info("run %s is already %s", self.run, lifecycle.state_name(state))
            return EXIT_OK
        tool = self._setup.tool
        if isinstance(tool, ToolLoadError):
            error = lc.RunError()
            error.CopyFrom(tool.error)
            error.phase = state
            return await self._reporter.terminal(S.RUN_STATE_ERROR, error=error)

        if state == S.RUN_STATE_PENDING:
            if spec.HasField("config"):
                self._setup.raw_config = struct_to_dict(spec.config)
            if self._setup.raw_config is None and not spec.dev_session:
                return await self._reporter.terminal(
                    S.RUN_STATE_ERROR,
                    error=simple_error(
                        R.ERROR_REASON_CONFIG_INVALID,
                        "the run has no configuration",
                        phase=S.RUN_STATE_PENDING,
                    ),
                )
            if self._setup.raw_config is not None:
                try:
                    typed_config(tool, self._setup.raw_config)
                except ConfigError as exc:
                    return await self._reporter.terminal(
                        S.RUN_STATE_ERROR, error=config_error(exc, phase=S.RUN_STATE_PENDING)
                    )
            self._reporter.propose(S.RUN_STATE_INITIALIZED, source_sha256=self._setup.source_sha256)
            state = S.RUN_STATE_INITIALIZED
        elif spec.HasField("config") and self._setup.raw_config is None:
            self._setup.raw_config = struct_to_dict(spec.config)

        if spec.dev_session:
            return await self._dev.serve()
        if state != S.RUN_STATE_INITIALIZED:
            # A fresh engine for a run already STARTED/RUNNING: its work was in another
            # process. Never restart the tool; the control plane records the cause.
            log.error(
                "run %s is already %s; this engine has no work in flight for it",
                self.run,
                lifecycle.state_name(state),
            )
            return EXIT_FAILED
        return await self._start_and_run(tool, spec)

    async def _start_and_run(self, tool: ToolFunction, spec: rt.RunSpec) -> int:
        """INITIALIZED: waits for Start, stages the inputs, runs the tool, uploads outputs."""
        start_config = await self._interrupts.race(self._setup.started)
        raw = start_config if start_config is not None else (self._setup.raw_config or {})
        self._setup.raw_config = raw
        try:
            typed = typed_config(tool, raw)
        except ConfigError as exc:
            return await self._reporter.terminal(
                S.RUN_STATE_ERROR, error=config_error(exc, phase=S.RUN_STATE_INITIALIZED)
            )

        inputs = await self._staging.stage_inputs(spec)
        if isinstance(inputs, lc.RunError):
            return await self._reporter.terminal(S.RUN_STATE_ERROR, error=inputs)
        self._reporter.propose(S.RUN_STATE_STARTED)

        ctx: Context[Any] = Context(
            run=self.run,
            config=typed,
            raw_config=raw,
            inputs=inputs,
            outputs=self._staging.outputs(spec),
            buffer=self._buffer,
            cancelled=self._interrupts.tool_cancelled,
            log_level=self._log_level,
        )
        self._reporter.propose(S.RUN_STATE_RUNNING)
        error = await run_tool(tool, ctx, interrupts=self._interrupts, reporter=self._reporter)
        if error is None:
            error = await self._staging.deliver_outputs(spec, ctx.outputs)
        if error is not None:
            return await self._reporter.terminal(S.RUN_STATE_ERROR, error=error)
        return await self._reporter.terminal(S.RUN_STATE_FINISHED)
