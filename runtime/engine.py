"""The lifecycle driver (DESIGN.md §4): the engine proposes transitions, the control plane
records them.

    Welcome(PENDING)  -> tool loads, config builds  -> propose INITIALIZED
    Command.start     -> ack, stage inputs (sha256)  -> propose STARTED
                      -> propose RUNNING, call main(ctx) in a worker thread
    tool returned     -> upload declared outputs     -> propose FINISHED, wait for its Ack

Transitions travel as entries of the sequenced telemetry batches, so they are ordered with the
tool's logs and survive reconnects. Errors become ERROR(reason) with a phase; a Cancel command
sets `ctx.cancelled` and ends in CANCELLED once the tool stops or the grace period is over. A
state the control plane records as terminal (Welcome, Ack or Close) is the truth: the driver
stops. A development session (RunSpec.dev_session) stays INITIALIZED and drives each run an
Execute command names, on a stream of its own, with the already-loaded tool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import grpc

import flnet
from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.channels import insecure_channel
from flnet.structs import struct_to_dict

from .backoff import Backoff
from .config import ConfigError, build_config, config_type_of
from .context import Context, Outputs
from .errors import (
    Cancelled,
    ToolLoadError,
    config_error,
    error_from_exception,
    format_traceback,
    simple_error,
)
from .loader import ToolFunction, load_entrypoint
from .session import Session, SessionEnd, SessionOutcome
from .settings import RUN_NAME, EngineConfig, EngineConfigError
from .telemetry import LOG, ROUTER, Batcher, EntryBuffer, Outbox, install_router
from .transfer import TransferError, stage_input, upload_output

log = logging.getLogger(__name__)

S = lc.RunState
R = lc.ErrorReason
T = TypeVar("T")

ENGINE_VERSION = flnet.__version__
DEFAULT_CANCEL_GRACE = 10.0
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_tool_threads: set[threading.Thread] = set()


def live_tool_threads() -> list[threading.Thread]:
    """Tool threads still running (after a cancel whose grace expired)."""
    return [t for t in _tool_threads if t.is_alive()]


class _RunEnded(Exception):
    """The control plane recorded a terminal state this driver did not propose."""


class _CancelRequested(Exception):
    """A Cancel command (or a signal in a development session) arrived."""


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
    ) -> None:
        self.run = run
        self._io = io
        self._config = config
        self._channel = channel
        self._credential = credential
        self._tool = tool
        self._input_dir = Path(input_dir)
        self._output_dir = Path(output_dir)
        self._raw_config: dict[str, Any] | None = fallback_config
        self._buffer = EntryBuffer(batch_entries=config.max_batch_entries)
        self._outbox = Outbox(max_unacked=config.max_unacked_batches)
        self._batcher = Batcher(self._buffer, self._outbox, linger=config.linger)
        self._session = Session(
            run=run,
            channel=channel,
            credential=credential,
            outbox=self._outbox,
            handler=self,
            backoff=Backoff(budget=config.reconnect_timeout),
            engine_version=ENGINE_VERSION,
            welcome_timeout=config.welcome_timeout,
        )
        self._spec = rt.RunSpec()
        self._dev_session = False
        self._welcomed: asyncio.Future[rt.Welcome] = asyncio.get_running_loop().create_future()
        self._start: asyncio.Future[dict[str, Any] | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._cancel = asyncio.Event()
        self._cancel_reason = ""
        self._cancel_deadline = 0.0
        self._grace_over = asyncio.Event()
        self._ended = asyncio.Event()
        self._abort = asyncio.Event()
        self._abort_signal = 0
        self._tool_cancelled = threading.Event()
        self._terminal_proposed = False
        self._phase: int = S.RUN_STATE_PENDING
        self._answered: dict[str, tuple[bool, str]] = {}
        self._children: dict[str, tuple[RunDriver, asyncio.Task[int]]] = {}

    # ------------------------------------------------------------------ entry point

    async def drive(self) -> int:
        """Runs the session and the lifecycle; returns the process exit code: 0 once the
        control plane has acknowledged a terminal state, non-zero otherwise."""
        self._batcher.start()
        session = asyncio.create_task(self._session.run(), name=f"flnet-session {self.run}")
        lifecycle_task = asyncio.create_task(self._lifecycle(), name=f"flnet-lifecycle {self.run}")
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
                self._tool_cancelled.set()
                return self._exit_code_after(end)
            # A signal without a cancel: flush the telemetry, propose nothing, exit non-zero.
            log.warning("signal %d: flushing telemetry and exiting", self._abort_signal)
            lifecycle_task.cancel()
            self._tool_cancelled.set()
            await self._flush()
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
            await self._stop_children("the development session ended")
            await self._batcher.stop()
            self._buffer.close()

    def _exit_code_after(self, end: SessionEnd) -> int:
        if end.outcome is SessionOutcome.CLOSED and (
            self._dev_session or lifecycle.is_terminal(end.state)
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
        if self._abort.is_set() or self._grace_over.is_set():
            log.warning("second signal %d: exiting now", signum)
            self._abort_signal = signum
            self._abort.set()
            return
        if self._dev_session:
            self.request_cancel("dev session closed", 0.0)
        elif self._cancel.is_set():
            self._grace_over.set()
        else:
            self._abort_signal = signum
            self._abort.set()

    def request_cancel(self, reason: str, grace: float) -> None:
        """Cancels the run: `ctx.cancelled` is set; the tool has `grace` seconds to stop (the
        CANCELLED proposal goes out a little before, so it lands before a kill)."""
        if not self._cancel.is_set():
            self._cancel_reason = reason or "cancelled"
            margin = min(1.0, grace * 0.2)
            self._cancel_deadline = time.monotonic() + max(0.0, grace - margin)
        if grace <= 0:
            self._grace_over.set()
        self._tool_cancelled.set()
        self._cancel.set()

    # ------------------------------------------------------------------ session events

    def on_welcome(self, welcome: rt.Welcome, first: bool) -> None:
        if first:
            self._spec.CopyFrom(welcome.spec)
            self._dev_session = welcome.spec.dev_session
            if not self._welcomed.done():
                self._welcomed.set_result(welcome)
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
        self._tool_cancelled.set()

    def _check_recorded(self, state: int) -> None:
        if (
            lifecycle.is_terminal(state)
            and not self._terminal_proposed
            and not self._ended.is_set()
        ):
            log.warning(
                "run %s is %s on the control plane; stopping", self.run, lifecycle.state_name(state)
            )
            self._tool_cancelled.set()
            self._ended.set()

    def on_command(self, command: rt.Command) -> None:
        kind = command.WhichOneof("command")
        if command.id and command.id in self._answered:
            ok, message = self._answered[command.id]
            self._session.send_result(command.id, ok, message)
            return
        if kind == "start":
            ok, message = self._on_start(command.start)
        elif kind == "cancel":
            ok, message = self._on_cancel(command.cancel)
        elif kind == "update_config":
            ok, message = self._on_update_config(command.update_config)
        elif kind == "execute":
            ok, message = self._on_execute(command.execute)
        else:
            ok, message = False, f"unknown command {kind!r}"
        if command.id:
            self._answered[command.id] = (ok, message)
        self._session.send_result(command.id, ok, message)

    def _on_start(self, start: rt.Start) -> tuple[bool, str]:
        if self._dev_session:
            return False, "a development session runs what Execute commands name"
        if self._start.done():
            return True, "already started"
        self._start.set_result(struct_to_dict(start.config) if start.HasField("config") else None)
        return True, ""

    def _on_cancel(self, cancel: rt.Cancel) -> tuple[bool, str]:
        if self._terminal_proposed:
            return True, "the run is already ending"
        if cancel.HasField("grace_period"):
            grace = cancel.grace_period.ToTimedelta().total_seconds()
        elif self._spec.HasField("cancel_grace"):
            grace = self._spec.cancel_grace.ToTimedelta().total_seconds()
        else:
            grace = DEFAULT_CANCEL_GRACE
        self._platform_log(logging.WARNING, f"cancel requested: {cancel.reason or 'no reason'}")
        self.request_cancel(cancel.reason, grace)
        return True, ""

    def _on_update_config(self, update: rt.UpdateConfig) -> tuple[bool, str]:
        if not self._dev_session:
            return False, "configuration updates are for development sessions"
        raw = struct_to_dict(update.config)
        if isinstance(self._tool, ToolLoadError):
            return False, self._tool.error.message
        try:
            self._typed_config(self._tool, raw)
        except ConfigError as exc:
            return False, f"invalid configuration: {exc}"
        self._raw_config = raw
        self._platform_log(logging.INFO, "configuration updated")
        return True, ""

    def _on_execute(self, execute: rt.Execute) -> tuple[bool, str]:
        if not self._dev_session:
            return False, "Execute is for development sessions"
        if not RUN_NAME.fullmatch(execute.run) or not execute.credential:
            return False, "Execute needs a run name and its credential"
        if execute.run in self._children:
            return True, "already executing"
        token = execute.credential
        run_id = execute.run.rsplit("/", 1)[-1]
        child = RunDriver(
            run=execute.run,
            credential=lambda: token,
            channel=self._channel,
            config=self._config,
            tool=self._tool,
            input_dir=self._input_dir / run_id,
            output_dir=self._output_dir / run_id,
            io=self._io,
            fallback_config=self._raw_config,
        )
        task = asyncio.create_task(child.drive(), name=f"flnet-execute {execute.run}")
        self._children[execute.run] = (child, task)
        task.add_done_callback(lambda t: self._child_done(execute.run, t))
        self._platform_log(logging.INFO, f"executing {execute.run}")
        return True, ""

    def _child_done(self, run: str, task: asyncio.Task[int]) -> None:
        self._children.pop(run, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("executing %s failed: %r", run, exc)
        else:
            log.info("executed %s (exit code %d)", run, task.result())

    async def _stop_children(self, reason: str) -> None:
        children = list(self._children.values())
        for child, _ in children:
            child.request_cancel(reason, 0.0)
        if children:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config.flush_timeout * 2):
                    await asyncio.gather(*(t for _, t in children), return_exceptions=True)
        for _, task in children:
            task.cancel()

    # ------------------------------------------------------------------ lifecycle

    async def _lifecycle(self) -> int:
        try:
            return await self._lifecycle_steps()
        except _RunEnded:
            await self._flush()
            return EXIT_OK if lifecycle.is_terminal(self._session.recorded_state) else EXIT_FAILED
        except _CancelRequested:
            if self._dev_session:
                await self._stop_children(self._cancel_reason)
            return await self._terminal(S.RUN_STATE_CANCELLED, message=self._cancel_reason)
        except Exception as exc:  # a fault of the engine itself, not of the tool
            log.exception("run %s: the engine failed", self.run)
            error = error_from_exception(exc, phase=self._phase, reason=R.ERROR_REASON_INTERNAL)
            error.message = f"the engine failed: {error.message}"
            return await self._terminal(S.RUN_STATE_ERROR, error=error)

    async def _lifecycle_steps(self) -> int:
        welcome = await self._welcomed
        spec = self._spec
        state = welcome.state
        self._phase = state
        if lifecycle.is_terminal(state):
            log.info("run %s is already %s", self.run, lifecycle.state_name(state))
            return EXIT_OK
        if isinstance(self._tool, ToolLoadError):
            error = lc.RunError()
            error.CopyFrom(self._tool.error)
            error.phase = state
            return await self._terminal(S.RUN_STATE_ERROR, error=error)
        tool = self._tool

        if state == S.RUN_STATE_PENDING:
            if spec.HasField("config"):
                self._raw_config = struct_to_dict(spec.config)
            if self._raw_config is None and not spec.dev_session:
                return await self._terminal(
                    S.RUN_STATE_ERROR,
                    error=simple_error(
                        R.ERROR_REASON_CONFIG_INVALID,
                        "the run has no configuration",
                        phase=S.RUN_STATE_PENDING,
                    ),
                )
            if self._raw_config is not None:
                try:
                    self._typed_config(tool, self._raw_config)
                except ConfigError as exc:
                    return await self._terminal(
                        S.RUN_STATE_ERROR, error=config_error(exc, phase=S.RUN_STATE_PENDING)
                    )
            self._propose(S.RUN_STATE_INITIALIZED)
            state = S.RUN_STATE_INITIALIZED
        elif spec.HasField("config") and self._raw_config is None:
            self._raw_config = struct_to_dict(spec.config)

        if spec.dev_session:
            return await self._serve_dev_session()
        if state != S.RUN_STATE_INITIALIZED:
            # A fresh engine for a run already STARTED/RUNNING: its work was in another
            # process. Never restart the tool; the control plane records the cause.
            log.error(
                "run %s is already %s; this engine has no work in flight for it",
                self.run,
                lifecycle.state_name(state),
            )
            return EXIT_FAILED

        start_config = await self._race(self._start)
        raw = start_config if start_config is not None else (self._raw_config or {})
        self._raw_config = raw
        try:
            typed = self._typed_config(tool, raw)
        except ConfigError as exc:
            return await self._terminal(
                S.RUN_STATE_ERROR, error=config_error(exc, phase=S.RUN_STATE_INITIALIZED)
            )

        try:
            inputs = await self._race(self._stage_inputs(spec))
        except TransferError as exc:
            reason = R.ERROR_REASON_INTERNAL if exc.retryable else R.ERROR_REASON_INPUT_INVALID
            return await self._terminal(
                S.RUN_STATE_ERROR,
                error=simple_error(reason, str(exc), phase=S.RUN_STATE_INITIALIZED),
            )
        except (OSError, ValueError) as exc:
            return await self._terminal(
                S.RUN_STATE_ERROR,
                error=simple_error(
                    R.ERROR_REASON_INPUT_INVALID,
                    f"staging inputs failed: {exc}",
                    phase=S.RUN_STATE_INITIALIZED,
                ),
            )
        self._propose(S.RUN_STATE_STARTED)

        with contextlib.suppress(OSError):
            self._output_dir.mkdir(parents=True, exist_ok=True)
        ctx: Context[Any] = Context(
            run=self.run,
            config=typed,
            raw_config=raw,
            inputs=inputs,
            outputs=Outputs(self._output_dir, [o.name for o in spec.outputs]),
            buffer=self._buffer,
            cancelled=self._tool_cancelled,
            log_level=self._config.log_level,
        )
        self._propose(S.RUN_STATE_RUNNING)
        outcome = await self._run_tool(tool, ctx)
        if outcome is not None:
            return outcome
        return await self._deliver_outputs(spec, ctx.outputs)

    def _typed_config(self, tool: ToolFunction, raw: dict[str, Any]) -> Any:
        config_type = config_type_of(tool)
        if config_type is None:
            return raw
        return build_config(config_type, raw)

    async def _stage_inputs(self, spec: rt.RunSpec) -> dict[str, Path]:
        staged: dict[str, Path] = {}
        backoff = Backoff(budget=self._config.reconnect_timeout)
        for ref in spec.inputs:
            path = await stage_input(
                self._session.stub,
                run=self.run,
                ref=ref,
                directory=self._input_dir,
                metadata=self._session.metadata,
                backoff=backoff,
                executor=self._io,
            )
            staged[ref.name] = path
            self._platform_log(logging.INFO, f"staged input {ref.name} ({ref.size_bytes} bytes)")
        return staged

    async def _run_tool(self, tool: ToolFunction, ctx: Context[Any]) -> int | None:
        """Runs the tool; returns an exit code when the run ended, None when it returned."""
        result = self._start_tool_thread(tool, ctx)
        await self._until_done_or_interrupted(result)
        if self._ended.is_set() and not result.done():
            raise _RunEnded
        if self._cancel.is_set():
            if not result.done():
                grace_over = asyncio.create_task(self._grace_over.wait())
                remaining = max(0.0, self._cancel_deadline - time.monotonic())
                try:
                    grace: set[asyncio.Future[Any]] = {result, grace_over}
                    first = asyncio.FIRST_COMPLETED
                    await asyncio.wait(grace, timeout=remaining, return_when=first)
                finally:
                    grace_over.cancel()
            if not result.done():
                log.warning("run %s: the tool did not stop within the grace period", self.run)
                self._platform_log(logging.WARNING, "the tool did not stop within the grace period")
            elif isinstance(result.result(), BaseException) and not isinstance(
                result.result(), Cancelled
            ):
                exc = result.result()
                assert exc is not None
                self._platform_log(
                    logging.WARNING,
                    f"the tool raised {type(exc).__name__} while being cancelled",
                    exc=exc,
                )
            raise _CancelRequested
        exc = result.result()
        if exc is None or (isinstance(exc, SystemExit) and exc.code in (None, 0)):
            return None
        if isinstance(exc, SystemExit):
            return await self._terminal(
                S.RUN_STATE_ERROR,
                error=simple_error(
                    R.ERROR_REASON_EXIT_NONZERO,
                    f"the tool called sys.exit({exc.code!r})",
                    phase=S.RUN_STATE_RUNNING,
                ),
            )
        error = error_from_exception(exc, phase=S.RUN_STATE_RUNNING, skip_frames=1)
        if isinstance(exc, Cancelled):
            error.message = f"the tool raised Cancelled without a cancel request: {error.message}"
        self._platform_log(
            logging.ERROR,
            f"the tool raised {error.error_type}: {error.message}",
            traceback=error.traceback,
        )
        return await self._terminal(S.RUN_STATE_ERROR, error=error)

    def _start_tool_thread(
        self, tool: ToolFunction, ctx: Context[Any]
    ) -> asyncio.Future[BaseException | None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BaseException | None] = loop.create_future()
        handler = ctx.log_handler

        def deliver(outcome: BaseException | None) -> None:
            if not future.done():
                future.set_result(outcome)

        def target() -> None:
            ident = threading.get_ident()
            ROUTER.route(ident, handler)
            outcome: BaseException | None = None
            try:
                tool(ctx)
            except BaseException as exc:
                outcome = exc
            finally:
                ROUTER.unroute(ident)
                with contextlib.suppress(RuntimeError):  # the loop is gone
                    loop.call_soon_threadsafe(deliver, outcome)
                _tool_threads.discard(threading.current_thread())

        thread = threading.Thread(target=target, name=f"flnet-tool {self.run}", daemon=True)
        _tool_threads.add(thread)
        try:
            thread.start()
        except RuntimeError:  # "can't start new thread": a pids limit
            _tool_threads.discard(thread)
            raise
        return future

    async def _deliver_outputs(self, spec: rt.RunSpec, outputs: Outputs) -> int:
        existing = outputs.existing()
        missing = [o.name for o in spec.outputs if o.required and o.name not in existing]
        if missing:
            return await self._terminal(
                S.RUN_STATE_ERROR,
                error=simple_error(
                    R.ERROR_REASON_OUTPUT_MISSING,
                    f"the tool returned without writing required output(s) {', '.join(missing)}",
                    phase=S.RUN_STATE_RUNNING,
                ),
            )
        # Outputs are accepted once RUNNING is recorded: wait for everything proposed so far.
        await self._race(self._outbox.wait_acked(self._batcher.flush()))
        backoff = Backoff(budget=self._config.reconnect_timeout)
        for name, path in existing.items():
            try:
                response = await self._race(
                    upload_output(
                        self._session.stub,
                        run=self.run,
                        name=name,
                        path=path,
                        metadata=self._session.metadata,
                        backoff=backoff,
                        executor=self._io,
                    )
                )
            except TransferError as exc:
                reason = R.ERROR_REASON_INTERNAL if exc.retryable else R.ERROR_REASON_OUTPUT_INVALID
                return await self._terminal(
                    S.RUN_STATE_ERROR,
                    error=simple_error(reason, str(exc), phase=S.RUN_STATE_RUNNING),
                )
            except OSError as exc:
                return await self._terminal(
                    S.RUN_STATE_ERROR,
                    error=simple_error(
                        R.ERROR_REASON_OUTPUT_INVALID,
                        f"output {name} cannot be read: {exc}",
                        phase=S.RUN_STATE_RUNNING,
                    ),
                )
            self._platform_log(
                logging.INFO,
                f"uploaded output {name} ({response.size_bytes} bytes, sha256 {response.sha256})",
            )
        return await self._terminal(S.RUN_STATE_FINISHED)

    async def _serve_dev_session(self) -> int:
        """A development session stays up, running Execute commands, until it is cancelled
        (Cancel, or SIGINT/SIGTERM) or closed."""
        self._platform_log(logging.INFO, "development session ready")
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._race(never)
        return EXIT_OK  # pragma: no cover - _race raises

    # ------------------------------------------------------------------ helpers

    async def _until_done_or_interrupted(self, work: asyncio.Future[Any]) -> None:
        """Until `work` is done, a cancel is requested, or the run ends on the control
        plane, whichever comes first (`work` itself is left running)."""
        cancel = asyncio.create_task(self._cancel.wait())
        ended = asyncio.create_task(self._ended.wait())
        try:
            waiters: set[asyncio.Future[Any]] = {work, cancel, ended}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancel.cancel()
            ended.cancel()

    async def _race(self, awaitable: Awaitable[T]) -> T:
        """Awaits `awaitable` unless the run is cancelled (_CancelRequested) or ends on the
        control plane (_RunEnded) first."""
        work = asyncio.ensure_future(awaitable)
        await self._until_done_or_interrupted(work)
        if work.done():
            return work.result()
        work.cancel()
        with contextlib.suppress(BaseException):
            await work
        if self._ended.is_set():
            raise _RunEnded
        raise _CancelRequested

    def _propose(self, state: int, *, error: lc.RunError | None = None, message: str = "") -> int:
        transition = rt.Transition(to_state=state, message=message)  # type: ignore[arg-type]
        if error is not None:
            transition.error.CopyFrom(error)
        if lifecycle.is_terminal(state):
            self._terminal_proposed = True
        else:
            self._phase = state
        log.info(
            "run %s: proposing %s%s",
            self.run,
            lifecycle.state_name(state),
            f" ({lifecycle.reason_name(error.reason)}: {error.message})" if error else "",
        )
        return self._batcher.propose(transition)

    async def _terminal(
        self, state: int, *, error: lc.RunError | None = None, message: str = ""
    ) -> int:
        """Proposes a terminal state and waits for the Ack that covers it."""
        sequence = self._propose(state, error=error, message=message)
        await self._outbox.wait_acked(sequence)
        recorded = self._session.recorded_state
        if lifecycle.is_terminal(recorded):
            if recorded != state:
                log.warning(
                    "run %s: proposed %s, control plane recorded %s",
                    self.run,
                    lifecycle.state_name(state),
                    lifecycle.state_name(recorded),
                )
            return EXIT_OK
        log.error(
            "run %s: proposed %s but the recorded state is %s",
            self.run,
            lifecycle.state_name(state),
            lifecycle.state_name(recorded),
        )
        return EXIT_FAILED

    async def _flush(self) -> None:
        """Cuts what is buffered and waits (bounded) until it is acknowledged."""
        sequence = self._batcher.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._config.flush_timeout):
                await self._outbox.wait_acked(sequence)

    def _platform_log(
        self,
        level: int,
        message: str,
        *,
        exc: BaseException | None = None,
        traceback: str | None = None,
    ) -> None:
        """A log line of the engine itself, sent with the run's telemetry."""
        if exc is not None and traceback is None:
            traceback = format_traceback(exc)
        self._buffer.append(
            (
                LOG,
                time.time_ns(),
                level,
                message,
                "flnet.engine",
                "",
                0,
                "",
                traceback,
            )
        )


