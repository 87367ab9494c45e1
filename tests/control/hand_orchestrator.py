"""The test itself speaking an orchestrator's side of SessionService.Attach, to drive the real
control plane's fleet logic (placement, commands, reports, leases) exactly: it registers,
records the commands it gets, and reports what the test says (launched, exited, capacity)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable

import grpc

from flnet import timeouts
from flnet.api.orchestrator.v1 import orchestrator_pb2 as op
from flnet.api.orchestrator.v1 import session_service_pb2 as sp
from flnet.api.orchestrator.v1 import session_service_pb2_grpc as spg
from flnet.channels import insecure_channel
from tests.identity import IDENTITY

# Report sequences start here and grow by one (a restarted orchestrator continues above).
_SEQUENCES = itertools.count(time.time_ns() // 1000)


class HandOrchestrator:
    def __init__(
        self,
        address: str,
        name: str = "hand",
        *,
        slots: int = 4,
        cpu_millis: int = 64_000,
        memory_bytes: int = 64 * 1024**3,
        labels: dict[str, str] | None = None,
        token: str | None = None,
        launch_ok: bool = True,
    ) -> None:
        self.address = address
        self.registration = sp.Registration(
            name=name,
            backend="hand",
            capacity=sp.Capacity(cpu_millis=cpu_millis, memory_bytes=memory_bytes, run_slots=slots),
            labels=labels or {},
        )
        self.token = token if token is not None else IDENTITY.orchestrator_token()
        # Answers launches with a RUNNING container (off: the test answers them).
        self.launch_ok = launch_ok
        self.commands: list[sp.FleetCommand] = []
        self.acks: list[sp.ReportAck] = []
        self.attached: sp.Attached | None = None
        self._outgoing: asyncio.Queue[sp.AttachRequest | None] = asyncio.Queue()
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.StreamStreamCall[sp.AttachRequest, sp.AttachResponse] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self.error: grpc.aio.AioRpcError | None = None

    @property
    def name(self) -> str:
        return self.registration.name

    async def attach(self) -> sp.Attached:
        """Opens the session; returns Attached (AioRpcError when refused)."""
        self._channel = insecure_channel(self.address)
        first = sp.AttachRequest(registration=self.registration)

        async def requests() -> AsyncIterator[sp.AttachRequest]:
            yield first
            while (msg := await self._outgoing.get()) is not None:
                yield msg

        stub = spg.SessionServiceStub(self._channel)
        metadata = (("authorization", f"Bearer {self.token}"),) if self.token else ()
        self._call = stub.Attach(requests(), metadata=metadata)
        response = await timeouts.wait_for(self._call.read(), 30)
        if not isinstance(response, sp.AttachResponse):
            await self._raise_status()
        assert isinstance(response, sp.AttachResponse) and response.HasField("attached")
        self.attached = response.attached
        self._reader = asyncio.create_task(self._read())
        return response.attached

    async def _raise_status(self) -> None:
        assert self._call is not None
        code = await self._call.code()
        raise grpc.aio.AioRpcError(
            code,
            await self._call.initial_metadata(),
            await self._call.trailing_metadata(),
            await self._call.details(),
        )

    async def _read(self) -> None:
        assert self._call is not None
        try:
            while isinstance(msg := await self._call.read(), sp.AttachResponse):
                async with self._changed:
                    if msg.HasField("command"):
                        self.commands.append(msg.command)
                        if self.launch_ok and msg.command.HasField("launch"):
                            self.answer(msg.command)
                    elif msg.HasField("ack"):
                        self.acks.append(msg.ack)
                    self._changed.notify_all()
            await self._raise_status()
        except grpc.aio.AioRpcError as e:
            self.error = e
        finally:
            async with self._changed:
                self._changed.notify_all()

    def report(self, report: sp.Report, sequence: int | None = None) -> int:
        """Sends a report (with the next sequence unless given); returns its sequence."""
        report.sequence = sequence if sequence is not None else next(_SEQUENCES)
        self._outgoing.put_nowait(sp.AttachRequest(report=report))
        return report.sequence

    def answer(self, command: sp.FleetCommand, code: int = 0, message: str = "") -> int:
        run = command.launch.run if command.HasField("launch") else command.stop.run
        result = sp.CommandResult(command_id=command.id, run=run, code=code, message=message)
        if not code:
            state = (
                op.CONTAINER_STATE_RUNNING
                if command.HasField("launch")
                else op.CONTAINER_STATE_EXITED
            )
            result.container.CopyFrom(op.RunContainer(run=run, container_id=run, state=state))
        return self.report(sp.Report(command_result=result))

    def exited(self, run: str, exit_code: int = 0) -> int:
        container = op.RunContainer(
            run=run,
            container_id=run,
            backend="hand",
            state=op.CONTAINER_STATE_EXITED,
            exit_cause=op.EXIT_CAUSE_EXITED,
            exit_code=exit_code,
        )
        return self.report(sp.Report(container=container))

    def heartbeat(self) -> None:
        self._outgoing.put_nowait(sp.AttachRequest(heartbeat=sp.OrchestratorHeartbeat()))

    def launches(self) -> list[str]:
        """The runs it was told to launch, in order (a launch repeated, as commands may be
        after a race with their result, counts once: launches are idempotent)."""
        return list(dict.fromkeys(c.launch.run for c in self.commands if c.HasField("launch")))

    async def wait(self, predicate: Callable[[], object], within: float = 30.0) -> None:
        """Until `predicate()` holds, re-checked on every message."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: bool(predicate()) or self.error is not None)
        if self.error is not None and not predicate():
            raise self.error

    async def acked(self, sequence: int, within: float = 30.0) -> sp.ReportAck:
        await self.wait(lambda: any(a.sequence >= sequence for a in self.acks), within)
        return next(a for a in self.acks if a.sequence >= sequence)

    async def close(self) -> None:
        self._outgoing.put_nowait(None)
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._channel is not None:
            await self._channel.close()
