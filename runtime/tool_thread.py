"""The tool's worker thread: `main(ctx)` runs there, with its log records routed to the run's
telemetry. The lifecycle waits for it, for a cancel (and then the grace period) or for the
run's end on the control plane, whichever comes first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from typing import Any

from flnet.api.common.v1 import lifecycle_pb2 as lc

from .context import Context
from .errors import Cancelled, error_from_exception, simple_error
from .interrupts import CancelRequested, Interrupts, RunEnded
from .loader import ToolFunction
from .reporting import RunReporter
from .telemetry import ROUTER

log = logging.getLogger(__name__)

S = lc.RunState
R = lc.ErrorReason

_tool_threads: set[threading.Thread] = set()


def live_tool_threads() -> list[threading.Thread]:
    """Tool threads still running (after a cancel whose grace expired)."""
    return [t for t in _tool_threads if t.is_alive()]


async def run_tool(
    tool: ToolFunction, ctx: Context[Any], *, interrupts: Interrupts, reporter: RunReporter
) -> lc.RunError | None:
    """Runs the tool; returns the run's error when the tool failed, None when it returned.
    Raises RunEnded or CancelRequested when the run was interrupted first."""
    result = start_tool_thread(tool, ctx)
    await interrupts.until_done_or_interrupted(result)
    if interrupts.ended and not result.done():
        raise RunEnded
    if interrupts.cancel_requested:
        await interrupts.wait_out_grace(result)
        if not result.done():
            log.warning("run %s: the tool did not stop within the grace period", ctx.run)
            reporter.platform_log(logging.WARNING, "the tool did not stop within the grace period")
        elif isinstance(result.result(), BaseException) and not isinstance(
            result.result(), Cancelled
        ):
            exc = result.result()
            assert exc is not None
            reporter.platform_log(
                logging.WARNING,
                f"the tool raised {type(exc).__name__} while being cancelled",
                exc=exc,
            )
        raise CancelRequested
    exc = result.result()
    if exc is None or (isinstance(exc, SystemExit) and exc.code in (None, 0)):
        return None
    if isinstance(exc, SystemExit):
        return simple_error(
            R.ERROR_REASON_EXIT_NONZERO,
            f"the tool called sys.exit({exc.code!r})",
            phase=S.RUN_STATE_RUNNING,
        )
    error = error_from_exception(exc, phase=S.RUN_STATE_RUNNING, skip_frames=1)
    if isinstance(exc, Cancelled):
        error.message = f"the tool raised Cancelled without a cancel request: {error.message}"
    reporter.platform_log(
        logging.ERROR,
        f"the tool raised {error.error_type}: {error.message}",
        traceback=error.traceback,
    )
    return error


def start_tool_thread(
    tool: ToolFunction, ctx: Context[Any]
) -> asyncio.Future[BaseException | None]:
    """Starts `tool(ctx)` in a daemon thread; the future gets what it raised (None: returned)."""
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
            for stream in (sys.stdout, sys.stderr):  # a last line printed without a newline
                with contextlib.suppress(Exception):
                    stream.flush()
            ROUTER.unroute(ident)
            with contextlib.suppress(RuntimeError):  # the loop is gone
                loop.call_soon_threadsafe(deliver, outcome)
            _tool_threads.discard(threading.current_thread())

    thread = threading.Thread(target=target, name=f"flnet-tool {ctx.run}", daemon=True)
    _tool_threads.add(thread)
    try:
        thread.start()
    except RuntimeError:  # "can't start new thread": a pids limit
        _tool_threads.discard(thread)
        raise
    return future
