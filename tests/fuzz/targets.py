"""A server under fuzzing, seen from outside: its methods as server reflection lists them,
calls of any method with raw bytes (a channel's generic calls with identity serializers),
and its health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from flnet.server.auth.policy import PUBLIC_SERVICES, requirement_of

# A call that is still streaming after this long is left (cancelled), not failed.
STREAM_WINDOW = 0.5
# A unary call gets this long (a loaded 2-core machine is slow, never this slow).
CALL_TIMEOUT = 20.0


class Raw:
    """Calls of any method on `channel` with raw bytes: no serializers at all."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel

    def unary_unary(self, path: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
        return self.channel.unary_unary(path)

    def unary_stream(self, path: str) -> grpc.aio.UnaryStreamMultiCallable[bytes, bytes]:
        return self.channel.unary_stream(path)

    def stream_unary(self, path: str) -> grpc.aio.StreamUnaryMultiCallable[bytes, bytes]:
        return self.channel.stream_unary(path)

    def stream_stream(self, path: str) -> grpc.aio.StreamStreamMultiCallable[bytes, bytes]:
        return self.channel.stream_stream(path)


async def stream_of(frames: Sequence[bytes]) -> AsyncIterator[bytes]:
    for frame in frames:
        yield frame


@dataclass(frozen=True)
class Method:
    path: str  # "/package.Service/Method"
    descriptor: descriptor.MethodDescriptor
    #: The audience of the tokens it accepts; None: public (health, reflection).
    audience: str | None

    @property
    def client_streaming(self) -> bool:
        return bool(self.descriptor.client_streaming)

    @property
    def server_streaming(self) -> bool:
        return bool(self.descriptor.server_streaming)

    def parses(self, frame: bytes) -> bool:
        """Whether `frame` is a valid message of the method's request type."""
        try:
            message_factory.GetMessageClass(self.descriptor.input_type).FromString(frame)
        except DecodeError:
            return False
        return True


@dataclass
class Target:
    """A running server: where, the tokens that open each audience, resource names that
    exist on it, and valid requests of some methods ("/package.Service/Method" -> the
    messages of one call: one, or a stream's) for fuzzing to start from."""

    name: str
    address: str
    tokens: Mapping[str, str]
    names: Sequence[str] = ()
    templates: Mapping[str, Sequence[Message]] = field(default_factory=dict)
    channel: grpc.aio.Channel = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.address)

    async def close(self) -> None:
        await self.channel.close()

    async def methods(self) -> list[Method]:
        """Every method of every service the server lists through reflection (their
        descriptors: the default pool, where the server's generated modules put them)."""
        stub: Any = reflection_pb2_grpc.ServerReflectionStub(self.channel)  # type: ignore[arg-type]

        async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        services: list[str] = []
        async for response in stub.ServerReflectionInfo(ask()):
            services += [s.name for s in response.list_services_response.service]
        pool = descriptor_pool.Default()
        found = []
        for name in services:
            service = pool.FindServiceByName(name)
            for m in service.methods:
                requirement = None if name in PUBLIC_SERVICES else requirement_of(m)
                audience = requirement.audience if requirement is not None else None
                found.append(Method(f"/{name}/{m.name}", m, audience))
        return found

    async def call(
        self, method: Method, frames: Sequence[bytes], token: str | None
    ) -> grpc.StatusCode:
        """Sends `frames` (one for unary requests) to `method`; how the call ended. A
        stream of responses still open after STREAM_WINDOW seconds counts as OK."""
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        raw, path = Raw(self.channel), method.path
        try:
            if not method.server_streaming:
                if method.client_streaming:
                    await raw.stream_unary(path)(
                        stream_of(frames), metadata=metadata, timeout=CALL_TIMEOUT
                    )
                else:
                    await raw.unary_unary(path)(frames[0], metadata=metadata, timeout=CALL_TIMEOUT)
                return grpc.StatusCode.OK
            responses: (
                grpc.aio.UnaryStreamCall[bytes, bytes] | grpc.aio.StreamStreamCall[bytes, bytes]
            )
            if method.client_streaming:
                responses = raw.stream_stream(path)(stream_of(frames), metadata=metadata)
            else:
                responses = raw.unary_stream(path)(frames[0], metadata=metadata)
            try:
                async with asyncio.timeout(STREAM_WINDOW):
                    async for _ in responses:
                        pass
            except TimeoutError:
                responses.cancel()
            return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as e:
            return e.code()

    async def healthy(self, services: Sequence[str]) -> dict[str, str]:
        """The health of the server ("") and of each of `services`, by name."""
        health: Any = health_pb2_grpc.HealthStub(self.channel)
        states = {}
        for name in ["", *services]:
            response = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            states[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return states