async def run_engine(config: EngineConfig) -> int:
    """Drives `config.run` to a terminal state. Returns the exit code: 0 once the control
    plane has acknowledged a terminal state; non-zero otherwise (2: unusable settings)."""
    try:
        config.read_credential()
    except (OSError, EngineConfigError) as exc:
        log.error("cannot read the run credential: %s", exc)
        return EXIT_USAGE
    undo_router = install_router(config.log_level)
    tool: ToolFunction | ToolLoadError
    if config.tool is not None:
        tool = config.tool
    else:
        try:
            tool = load_entrypoint(config.tool_dir, config.entrypoint)
        except ToolLoadError as exc:
            log.error("cannot load %s from %s: %s", config.entrypoint, config.tool_dir, exc)
            tool = exc
    channel = insecure_channel(config.control_address)
    loop = asyncio.get_running_loop()
    io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flnet-io")
    installed: list[int] = []
    try:
        driver = RunDriver(
            run=config.run,
            credential=config.read_credential,
            channel=channel,
            config=config,
            tool=tool,
            input_dir=config.input_dir,
            output_dir=config.output_dir,
            io=io,
        )
        if config.handle_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(signum, driver.on_signal, int(signum))
                    installed.append(signum)
                except (RuntimeError, ValueError, NotImplementedError):
                    log.debug("cannot handle signal %d here", signum)
        return await driver.drive()
    finally:
        for installed_signal in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(installed_signal)
        await channel.close()
        io.shutdown(wait=False, cancel_futures=True)
        undo_router()
