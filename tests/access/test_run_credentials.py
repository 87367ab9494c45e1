"""Run credentials: minted per run by the control plane (ES256, audience flnet-runtime, claims
run_id and tenant, scope runtime). A credential speaks for its own run on RuntimeService and
nowhere else, and stops working once its run has ended."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import grpc
import jwt
import pytest

from flnet import lifecycle
from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from tests.conftest import FIXTURES, TENANT, Clients
from tests.control.hand_engine import HandEngine, dev_run
from tests.status import drain, reason

NOOP = FIXTURES / "tools" / "noop"


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    return e.value


async def test_a_credential_speaks_for_its_run_on_the_runtime_service_only(api: Clients) -> None:
    version = await api.register(NOOP)
    artifact = await api.upload(b"a\n1\n")
    a, credential = await dev_run(api, version.name, artifact)
    b, _ = await dev_run(api, version.name, artifact)
    claims = jwt.decode(credential, options={"verify_signature": False})
    assert (claims["aud"], claims["run_id"], claims["tenant"], claims["scope"]) == (
        "flnet-runtime", a.name, "default", "runtime",
    )  # fmt: skip

    # Another run: PERMISSION_DENIED, on every runtime method.
    impostor = HandEngine(api, b.name, credential)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await impostor.connect()
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    fetch = api.runtime.FetchInput(
        rt.FetchInputRequest(run=b.name, name="data"), metadata=impostor.metadata
    )
    assert (await refused(drain(fetch))).code() == grpc.StatusCode.PERMISSION_DENIED

    # Any control RPC: the credential is no user token at all.
    own = impostor.metadata
    for call in (
        api.runs.GetRun(rs.GetRunRequest(name=a.name), metadata=own),
        api.runs.CancelRun(rs.CancelRunRequest(name=a.name), metadata=own),
        api.tools.ListTools(ts.ListToolsRequest(parent=TENANT), metadata=own),
        drain(api.artifacts.DownloadArtifact(
            asv.DownloadArtifactRequest(name=artifact), metadata=own
        )),
    ):  # fmt: skip
        assert (await refused(call)).code() == grpc.StatusCode.UNAUTHENTICATED
    # A user token is no run credential either.
    e3 = await refused(drain(api.runtime.FetchInput(rt.FetchInputRequest(run=a.name, name="data"))))
    assert e3.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_credential_expires_when_its_run_ends(api: Clients) -> None:
    version = await api.register(NOOP)
    run, credential = await dev_run(api, version.name, await api.upload(b"a\n1\n"))
    engine = HandEngine(api, run.name, credential)
    fetch = api.runtime.FetchInput(
        rt.FetchInputRequest(run=run.name, name="data"), metadata=engine.metadata
    )
    await drain(fetch)  # valid while the run lives
    await api.runs.CancelRun(rs.CancelRunRequest(name=run.name, reason="done"))
    async with asyncio.timeout(10):
        async for res in api.runs.WatchRun(rs.WatchRunRequest(name=run.name)):
            changes = [e.state_change.to_state for e in res.events if e.HasField("state_change")]
            if any(lifecycle.is_terminal(state) for state in changes):
                break
    fetch = api.runtime.FetchInput(
        rt.FetchInputRequest(run=run.name, name="data"), metadata=engine.metadata
    )
    e = await refused(drain(fetch))
    assert (e.code(), reason(e)) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")
    # Connect still tells a late engine how its run ended (a Close with the state, no more:
    # neither the run's spec nor its configuration), and accepts nothing more.
    first = await engine.open()
    assert first.WhichOneof("message") == "close", first
    assert lifecycle.is_terminal(first.close.state)
    assert await engine.rest() == []
    await engine.close()
