"""The test itself speaking the engine's side of RuntimeService.Connect, to drive the real
control plane through exact sequences of batches and transitions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from flnet import timeouts
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.structs import dict_to_struct
from tests.conftest import TENANT, Clients, request_id


class HandEngine:
    def __init__(self, api: Clients, run: str, credential: str) -> None:
        self.api = api
        self.run = run
        self.credential = credential
        self.outgoing: asyncio.Queue[rt.ConnectRequest | None] = asyncio.Queue()
        self.incoming: asyncio.Queue[rt.ConnectResponse | grpc.aio.AioRpcError] = asyncio.Queue()
        self.sequence = 0
        self._call: grpc.aio.StreamStreamCall[rt.ConnectRequest, rt.ConnectResponse] | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.credential}"),)

    async def connect(self) -> rt.Welcome:
        first = await self.open()
        assert first.HasField("welcome"), first
        return first.welcome

    async def open(self) -> rt.ConnectResponse:
        """Opens the stream with Hello; returns the control plane's first message."""

        async def requests() -> AsyncIterator[rt.ConnectRequest]:
            yield rt.ConnectRequest(hello=rt.Hello(run=self.run, engine_version="test"))
            while (msg := await self.outgoing.get()) is not None:
                yield msg

        self._call = self.api.runtime.Connect(requests(), metadata=self.metadata)
        self._reader = asyncio.create_task(self._read())
        return await self.receive()

    async def _read(self) -> None:
        assert self._call is not None
        try:
            async for msg in self._call:
                await self.incoming.put(msg)
        except grpc.aio.AioRpcError as e:
            await self.incoming.put(e)

    async def receive(self, wait: float = 10.0) -> rt.ConnectResponse:
        """The next message; a stream that failed raises its error here."""
        msg = await timeouts.wait_for(self.incoming.get(), wait)
        if isinstance(msg, grpc.aio.AioRpcError):
            raise msg
        return msg

    async def rest(self, wait: float = 10.0) -> list[rt.ConnectResponse]:
        """Waits until the control plane ends the stream; what it sent meanwhile."""
        assert self._reader is not None
        await timeouts.wait_for(asyncio.shield(self._reader), wait)
        rest = []
        while not self.incoming.empty():
            msg = self.incoming.get_nowait()
            if isinstance(msg, grpc.aio.AioRpcError):
                raise msg
            rest.append(msg)
        return rest

    async def receive_kind(self, kind: str, wait: float = 10.0) -> rt.ConnectResponse:
        """The next message of `kind`, skipping others."""
        while True:
            msg = await self.receive(wait)
            if msg.WhichOneof("message") == kind:
                return msg

    async def send_batch(self, *entries: rt.Entry, sequence: int | None = None) -> rt.Ack:
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        await self.outgoing.put(
            rt.ConnectRequest(batch=rt.Batch(sequence=sequence, entries=list(entries)))
        )
        return (await self.receive_kind("ack")).ack

    async def propose(
        self, state: lc.RunState.ValueType, error: lc.RunError | None = None
    ) -> rt.Ack:
        return await self.send_batch(transition(state, error))

    async def close(self) -> None:
        await self.outgoing.put(None)
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                await timeouts.wait_for(self._reader, 5)
        if self._call is not None:
            self._call.cancel()


def transition(state: lc.RunState.ValueType, error: lc.RunError | None = None) -> rt.Entry:
    t = rt.Transition(to_state=state)
    if error is not None:
        t.error.CopyFrom(error)
    return rt.Entry(transition=t)


def log(message: str) -> rt.Entry:
    return rt.Entry(log=tm.LogRecord(message=message, severity=tm.LOG_SEVERITY_INFO))


async def connected_engine(api: Clients, tool_dir: Path, data: bytes = b"a,b\n1,2\n") -> HandEngine:
    """The connected engine of a new development run of the tool in `tool_dir` (PENDING),
    whose input is `data`."""
    version = await api.register(tool_dir)
    run, credential = await dev_run(api, version.name, await api.upload(data))
    engine = HandEngine(api, run.name, credential)
    welcome = await engine.connect()
    assert (welcome.state, welcome.spec.run) == (lc.RUN_STATE_PENDING, run.name)
    return engine


async def dev_run(api: Clients, tool_version: str, artifact: str) -> tuple[rp.Run, str]:
    """A run the test drives itself: a development session gets its credential back."""
    res = await api.runs.CreateRun(
        rs.CreateRunRequest(
            parent=TENANT,
            request_id=request_id(),
            run=rp.Run(
                tool_version=tool_version,
                config=dict_to_struct({"rate": 0.5}),
                inputs=[rp.RunInput(name="data", artifact=artifact)],
                dev_session=True,
            ),
        )
    )
    return res.run, res.dev_credential
