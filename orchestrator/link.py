"""The orchestrator's session with the control plane (SessionService.Attach), held for as
long as the orchestrator runs: it dials the control plane (so that it can sit behind a
firewall that accepts no inbound connection), registers, carries out the launch and stop
commands it receives on its backend, and reports back container events, command results
and capacity changes, each kept in the outbox until acknowledged.

A broken stream is dialled again (100 ms doubling to 5 s, with jitter; a RetryInfo's delay
when the control plane asks to wait), forever: the control plane judges an orchestrator
away past its lease, not the orchestrator itself. Each new stream registers again with the
containers the backend has, and resends what was not acknowledged. Commands of one run are
carried out in order (a stop never overtakes its launch)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from flnet import timeouts
from flnet.api.orchestrator.v1 import session_service_pb2 as sp
from flnet.api.orchestrator.v1 import session_service_pb2_grpc as spg
from flnet.channels import TokenSource, insecure_channel
from flnet.client.errors import CallError
from flnet.errors import FlnetError
from flnet.oauth import LoginError
from flnet.server.interceptors import status_details

from .backend import Backend, RunName
from .convert import container_to_proto, grace_from_proto, launch_spec_from_proto
from .errors import DOMAIN
from .outbox import Outbox

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT = 2.0
MAX_BACKOFF = 5.0
ATTACHED_TIMEOUT = 30.0
# Messages queued for the stream at most (the writer waits beyond).
OUTGOING = 64
# Logged once attached (`flnet up` waits for it).
ATTACHED_LINE = "attached to the control plane as"
AttachCall = grpc.aio.StreamStreamCall[sp.AttachRequest, sp.AttachResponse]


@dataclass(frozen=True)
class Identity:
    """What the orchestrator registers as."""

    name: str
    cpu_millis: int
    memory_bytes: int
    run_slots: int
    labels: Mapping[str, str] = field(default_factory=dict)
    hostname: str = field(default_factory=socket.gethostname)


class ControlLink:
    """`address`: the control plane ("host:port" or "unix:///path"); `token`: the
    orchestrator's client-credentials token; `engine_address`: where this orchestrator's
    engines reach the control plane, when not where the control plane says."""

    def __init__(
        self,
        backend: Backend,
        identity: Identity,
        address: str,
        token: TokenSource,
        *,
        engine_address: str = "",
    ) -> None:
        self.backend = backend
        self.identity = identity
        self.address = address
        self.token = token
        self.engine_address = engine_address
        self.outbox = Outbox()
        # Set while a session is open (tests and `flnet up` wait for it).
        self.attached = asyncio.Event()
        self.sessions = 0  # sessions opened so far
        self._healthy = False  # the current session got its Attached
        # One command of a run at a time: the lock, and how many commands hold or await it.
        self._run_locks: dict[RunName, tuple[asyncio.Lock, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._main = asyncio.create_task(self._run(), name="control link")

    async def close(self) -> None:
        """Ends the session (the control plane sees the orchestrator detach) and the
        commands under way."""
        for task in [self._main, *self._tasks]:
            if task is not None:
                task.cancel()
        for task in [self._main, *self._tasks]:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def report_capacity(self, cpu_millis: int, memory_bytes: int, run_slots: int) -> None:
        capacity = sp.Capacity(
            cpu_millis=cpu_millis, memory_bytes=memory_bytes, run_slots=run_slots
        )
        self.outbox.add(sp.Report(capacity=capacity))

    async def _run(self) -> None:
        pump = asyncio.create_task(self._pump_events(), name="container events")
        delay = 0.1
        channel = insecure_channel(self.address)
        try:
            stub = spg.SessionServiceStub(channel)
            while True:
                wait: float | None = None
                try:
                    await self._session(stub)
                except grpc.aio.AioRpcError as e:
                    error = CallError.of(e)
                    log.warning(
                        "session with the control plane ended: %s %s", error.code, error.message
                    )
                    wait = error.retry_after
                except LoginError as e:
                    log.warning("cannot obtain the orchestrator's token: %s", e)
                except (TimeoutError, ConnectionError, asyncio.InvalidStateError) as e:
                    # InvalidStateError: a write on a stream that had already ended.
                    log.warning("session with the control plane broke: %r", e)
                self.attached.clear()
                if self._healthy:
                    delay = 0.1
                delay = min(MAX_BACKOFF, delay * 2)
                await asyncio.sleep(max(wait or 0.0, delay * random.uniform(0.8, 1.2)))
        finally:
            pump.cancel()
            self.attached.clear()
            await channel.close()

    async def _session(self, stub: spg.SessionServiceAsyncStub) -> None:
        self._healthy = False
        token = await self.token()
        # Messages go out through the call's own request iterator, never written here: a
        # refusal that comes before the control plane reads the registration (a bad token)
        # is then the status the read below raises, not a failed write (which grpc reports
        # as INTERNAL). Bounded: a slow stream holds the writer back, not memory.
        outgoing: asyncio.Queue[sp.AttachRequest] = asyncio.Queue(maxsize=OUTGOING)
        outgoing.put_nowait(await self._registration())

        async def requests() -> AsyncIterator[sp.AttachRequest]:
            while True:
                yield await outgoing.get()

        call = stub.Attach(requests(), metadata=(("authorization", f"Bearer {token}"),))
        writer: asyncio.Task[None] | None = None
        try:
            async with asyncio.timeout(ATTACHED_TIMEOUT):
                first = await call.read()
            if not isinstance(first, sp.AttachResponse) or not first.HasField("attached"):
                await _ended(call)
                raise ConnectionError("the stream ended before Attached")
            attached = first.attached
            self.outbox.ack(attached.acked_sequence)
            self.sessions += 1
            self._healthy = True
            self.attached.set()
            interval = attached.heartbeat_interval.ToTimedelta().total_seconds()
            log.info("%s %s", ATTACHED_LINE, self.identity.name)
            writer = asyncio.create_task(
                self._write(outgoing, attached.acked_sequence, interval or DEFAULT_HEARTBEAT)
            )
            while isinstance(message := await call.read(), sp.AttachResponse):
                which = message.WhichOneof("message")
                if which == "ack":
                    self.outbox.ack(message.ack.sequence)
                    for refused in message.ack.rejections:
                        log.warning("report %d refused: %s", refused.sequence, refused.message)
                elif which == "command":
                    self._spawn(self._carry_out(message.command))
            await _ended(call)
        finally:
            if writer is not None:
                # Waited for without taking its outcome: a CancelledError here is this task's
                # own (the link closing), and must not be swallowed; a write that failed
                # because the stream ended (InvalidStateError, AioRpcError) is the end of the
                # session, which the read above has seen.
                writer.cancel()
                await asyncio.wait({writer})
                if not writer.cancelled() and (error := writer.exception()) is not None:
                    log.debug("the session's writer ended: %r", error)
            call.cancel()

    async def _registration(self) -> sp.AttachRequest:
        me = self.identity
        containers = await self.backend.list(include_exited=True)
        return sp.AttachRequest(
            registration=sp.Registration(
                name=me.name,
                backend=self.backend.name,
                capacity=sp.Capacity(
                    cpu_millis=me.cpu_millis, memory_bytes=me.memory_bytes, run_slots=me.run_slots
                ),
                labels=dict(me.labels),
                containers=[container_to_proto(c) for c in containers],
                hostname=me.hostname,
            )
        )

    async def _write(
        self, outgoing: asyncio.Queue[sp.AttachRequest], sent: int, interval: float
    ) -> None:
        """Sends the reports after `sent` as they come, and a heartbeat every `interval`."""
        loop = asyncio.get_running_loop()
        beat_at = loop.time()
        while True:
            changed = self.outbox.changed()
            for report in self.outbox.after(sent):
                await outgoing.put(sp.AttachRequest(report=report))
                sent = report.sequence
            if loop.time() >= beat_at:
                stamp = timestamp_pb2.Timestamp()
                stamp.GetCurrentTime()
                heartbeat = sp.OrchestratorHeartbeat(time=stamp)
                await outgoing.put(sp.AttachRequest(heartbeat=heartbeat))
                beat_at = loop.time() + interval
            with contextlib.suppress(TimeoutError):
                await timeouts.wait_for(changed.wait(), max(0.0, beat_at - loop.time()))

    async def _pump_events(self) -> None:
        """Every container event of the backend becomes a report."""
        async for event in self.backend.events(0):
            self.outbox.add(sp.Report(container=container_to_proto(event.container)))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, run: RunName) -> AsyncIterator[None]:
        lock, users = self._run_locks.get(run, (asyncio.Lock(), 0))
        self._run_locks[run] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._run_locks[run]
            if users == 1:
                del self._run_locks[run]
            else:
                self._run_locks[run] = (lock, users - 1)

    async def _carry_out(self, command: sp.FleetCommand) -> None:
        which = command.WhichOneof("command")
        name = command.launch.run if which == "launch" else command.stop.run
        result = sp.CommandResult(command_id=command.id, run=name)
        try:
            run = RunName.parse(name)  # fields named as in the command's request
            async with self._one_at_a_time(run):
                if which == "launch":
                    request = command.launch
                    if self.engine_address:
                        request.control_address = self.engine_address
                    container = await self.backend.launch(launch_spec_from_proto(request))
                elif which == "stop":
                    container = await self.backend.stop(run, grace_from_proto(command.stop))
                else:
                    raise FlnetError(f"unknown command {command.id!r}")
            result.container.CopyFrom(container_to_proto(container))
        except Exception as e:
            error = e if isinstance(e, FlnetError) else None
            if error is None:  # logged with its traceback; its text is not sent (it may leak)
                log.exception("command %s failed", command.id)
                error = FlnetError("internal error")
            result.code = error.code.value[0]
            result.message = error.message
            result.status_details = status_details(error, DOMAIN)
            if which == "launch":
                log.warning("launching %s failed: %s", name, error.message)
        self.outbox.add(sp.Report(command_result=result))


async def _ended(call: AttachCall) -> None:
    """Raises the status the control plane ended the stream with (AioRpcError), if any."""
    code = await call.code()
    if code != grpc.StatusCode.OK:
        raise grpc.aio.AioRpcError(
            code,
            await call.initial_metadata(),
            await call.trailing_metadata(),
            await call.details(),
        )
