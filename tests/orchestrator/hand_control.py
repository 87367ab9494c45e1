"""The test itself speaking the control plane's side of SessionService.Attach: a real server
the orchestrator under test dials, which sends it commands one at a time and records what it
reports (registrations with the token presented, container events, command results),
acknowledging each report. A test can hold back the acknowledgements (`acking`,
`sending_acks`), end the session (`drop()`), or refuse the next sessions (`refusals`)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from flnet import timeouts
from flnet.api.orchestrator.v1 import session_service_pb2 as sp
from flnet.api.orchestrator.v1 import session_service_pb2_grpc as spg
from flnet.errors import FlnetError
from flnet.server.interceptors import status_details
from flnet.server.serving import Server

SERVICE = sp.DESCRIPTOR.services_by_name["SessionService"].full_name


class HandControl(spg.SessionServiceServicer):
    def __init__(self, heartbeat: float = 0.5) -> None:
        self.heartbeat = heartbeat
        self.registrations: list[sp.Registration] = []
        # The `authorization` metadata of each Attach, in the order of the registrations.
        self.authorizations: list[str] = []
        self.reports: list[sp.Report] = []  # applied, in order (resends left out)
        self.received: list[sp.Report] = []  # every report that came, resends included
        self.sessions_ended = 0  # sessions over, whichever side ended them
        self.heartbeats = 0
        self.acked = 0
        # Whether to apply and acknowledge reports (off: they pile up in the orchestrator's
        # outbox).
        self.acking = True
        # Whether to send the ReportAck of a report applied (off: applied, but the
        # orchestrator learns it only from the next session's Attached).
        self.sending_acks = True
        # Errors the next sessions end with right after their Registration, one each.
        self.refusals: list[FlnetError] = []
        self.refused: list[sp.Registration] = []
        self._outbox: asyncio.Queue[sp.AttachResponse | None] | None = None
        self._changed = asyncio.Condition()
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self.attached = asyncio.Event()
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        self._server = Server(
            [SERVICE], lambda s: spg.add_SessionServiceServicer_to_server(self, s)
        )
        self.port = await self._server.start(f"127.0.0.1:{port}")

    async def stop(self) -> None:
        self.drop()
        if self._server is not None:
            await self._server.stop(0.5)

    def drop(self) -> None:
        """Ends the current session (the orchestrator dials again)."""
        if self._outbox is not None:
            self._outbox.put_nowait(None)
            self._outbox = None
        self.attached.clear()

    async def Attach(
        self, request_iterator: AsyncIterator[sp.AttachRequest], context: Any
    ) -> AsyncIterator[sp.AttachResponse]:
        requests = aiter(request_iterator)
        first = await anext(requests)
        assert first.HasField("registration"), first
        if self.refusals:
            error = self.refusals.pop(0)
            async with self._changed:
                self.refused.append(first.registration)
                self._changed.notify_all()
            details = (("grpc-status-details-bin", status_details(error, "flnet.control")),)
            await context.abort(error.code, error.message, trailing_metadata=details)
        outbox: asyncio.Queue[sp.AttachResponse | None] = asyncio.Queue()
        self.drop()
        self._outbox = outbox
        metadata = dict(context.invocation_metadata() or ())
        async with self._changed:
            self.authorizations.append(str(metadata.get("authorization", "")))
            self.registrations.append(first.registration)
            self._changed.notify_all()
        attached = sp.Attached(acked_sequence=self.acked)
        attached.heartbeat_interval.FromNanoseconds(int(self.heartbeat * 1e9))
        yield sp.AttachResponse(attached=attached)
        self.attached.set()
        reader = asyncio.create_task(self._read(requests, outbox))
        try:
            while (message := await outbox.get()) is not None:
                yield message
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            async with self._changed:
                self.sessions_ended += 1
                self._changed.notify_all()

    async def _read(
        self, requests: AsyncIterator[sp.AttachRequest], outbox: asyncio.Queue[Any]
    ) -> None:
        async for msg in requests:
            if msg.HasField("heartbeat"):
                self.heartbeats += 1
                continue
            report = msg.report
            async with self._changed:
                self.received.append(report)
                applied = report.sequence > self.acked and self.acking
                if applied:
                    self.reports.append(report)
                    self.acked = report.sequence
                self._changed.notify_all()
            if applied and self.sending_acks:
                outbox.put_nowait(sp.AttachResponse(ack=sp.ReportAck(sequence=self.acked)))

    def send(self, command: sp.FleetCommand) -> str:
        """Sends a command on the current session; returns its id."""
        assert self._outbox is not None, "no orchestrator is attached"
        command.id = command.id or f"command-{next(self._ids)}"
        self._outbox.put_nowait(sp.AttachResponse(command=command))
        return command.id

    async def result(self, command_id: str, limit: float = 60.0) -> sp.CommandResult:
        async with asyncio.timeout(limit):
            async for report in self.follow():
                if (
                    report.HasField("command_result")
                    and report.command_result.command_id == command_id
                ):
                    return report.command_result
        raise AssertionError("unreachable")

    async def command(self, command: sp.FleetCommand, limit: float = 60.0) -> sp.CommandResult:
        await timeouts.wait_for(self.attached.wait(), limit)
        return await self.result(self.send(command), limit)

    async def follow(self, start: int = 0) -> AsyncIterator[sp.Report]:
        """Every applied report from index `start` on, then new ones as they come."""
        index = start
        while True:
            async with self._changed:
                while len(self.reports) <= index:
                    await self._changed.wait()
                batch = self.reports[index:]
            index += len(batch)
            for report in batch:
                yield report

    async def wait_registrations(self, count: int, limit: float = 60.0) -> None:
        await self.wait_until(lambda: len(self.registrations) >= count, limit)

    async def wait_until(self, predicate: Callable[[], bool], limit: float = 60.0) -> None:
        """Until `predicate` holds of what the control has seen (registrations, reports,
        sessions ended)."""
        async with asyncio.timeout(limit), self._changed:
            await self._changed.wait_for(predicate)


def status_code(result: sp.CommandResult) -> grpc.StatusCode:
    return next(c for c in grpc.StatusCode if c.value[0] == result.code)
