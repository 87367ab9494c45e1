"""The control plane's client of the orchestrator: launch, stop, and a watch loop that
turns container exits into run outcomes (reconnecting whenever the orchestrator restarts)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from flnet.api.control.v1 import tool_pb2 as tp
from flnet.api.orchestrator.v1 import orchestrator_service_pb2 as op
from flnet.api.orchestrator.v1 import orchestrator_service_pb2_grpc as og
from flnet.channels import TokenSource, insecure_channel
from flnet.control.clock import duration, seconds
from flnet.oauth import LoginError

log = logging.getLogger(__name__)

CREDENTIAL_FAILED = "cannot obtain the control plane's credential for the orchestrator"
ContainerHandler = Callable[[op.RunContainer], Awaitable[None]]


class LaunchFailed(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class OrchestratorClient:
    """`token`: the control plane's service credential, sent with every call."""

    def __init__(self, address: str, token: TokenSource | None = None) -> None:
        self.address = address
        self.token = token
        self._channel: grpc.aio.Channel | None = None
        self._stub: og.OrchestratorServiceAsyncStub | None = None

    @property
    def stub(self) -> og.OrchestratorServiceAsyncStub:
        if self._stub is None:
            if not self.address:
                raise LaunchFailed(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "no orchestrator is configured (FLNET_ORCHESTRATOR_ADDRESS)",
                )
            self._channel = insecure_channel(self.address, self.token)
            self._stub = og.OrchestratorServiceStub(self._channel)
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def launch(
        self,
        run: str,
        tenant: str,
        version: tp.ToolVersion,
        credential: str,
        control_address: str,
        deadline: float | None = None,
        disk_bytes: int = 0,
        source: Path | None = None,
    ) -> op.RunContainer:
        """`deadline`: seconds the run has left (None: no deadline); `disk_bytes`: what the
        run may write (0: the backend's default); `source`: the unpacked source archive of a
        source version (control.tool_sources)."""
        req = op.LaunchRunRequest(
            run=run, tenant=tenant, credential=credential, control_address=control_address
        )
        if version.HasField("image"):
            req.image_digest = version.image.digest
            req.entrypoint = version.image.entrypoint
        elif source is not None:
            req.source_path = str(source)
            req.entrypoint = version.source.entrypoint
        else:
            raise LaunchFailed(
                grpc.StatusCode.FAILED_PRECONDITION, f"{version.name} has nothing to run"
            )
        res = version.resources
        req.limits.CopyFrom(
            op.Limits(
                cpu_millis=res.cpu_millis,
                memory_bytes=res.memory_bytes,
                pids=res.pids,
                disk_bytes=disk_bytes,
            )
        )
        if deadline is not None:
            req.deadline.CopyFrom(duration(deadline))
        try:
            response = await self.stub.LaunchRun(req, timeout=60)
        except grpc.aio.AioRpcError as e:
            raise LaunchFailed(e.code(), e.details() or str(e.code())) from None
        except LoginError as e:
            raise LaunchFailed(grpc.StatusCode.UNAVAILABLE, f"{CREDENTIAL_FAILED}: {e}") from None
        return response.container

    async def stop(self, run: str, grace: float) -> None:
        """Stops a run's container; a run without one is fine."""
        try:
            await self.stub.StopRun(
                op.StopRunRequest(run=run, grace_period=duration(grace)), timeout=grace + 30
            )
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                log.warning("stopping %s failed: %s", run, e.details())
        except LoginError as e:
            log.warning("stopping %s failed: %s: %s", run, CREDENTIAL_FAILED, e)
        except LaunchFailed:
            pass

    async def watch(self, handle: ContainerHandler) -> None:
        """Feeds every container event to `handle`, forever. Each (re)connection replays the
        orchestrator's event log from the start, so nothing is missed across a restart of
        either side; handling is idempotent (a terminal run ignores late events)."""
        while True:
            try:
                async for event in self.stub.WatchContainers(op.WatchContainersRequest()):
                    try:
                        await handle(event.container)
                    except Exception:
                        log.exception("handling container event of %s failed", event.container.run)
            except grpc.aio.AioRpcError as e:
                log.debug("container watch interrupted: %s", e.code())
            except LoginError as e:
                log.warning("container watch: %s: %s", CREDENTIAL_FAILED, e)
            except LaunchFailed:
                return
            await asyncio.sleep(0.5)


def grace_of(version: tp.ToolVersion, default: float = 10.0) -> float:
    if version.timeouts.HasField("cancel_grace"):
        return seconds(version.timeouts.cancel_grace)
    return default
