"""The engine's side of one run's `Connect` stream, in the manner of an xDS session.

One Session per run. It opens the stream with Hello (carrying the resume point), waits for
Welcome, then runs three loops until the stream ends: a writer (command results and heartbeats
first, then un-sent batches from the Outbox, in sequence order), a reader (Acks, Commands,
Close) and a heartbeat timer. When the stream breaks it reconnects with backoff (100 ms
doubling to 2 s, with jitter) and resends every un-acked batch; it gives up once the control
plane has been unreachable for the whole budget. A dropped stream is never success: only the
driver decides when the run is over (`finish()`), and a Close from the control plane ends it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf import timestamp_pb2

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.api.runtime.v1 import runtime_service_pb2_grpc as rt_grpc

from .backoff import Backoff, retry_after
from .telemetry import Outbox

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_SECONDS = 5.0
FINISH_DRAIN_SECONDS = 2.0

S = lc.RunState


class SessionOutcome(enum.Enum):
    """How a session ended."""

    FINISHED = "finished"  # the driver ended it after its run was over
    CLOSED = "closed"  # the control plane sent Close
    FAILED = "failed"  # the control plane refused the session (credential, run, protocol)
    GAVE_UP = "gave_up"  # the control plane stayed unreachable for the reconnect budget


@dataclass(frozen=True)
class SessionEnd:
    outcome: SessionOutcome
    message: str
    state: int  # the run's last recorded state known to the session


class SessionHandler(Protocol):
    """What the run driver hears from its session. Called on the loop, must not block."""

    def on_welcome(self, welcome: rt.Welcome, first: bool) -> None: ...

    def on_ack(self, ack: rt.Ack) -> None: ...

    def on_command(self, command: rt.Command) -> None: ...

    def on_close(self, close: rt.Close) -> None: ...


class _StreamBroken(Exception):
    pass


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries a run credential."""
    return (("authorization", f"Bearer {token}"),)


