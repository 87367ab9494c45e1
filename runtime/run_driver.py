"""The run driver: one run over its own Connect session (see engine.py for the map of the
parts). RunDriver owns the session and the telemetry pipeline, wires the parts together and
hands them the session's events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import grpc

import flnet
from flnet import lifecycle
from flnet.api.runtime.v1 import runtime_service_pb2 as rt

from .backoff import Backoff
from .commands import Commands
from .dev_session import DevSession
from .errors import ToolLoadError
from .exit_codes import EXIT_FAILED, EXIT_OK
from .interrupts import Interrupts
from .loader import ToolFunction, reload_tool
from .reporting import RunReporter
from .run_lifecycle import RunLifecycle
from .run_setup import RunSetup
from .session import Session, SessionEnd, SessionOutcome
from .settings import EngineConfig
from .staging import Staging
from .telemetry import Batcher, EntryBuffer, Outbox

log = logging.getLogger(__name__)

ENGINE_VERSION = flnet.__version__


class RunDriver:
    """Drives one run through its lifecycle over its own Session."""

    def __init__(
        self,
        *,
        run: str,
        credential: Callable[[], str],
        channel: grpc.aio.Channel,
        config: EngineConfig,
        tool: ToolFunction | ToolLoadError,
        input_dir: Path,
        output_dir: Path,
        io: Executor | None = None,
        fallback_config: dict[str, Any] | None = None,
        source_sha256: str = "",
    ) -> None:
        self.run = run
        input_dir, output_dir = Path(input_dir), Path(output_dir)
        self._io = io
        self._config = config
        self._channel = channel
        self._setup = RunSetup(tool, fallback_config, source_sha256)
        self._buffer = EntryBuffer(batch_entries=config.max_batch_entries)
        outbox = Outbox(max_unacked=config.max_unacked_batches)
        self._batcher = Batcher(self._buffer, outbox, linger=config.linger)
        self._session = Session(
            run=run,
            channel=channel,
            credential=credential,
            outbox=outbox,
            handler=self,
            backoff=Backoff(budget=config.reconnect_timeout),
            engine_version=ENGINE_VERSION,
            welcome_timeout=config.welcome_timeout,
        )
        self._interrupts = Interrupts()
        self._reporter = RunReporter(
            run=run,
            batcher=self._batcher,
            session=self._session,
            flush_timeout=config.flush_timeout,
        )
        self._dev = DevSession(
            setup=self._setup,
            reporter=self._reporter,
            interrupts=self._interrupts,
            spawn=self._spawn_child,
            input_dir=input_dir,
            output_dir=output_dir,
            flush_timeout=config.flush_timeout,
        )
        self._commands = Commands(
            session=self._session,
            setup=self._setup,
            reporter=self._reporter,
            interrupts=self._interrupts,
            dev=self._dev,
        )
        staging = Staging(
            run=run,
            session=self._session,
            input_dir=input_dir,
            output_dir=output_dir,
            io=io,
            reconnect_timeout=config.reconnect_timeout,
            interrupts=self._interrupts,
            reporter=self._reporter,
        )
        self._lifecycle = RunLifecycle(
            run=run,
            setup=self._setup,
            reporter=self._reporter,
            interrupts=self._interrupts,
            staging=staging,
            dev=self._dev,
            buffer=self._buffer,
            log_level=config.log_level,
        )
        self._abort = asyncio.Event()
        self._abort_signal = 0

    def _spawn_child(
        self,
        *,
        run: str,
        credential: Callable[[], str],
        input_dir: Path,
        output_dir: Path,
        fallback_config: dict[str, Any] | None,
    ) -> RunDriver:
        """A driver for a run the development session executes: same channel and settings;
        the tool as its folder holds it now (reloaded, with the digest of what was loaded),
        unless the engine was given a tool function."""
        tool, digest = self._setup.tool, ""
        if self._config.tool is None:
            tool, digest = reload_tool(self._config.tool_dir, self._config.entrypoint)
        return RunDriver(
            run=run,
            credential=credential,
            channel=self._channel,
            config=self._config,
            tool=tool,
            input_dir=input_dir,
            output_dir=output_dir,
            io=self._io,
            fallback_config=fallback_config,
            source_sha256=digest,
        )

    # ------------------------------------------------------------------ entry point

    async def drive(self) -> int:
        """Runs the session and the lifecycle; returns the process exit code: 0 once the
        control plane has acknowledged a terminal state, non-zero otherwise."""
        self._batcher.start()
        session = asyncio.create_task(self._session.run(), name=f"flnet-session {self.run}")
        lifecycle_task = asyncio.create_task(
            self._lifecycle.drive(), name=f"flnet-lifecycle {self.run}"
        )
        abort = asyncio.create_task(self._abort.wait())
        try:
            await asyncio.wait(
                {session, lifecycle_task, abort}, return_when=asyncio.FIRST_COMPLETED
            )
            if lifecycle_task.done():
                try:
                    code = lifecycle_task.result()
                except Exception:
                    log.exception("the lifecycle of %s failed", self.run)
                    code = EXIT_FAILED
                self._session.finish()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._config.flush_timeout):
                        await session
                return code
            if session.done():
                end = session.result()
                self._interrupts.tool_cancelled.set()
                return self._exit_code_after(end)
            # A signal without a cancel: flush the telemetry, propose nothing, exit non-zero.
            log.warning("signal %d: flushing telemetry and exiting", self._abort_signal)
            lifecycle_task.cancel()
            self._interrupts.tool_cancelled.set()
            await self._reporter.flush()
            self._session.finish()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config.flush_timeout):
                    await session
            return 128 + self._abort_signal if self._abort_signal else EXIT_FAILED
        finally:
            for task in (lifecycle_task, abort, session):
                task.cancel()
            for task in (lifecycle_task, abort, session):
                with contextlib.suppress(BaseException):
                    await task
            await self._dev.stop_children("the development session ended")
            await self._batcher.stop()
            self._buffer.close()

    def _exit_code_after(self, end: SessionEnd) -> int:
        if end.outcome is SessionOutcome.CLOSED and (
            self._setup.dev_session or lifecycle.is_terminal(end.state)
        ):
            return EXIT_OK
        if end.outcome is SessionOutcome.FINISHED and lifecycle.is_terminal(end.state):
            return EXIT_OK
        log.error(
            "run %s: session ended (%s: %s) in state %s",
            self.run,
            end.outcome.value,
            end.message,
            lifecycle.state_name(end.state),
        )
        return EXIT_FAILED

    # ------------------------------------------------------------------ signals

    def on_signal(self, signum: int) -> None:
        """SIGTERM/SIGINT: a development session is cancelled ("dev session closed"); a run
        being cancelled ends its grace now; otherwise the engine flushes and exits non-zero
        without proposing anything."""
        if self._abort.is_set() or self._interrupts.grace_is_over:
            log.warning("second signal %d: exiting now", signum)
            self._abort_signal = signum
            self._abort.set()
            return
        if self._setup.dev_session:
            self.request_cancel("dev session closed", 0.0)
        elif self._interrupts.cancel_requested:
            self._interrupts.end_grace()
        else:
            self._abort_signal = signum
            self._abort.set()

    def request_cancel(self, reason: str, grace: float) -> None:
        """Cancels the run: `ctx.cancelled` is set; the tool has `grace` seconds to stop."""
        self._interrupts.request_cancel(reason, grace)

    # ------------------------------------------------------------------ session events

    def on_welcome(self, welcome: rt.Welcome, first: bool) -> None:
        if first:
            self._setup.welcome(welcome)
        else:
            log.info(
                "run %s reconnected; recorded state %s",
                self.run,
                lifecycle.state_name(welcome.state),
            )
        self._check_recorded(welcome.state)

    def on_ack(self, ack: rt.Ack) -> None:
        for rejection in ack.rejections:
            log.warning(
                "run %s: control plane refused entry %d of batch %d: %s (state %s)",
                self.run,
                rejection.index,
                rejection.sequence,
                rejection.reason,
                lifecycle.state_name(ack.state),
            )
        self._check_recorded(ack.state)

    def on_close(self, close: rt.Close) -> None:
        self._interrupts.tool_cancelled.set()

    def on_command(self, command: rt.Command) -> None:
        self._commands.on_command(command)

    def _check_recorded(self, state: int) -> None:
        if (
            lifecycle.is_terminal(state)
            and not self._reporter.terminal_proposed
            and not self._interrupts.ended
        ):
            log.warning(
                "run %s is %s on the control plane; stopping", self.run, lifecycle.state_name(state)
            )
            self._interrupts.end()
