"""The server skeleton every FLNet gRPC server uses: explicit limits and keepalive,
health and reflection, requests decoded after the interceptors given to it (so after
authentication: flnet.server.decoding), and a graceful stop on SIGTERM/SIGINT (health
NOT_SERVING, stop accepting, drain, close). Platform-only: imports grpcio-health-checking
and -reflection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from flnet.channels import SERVER_OPTIONS

from .decoding import RequestDecoder

log = logging.getLogger(__name__)

Registrar = Callable[[grpc.aio.Server], None]


class Server:
    """A grpc.aio server with health and reflection, bound to one address. `interceptors`
    run outermost first; the request is decoded after the last of them, and they see it
    as a flnet.server.decoding.RawRequest (streams: an iterator of them)."""

    def __init__(
        self,
        service_names: Sequence[str],
        register: Registrar,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        self._service_names = list(service_names)
        self._register = register
        self._interceptors = list(interceptors)
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self.port = 0

    async def start(self, address: str, *more: str) -> int:
        """Binds `address` (port 0 picks a free one) and any `more` addresses (e.g. a
        unix:///path socket), starts, and returns the port of `address`."""
        server = grpc.aio.server(
            options=SERVER_OPTIONS, interceptors=[*self._interceptors, RequestDecoder()]
        )
        self._register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot bind {address}")
        for extra in more:
            if server.add_insecure_port(extra) == 0:
                raise OSError(f"cannot bind {extra}")
        await server.start()
        self._server = server
        for name in ["", *self._service_names]:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        """Health NOT_SERVING first so balancers drain us, then stop with a grace period."""
        if self._server is None:
            return
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        self._server = None

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def run_until_signalled(start: Callable[[], object], stop: Callable[[], object]) -> None:
    """Awaits `start()`, then blocks until SIGTERM or SIGINT, then awaits `stop()`."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        result = start()
        if asyncio.iscoroutine(result):
            await result
        await stopping.wait()
        log.info("signal received, shutting down")
    finally:
        result = stop()
        if asyncio.iscoroutine(result):
            await result
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
