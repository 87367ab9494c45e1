"""What every backend shares once it has started an engine (process or container): the
table of runs, one launch at a time per run, the absolute deadline timer, StopRun's and the
deadline's SIGTERM-then-SIGKILL (a fork bomb's, limit_watch.py, without grace), exit
recording with its event, and shutdown. A backend subclasses `Supervisor`, starts engines in
`launch`, and supplies two things: how to signal an engine (`_signal`) and the task that
waits for its end and records it (`_watch`).

Exited runs are remembered (for the registration's container list, idempotent launches and
a stop of an exited run) up to `max_exited`, oldest forgotten first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Generic, TypeVar

from flnet import timeouts

from .backend import Container, ContainerEvent, ContainerState, ExitCause, RunName
from .errors import NotFound, Reason, Unavailable
from .events import EventLog
from .workdir import WorkDir

log = logging.getLogger(__name__)

DEFAULT_KILL_GRACE = 5.0
DEFAULT_MAX_EXITED = 10_000
# How long to wait for an exit to be recorded after SIGKILL before giving up on an engine
# (a process may be stuck in uninterruptible sleep, a Docker engine slow); its exit is
# still recorded whenever it happens.
KILL_WAIT = 30.0
# How long shutdown waits for exits being recorded (and cleaned up) to finish.
_CLOSE_WAIT = 30.0


@dataclass(eq=False, kw_only=True)
class Tracked:
    """Mutable bookkeeping of one run's engine."""

    container: Container
    workdir: WorkDir
    # Set when the orchestrator decided to end it (StopRun, deadline, shutdown).
    stop_cause: ExitCause | None = None
    # The engine has ended (its exit may not be recorded yet).
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    # Its exit is recorded and its EXITED event published.
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    watcher: asyncio.Task[None] | None = None
    deadline_timer: asyncio.Task[None] | None = None


TrackedT = TypeVar("TrackedT", bound=Tracked)


@dataclass(eq=False)
class _LaunchGuard:
    """Serializes the launches of one run; dropped when nobody waits for it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Supervisor(ABC, Generic[TrackedT]):
    """Base of the backends: the Backend protocol's bookkeeping. Use it in one event loop."""

    def __init__(
        self,
        name: str,
        events: EventLog,
        *,
        kill_grace: float = DEFAULT_KILL_GRACE,
        max_exited: int = DEFAULT_MAX_EXITED,
    ) -> None:
        self._name = name
        self._events = events
        self._kill_grace = kill_grace
        self._max_exited = max_exited
        self._tracked: dict[RunName, TrackedT] = {}
        self._exited_order: OrderedDict[RunName, None] = OrderedDict()
        self._launch_guards: dict[RunName, _LaunchGuard] = {}
        self._closed = False

    # -- what subclasses supply ------------------------------------------------------------

    @abstractmethod
    async def _signal(self, tracked: TrackedT, sig: signal.Signals) -> None:
        """Sends `sig` to the engine; a no-op when it is gone."""

    @abstractmethod
    async def _watch(self, tracked: TrackedT) -> None:
        """Waits for the engine's end, then calls `_ended` and `_record_exit`: the one place
        a run ends."""

    # -- Backend protocol ------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        """Prepares the backend before the server serves; nothing by default."""

    async def stop(self, run: RunName, grace: float | None = None) -> Container:
        tracked = self._get(run)
        await self._terminate(
            tracked, ExitCause.STOPPED, self._kill_grace if grace is None else grace
        )
        return tracked.container

    async def get(self, run: RunName) -> Container:
        return self._get(run).container

    async def list(self, *, include_exited: bool = False) -> Sequence[Container]:
        containers = [
            tracked.container
            for tracked in self._tracked.values()
            if include_exited or tracked.container.state is not ContainerState.EXITED
        ]
        epoch = datetime.min.replace(tzinfo=UTC)
        return sorted(containers, key=lambda c: (c.start_time or epoch, c.run))

    def events(self, after_sequence: int = 0) -> AsyncGenerator[ContainerEvent, None]:
        return self._events.subscribe(after_sequence)

    async def close(self, grace: float, *, end_engines: bool = True) -> None:
        """Refuses new launches (and waits for those under way), ends the running engines
        like StopRun with `grace` (or, without `end_engines`, leaves them running and stops
        watching them), then waits for exits being recorded."""
        self._closed = True
        for guard in list(self._launch_guards.values()):
            async with guard.lock:
                pass
        running = [t for t in self._tracked.values() if not t.ended.is_set()]
        if end_engines:
            if running:
                log.info("terminating %d running engine(s)", len(running))
            await asyncio.gather(
                *(self._terminate(t, ExitCause.STOPPED, grace) for t in running),
                return_exceptions=True,
            )
        elif running:
            log.info("leaving %d running engine(s) running", len(running))
        finishing: list[asyncio.Task[None]] = []
        for tracked in self._tracked.values():
            if tracked.deadline_timer is not None:
                tracked.deadline_timer.cancel()
            if tracked.watcher is None or tracked.watcher.done():
                continue
            if not tracked.ended.is_set():
                tracked.watcher.cancel()
            finishing.append(tracked.watcher)
        if finishing:
            _, late = await asyncio.wait(finishing, timeout=_CLOSE_WAIT)
            for task in late:
                log.warning("gave up recording an exit at close: %s", task.get_name())
                task.cancel()

    # -- for subclasses --------------------------------------------------------------------

    def _find(self, run: RunName) -> TrackedT | None:
        return self._tracked.get(run)

    def _get(self, run: RunName) -> TrackedT:
        tracked = self._tracked.get(run)
        if tracked is None:
            raise NotFound(
                f"{run} has no container", Reason.RUN_NOT_FOUND, metadata={"run": str(run)}
            )
        return tracked

    @contextlib.asynccontextmanager
    async def _launching(self, run: RunName) -> AsyncIterator[TrackedT | None]:
        """One launch of a run at a time (launches of different runs run concurrently).
        Yields the run's tracked engine when it has one: the launch returns its container."""
        if self._closed:
            raise Unavailable("the orchestrator is shutting down", Reason.SHUTTING_DOWN)
        guard = self._launch_guards.setdefault(run, _LaunchGuard())
        guard.users += 1
        try:
            async with guard.lock:
                if self._closed:
                    raise Unavailable("the orchestrator is shutting down", Reason.SHUTTING_DOWN)
                yield self._tracked.get(run)
        finally:
            guard.users -= 1
            if not guard.users:
                del self._launch_guards[run]

    def _track(self, tracked: TrackedT, *, running: bool = True) -> None:
        """Takes over a started engine: its RUNNING event, its deadline timer (from
        `container.deadline_time`) and its watcher. An engine that already ended (found
        after a restart) gets its watcher only, which reports the exit."""
        run = tracked.container.run
        self._tracked[run] = tracked
        self._exited_order.pop(run, None)
        if running:
            self._events.append(tracked.container)
        tracked.watcher = asyncio.create_task(self._watch(tracked), name=f"watch {run}")
        deadline = tracked.container.deadline_time
        if running and deadline is not None:
            tracked.deadline_timer = asyncio.create_task(
                self._enforce_deadline(tracked, deadline), name=f"deadline {run}"
            )

    def _ended(self, tracked: TrackedT) -> None:
        """Called by `_watch` as soon as the engine has ended."""
        tracked.ended.set()
        timer = tracked.deadline_timer
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()

    def _record_exit(
        self,
        tracked: TrackedT,
        cause: ExitCause,
        exit_code: int,
        last_lines: tuple[str, ...],
        end_time: datetime | None = None,
    ) -> None:
        """Records the exit and publishes its EXITED event."""
        tracked.container = replace(
            tracked.container,
            state=ContainerState.EXITED,
            exit_cause=cause,
            exit_code=exit_code,
            end_time=end_time or datetime.now(UTC),
            last_output_lines=last_lines,
        )
        self._events.append(tracked.container)
        tracked.exited.set()
        run = tracked.container.run
        log.info("%s exited: %s, code %d", run, cause.name, exit_code)
        self._exited_order[run] = None
        while len(self._exited_order) > self._max_exited:
            old, _ = self._exited_order.popitem(last=False)
            self._tracked.pop(old, None)

    def _fork_bomb_stopper(self, tracked: TrackedT) -> Callable[[], Awaitable[None]]:
        """What a LimitWatch calls on a fork bomb: the engine is ended at once, SIGTERM then
        SIGKILL without grace (nothing can start in it, a SIGTERM handler's thread included)."""

        async def stop() -> None:
            await self._terminate(tracked, ExitCause.PIDS_LIMIT_EXCEEDED, 0.0)

        return stop

    async def _enforce_deadline(self, tracked: TrackedT, deadline: datetime) -> None:
        await asyncio.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()))
        log.info("%s reached its deadline %s", tracked.container.run, deadline.isoformat())
        await self._terminate(tracked, ExitCause.DEADLINE_EXCEEDED, self._kill_grace)

    async def _terminate(self, tracked: TrackedT, cause: ExitCause, grace: float) -> None:
        """SIGTERM, SIGKILL after `grace`; returns once the exit is recorded. The first cause
        wins when several arrive (deadline, then StopRun)."""
        if not tracked.ended.is_set():
            if tracked.stop_cause is None:
                tracked.stop_cause = cause
                await asyncio.to_thread(tracked.workdir.record_stop_cause, cause)
            await self._signal(tracked, signal.SIGTERM)
            try:
                await timeouts.wait_for(tracked.ended.wait(), max(0.0, grace))
            except TimeoutError:
                log.info("%s ignored SIGTERM for %.3f s: SIGKILL", tracked.container.run, grace)
                await self._signal(tracked, signal.SIGKILL)
        try:
            await timeouts.wait_for(tracked.exited.wait(), KILL_WAIT)
        except TimeoutError:
            log.error("%s did not exit %.0f s after SIGKILL", tracked.container.run, KILL_WAIT)
