"""A development session (RunSpec.dev_session): the engine stays INITIALIZED with its tool
loaded and drives each run an Execute command names with a child driver, on a stream of its
own, until the session is cancelled (Cancel, or SIGINT/SIGTERM) or closed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from flnet.api.runtime.v1 import runtime_service_pb2 as rt

from .exit_codes import EXIT_OK
from .interrupts import Interrupts
from .reporting import RunReporter
from .run_setup import RunSetup
from .settings import RUN_NAME

log = logging.getLogger(__name__)


class ChildDriver(Protocol):
    """What a development session needs of the driver of a run it executes."""

    async def drive(self) -> int: ...

    def request_cancel(self, reason: str, grace: float) -> None: ...


class SpawnChild(Protocol):
    """Makes the driver of an executed run: the session's tool, channel and settings."""

    def __call__(
        self,
        *,
        run: str,
        credential: Callable[[], str],
        input_dir: Path,
        output_dir: Path,
        fallback_config: dict[str, Any] | None,
    ) -> ChildDriver: ...


class DevSession:
    """The runs a development session executes, each driven by a child driver."""

    def __init__(
        self,
        *,
        setup: RunSetup,
        reporter: RunReporter,
        interrupts: Interrupts,
        spawn: SpawnChild,
        input_dir: Path,
        output_dir: Path,
        flush_timeout: float,
    ) -> None:
        self._setup = setup
        self._reporter = reporter
        self._interrupts = interrupts
        self._spawn = spawn
        self._input_dir = input_dir
        self._output_dir = output_dir
        self._flush_timeout = flush_timeout
        self._children: dict[str, tuple[ChildDriver, asyncio.Task[int]]] = {}

    def execute(self, execute: rt.Execute) -> tuple[bool, str]:
        """The Execute command: drives the named run with the current configuration; each
        run's files live under `<input or output dir>/<run id>`."""
        if not self._setup.dev_session:
            return False, "Execute is for development sessions"
        if not RUN_NAME.fullmatch(execute.run) or not execute.credential:
            return False, "Execute needs a run name and its credential"
        if execute.run in self._children:
            return True, "already executing"
        token = execute.credential
        run_id = execute.run.rsplit("/", 1)[-1]
        child = self._spawn(
            run=execute.run,
            credential=lambda: token,
            input_dir=self._input_dir / run_id,
            output_dir=self._output_dir / run_id,
            fallback_config=self._setup.raw_config,
        )
        task = asyncio.create_task(child.drive(), name=f"flnet-execute {execute.run}")
        self._children[execute.run] = (child, task)
        task.add_done_callback(lambda t: self._child_done(execute.run, t))
        self._reporter.platform_log(logging.INFO, f"executing {execute.run}")
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

    async def stop_children(self, reason: str) -> None:
        """Cancels every run being executed without grace; waits (bounded) for their ends."""
        children = list(self._children.values())
        for child, _ in children:
            child.request_cancel(reason, 0.0)
        if children:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_timeout * 2):
                    await asyncio.gather(*(t for _, t in children), return_exceptions=True)
        for _, task in children:
            task.cancel()

    async def serve(self) -> int:
        """Stays up, running Execute commands, until the session is cancelled (raises
        CancelRequested) or the control plane ends it (RunEnded)."""
        self._reporter.platform_log(logging.INFO, "development session ready")
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._interrupts.race(never)
        return EXIT_OK  # pragma: no cover - race raises
