"""Connected engines: one live Connect session per run. Commands go out through the
session's queue and their CommandResults come back as futures."""

from __future__ import annotations

import asyncio
import time
import uuid

from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.errors import FailedPrecondition


class Session:
    """The control plane's side of one engine's Connect stream."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.outbox: asyncio.Queue[rt.ConnectResponse | None] = asyncio.Queue()
        self._pending: dict[str, asyncio.Future[rt.CommandResult]] = {}
        self.closed = False
        self.cancel_sent = False  # the run's cancel went out on this stream

    def send(self, message: rt.ConnectResponse) -> None:
        if not self.closed:
            self.outbox.put_nowait(message)

    def command(self, command: rt.Command) -> asyncio.Future[rt.CommandResult]:
        """Sends a command; the future resolves with the engine's CommandResult."""
        command.id = command.id or uuid.uuid4().hex
        fut: asyncio.Future[rt.CommandResult] = asyncio.get_running_loop().create_future()
        self._pending[command.id] = fut
        self.send(rt.ConnectResponse(command=command))
        return fut

    def resolve(self, result: rt.CommandResult) -> None:
        fut = self._pending.pop(result.command_id, None)
        if fut is not None and not fut.done():
            fut.set_result(result)

    def close(self, message: rt.ConnectResponse | None = None) -> None:
        """Ends the stream after `message` (if any)."""
        if self.closed:
            return
        if message is not None:
            self.outbox.put_nowait(message)
        self.closed = True
        self.outbox.put_nowait(None)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(FailedPrecondition("engine disconnected"))
                fut.exception()  # retrieved: most commands are fire-and-forget
        self._pending.clear()


class SessionRegistry:
    """Live sessions by run, and when each run was last heard from."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._last_seen: dict[str, float] = {}
        self._last_activity: dict[str, float] = {}
        self.started = time.monotonic()

    def open(self, run_id: str) -> Session:
        """Registers a new session; an older one for the same run is closed (newest wins)."""
        old = self._sessions.get(run_id)
        if old is not None:
            old.close()
        session = self._sessions[run_id] = Session(run_id)
        self.touch(run_id)  # heard from; telemetry (not reconnects) counts as activity
        return session

    def discard(self, session: Session) -> None:
        if self._sessions.get(session.run_id) is session:
            del self._sessions[session.run_id]
        session.close()

    def get(self, run_id: str) -> Session | None:
        return self._sessions.get(run_id)

    def touch(self, run_id: str, *, activity: bool = False) -> None:
        now = time.monotonic()
        self._last_seen[run_id] = now
        if activity:
            self._last_activity[run_id] = now

    def silent_for(self, run_id: str) -> float:
        """Seconds since the engine was last heard (since our start if never)."""
        return time.monotonic() - self._last_seen.get(run_id, self.started)

    def inactive_for(self, run_id: str) -> float:
        """Seconds since the engine last sent telemetry (since our start if never)."""
        return time.monotonic() - self._last_activity.get(run_id, self.started)

    def forget(self, run_id: str) -> None:
        self._last_seen.pop(run_id, None)
        self._last_activity.pop(run_id, None)
        session = self._sessions.pop(run_id, None)
        if session is not None:
            session.close()

    def forget_ended(self, active: set[str], quiet_for: float) -> None:
        """Forgets the liveness of runs that are not active and were not heard from for
        `quiet_for` seconds (a run created after `active` was read is heard from, and kept)."""
        now = time.monotonic()
        for run_id in [r for r, t in self._last_seen.items() if r not in active]:
            if now - self._last_seen[run_id] > quiet_for:
                del self._last_seen[run_id]
                self._last_activity.pop(run_id, None)

    def all(self) -> list[Session]:
        return list(self._sessions.values())