class Session:
    """Keeps a run's Connect stream up until the run is over."""

    def __init__(
        self,
        *,
        run: str,
        channel: grpc.aio.Channel,
        credential: Callable[[], str],
        outbox: Outbox,
        handler: SessionHandler,
        backoff: Backoff,
        engine_version: str,
        welcome_timeout: float = 30.0,
    ) -> None:
        self.run_name = run
        self._stub = rt_grpc.RuntimeServiceStub(channel)
        self._credential = credential
        self._outbox = outbox
        self._handler = handler
        self._backoff = backoff
        self._engine_version = engine_version
        self._welcome_timeout = welcome_timeout
        self._control: collections.deque[rt.ConnectRequest] = collections.deque()
        self._ready = asyncio.Event()
        self._finish = asyncio.Event()
        self._welcomed = False
        self._healthy = False
        self._token = ""
        self.recorded_state: int = S.RUN_STATE_UNSPECIFIED
        self.connected = False
        outbox.add_listener(self._ready.set)

    @property
    def stub(self) -> Any:
        return self._stub

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata with the current credential (re-read each time: it may rotate)."""
        self._token = self._credential()
        return bearer(self._token)

    def send_result(self, command_id: str, ok: bool, message: str = "") -> None:
        """Queues a CommandResult (sent before any batch still waiting)."""
        self._control.append(
            rt.ConnectRequest(
                command_result=rt.CommandResult(command_id=command_id, ok=ok, message=message)
            )
        )
        self._ready.set()

    def finish(self) -> None:
        """Ends the session: half-close the stream and stop reconnecting."""
        self._finish.set()

    async def run(self) -> SessionEnd:
        """Connects, and reconnects after every break, until the session ends."""
        self._backoff.reset()
        problem = ""
        while True:
            if self._finish.is_set():
                return self._end(SessionOutcome.FINISHED, "finished")
            try:
                end = await self._stream_once()
                if end is not None:
                    return end
                problem = "the control plane ended the stream"
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                problem = f"{getattr(code, 'name', code)}: {exc.details() or ''}".rstrip(": ")
                if code == grpc.StatusCode.UNAUTHENTICATED and self._credential_rotated():
                    log.info("credential was refused but has changed since; retrying")
                elif retry_after(exc) is None:
                    log.error("control plane refused the session of %s: %s", self.run_name, problem)
                    return self._end(SessionOutcome.FAILED, problem)
            except (_StreamBroken, TimeoutError) as exc:
                problem = str(exc) or type(exc).__name__
            except Exception as exc:  # the stream broke in a way gRPC did not classify
                problem = f"{type(exc).__name__}: {exc}"
            if self._finish.is_set():
                return self._end(SessionOutcome.FINISHED, "finished")
            if self._healthy:  # the budget counts from the break, not from the last Welcome
                self._healthy = False
                self._backoff.reset()
            delay = self._backoff.next_delay()
            if delay is None:
                message = (
                    f"control plane unreachable for {self._backoff.budget:g} s "
                    f"(last problem: {problem})"
                )
                log.error("giving up on %s: %s", self.run_name, message)
                return self._end(SessionOutcome.GAVE_UP, message)
            log.warning(
                "stream of %s broke (%s); reconnecting in %.2f s", self.run_name, problem, delay
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._finish.wait()

    def _end(self, outcome: SessionOutcome, message: str) -> SessionEnd:
        return SessionEnd(outcome, message, self.recorded_state)

    def _credential_rotated(self) -> bool:
        try:
            return self._credential() != self._token
        except OSError:
            return False

    async def _stream_once(self) -> SessionEnd | None:
        call = self._stub.Connect(metadata=self.metadata())
        tasks: list[asyncio.Task[Any]] = []
        try:
            await call.write(
                rt.ConnectRequest(
                    hello=rt.Hello(
                        run=self.run_name,
                        engine_version=self._engine_version,
                        hostname=socket.gethostname(),
                        pid=os.getpid(),
                        resend_from_sequence=self._outbox.resend_from(),
                    )
                )
            )
            async with asyncio.timeout(self._welcome_timeout):
                first = await call.read()
            if not isinstance(first, rt.ConnectResponse):
                raise _StreamBroken("the stream ended before Welcome")
            kind = first.WhichOneof("message")
            if kind == "close":
                return self._closed(first.close)
            if kind != "welcome":
                raise _StreamBroken(f"expected Welcome, got {kind}")
            welcome = first.welcome
            self._healthy = True
            if welcome.state != S.RUN_STATE_UNSPECIFIED:
                self.recorded_state = welcome.state
            self._outbox.rewind(welcome.acked_sequence)
            # Heartbeats of the broken stream are stale; command results are kept.
            kept = [m for m in self._control if m.WhichOneof("message") == "command_result"]
            self._control.clear()
            self._control.extend(kept)
            self.connected = True
            first_welcome = not self._welcomed
            self._welcomed = True
            interval = welcome.heartbeat_interval.ToTimedelta().total_seconds()
            self._handler.on_welcome(welcome, first_welcome)

            reader = asyncio.create_task(self._read_loop(call), name="flnet-session-reader")
            writer = asyncio.create_task(self._write_loop(call), name="flnet-session-writer")
            beat = asyncio.create_task(
                self._heartbeat_loop(interval if interval > 0 else DEFAULT_HEARTBEAT_SECONDS),
                name="flnet-session-heartbeat",
            )
            finish = asyncio.create_task(self._finish.wait(), name="flnet-session-finish")
            tasks = [reader, writer, beat, finish]
            await asyncio.wait({reader, writer, finish}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done():
                result: SessionEnd | None = reader.result()
                return result
            if finish.done():
                writer.cancel()
                beat.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await writer
                with contextlib.suppress(Exception):
                    await call.done_writing()
                with contextlib.suppress(Exception, TimeoutError):
                    async with asyncio.timeout(FINISH_DRAIN_SECONDS):
                        await asyncio.shield(reader)
                return self._end(SessionOutcome.FINISHED, "finished")
            writer.result()  # raises what broke it
            raise _StreamBroken("the writer stopped")
        finally:
            self.connected = False
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            call.cancel()

    async def _read_loop(self, call: Any) -> SessionEnd | None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                if self._finish.is_set():
                    return self._end(SessionOutcome.FINISHED, "finished")
                return None
            kind = message.WhichOneof("message")
            if kind == "ack":
                ack = message.ack
                if ack.state != S.RUN_STATE_UNSPECIFIED:
                    self.recorded_state = ack.state
                self._outbox.ack(ack.sequence)
                self._dispatch(self._handler.on_ack, ack)
            elif kind == "command":
                self._dispatch(self._handler.on_command, message.command)
            elif kind == "close":
                return self._closed(message.close)
            else:
                log.warning("unexpected %s on the stream of %s; ignored", kind, self.run_name)

    def _closed(self, close: rt.Close) -> SessionEnd:
        if close.state != S.RUN_STATE_UNSPECIFIED:
            self.recorded_state = close.state
        log.info(
            "control plane closed the session of %s (%s; state %s)",
            self.run_name,
            close.reason or "no reason",
            lifecycle.state_name(self.recorded_state),
        )
        self._dispatch(self._handler.on_close, close)
        return self._end(SessionOutcome.CLOSED, close.reason)

    def _dispatch(self, callback: Callable[[Any], None], message: Any) -> None:
        try:
            callback(message)
        except Exception:
            log.exception("handling %s failed", type(message).__name__)

    async def _write_loop(self, call: Any) -> None:
        control = self._control
        outbox = self._outbox
        while True:
            self._ready.clear()
            message = control.popleft() if control else outbox.next_unsent()
            if message is None:
                await self._ready.wait()
                continue
            await call.write(message)

    async def _heartbeat_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            beat = rt.ConnectRequest(heartbeat=rt.Heartbeat(time=_now()))
            self._control.append(beat)
            self._ready.set()


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts
