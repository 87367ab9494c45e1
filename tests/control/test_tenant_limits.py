"""Each tenant's share of calls (control.tenant_limits): a tenant over its rate or its calls
in flight is answered RESOURCE_EXHAUSTED with RetryInfo, audited, while another tenant's
calls go on as before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.control.app import ControlApp
from flnet.control.settings import ControlSettings
from flnet.control.tenant_limits import TenantShare
from tests.conftest import FIXTURES, TENANT, clients_for, control_app, control_settings
from tests.control.hand_engine import dev_run
from tests.identity import IDENTITY
from tests.status import reason, retry_delay

NOOP = FIXTURES / "tools" / "noop"


@pytest.fixture
async def strict(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[ControlApp]:
    """A control plane whose tenants have the share the test's `share` mark gives."""
    share = request.node.get_closest_marker("share").kwargs
    app = control_app(control_settings(tmp_path, tenant_share=TenantShare(**share)))
    await app.start("127.0.0.1:0")
    yield app
    await app.stop(0.5)


@pytest.mark.share(rate=20.0, burst=5.0)
async def test_a_tenant_over_its_rate_is_refused_and_told_when_to_retry(
    strict: ControlApp,
) -> None:
    flooding = clients_for(f"127.0.0.1:{strict.port}")
    other = clients_for(f"127.0.0.1:{strict.port}", IDENTITY.token(subject="bob", tenant="globex"))
    listing = ts.ListToolsRequest(parent=TENANT)
    answers = await asyncio.gather(
        *(flooding.tools.ListTools(listing) for _ in range(30)), return_exceptions=True
    )
    refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert 20 <= len(refused) <= 25  # the burst of 5, and what the rate refilled meanwhile
    assert all(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for e in refused)
    assert {reason(e) for e in refused} == {"TENANT_RATE_EXCEEDED"}
    assert all(0 < retry_delay(e) <= 0.06 for e in refused)
    # The other tenant has its own share; the flooding one gets calls through once it waits.
    await other.tools.ListTools(ts.ListToolsRequest(parent="tenants/globex"))
    await asyncio.sleep(max(retry_delay(e) for e in refused))
    await flooding.tools.ListTools(listing)

    await strict.audit.flush()
    audited = await strict.audit.list("default")
    assert sum(r.code == "RESOURCE_EXHAUSTED" for r in audited) == len(refused)
    await flooding.channel.close()
    await other.channel.close()


@pytest.mark.share(streams=1)
async def test_a_tenant_with_its_streams_open_is_refused_another(strict: ControlApp) -> None:
    api = clients_for(f"127.0.0.1:{strict.port}")
    version = await api.register(NOOP)
    run, _ = await dev_run(api, version.name, await api.upload(b"a\n1\n"))
    watching = api.runs.WatchRun(rs.WatchRunRequest(name=run.name))
    await anext(aiter(watching))  # the one stream the share allows is open
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for _ in api.runs.WatchRun(rs.WatchRunRequest(name=run.name)):
            pass
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason(e.value) == "TENANT_CALLS_EXCEEDED"
    await api.runs.GetRun(rs.GetRunRequest(name=run.name))  # unary calls are counted apart
    watching.cancel()
    await asyncio.sleep(0.2)
    again = api.runs.WatchRun(rs.WatchRunRequest(name=run.name))
    await anext(aiter(again))  # the closed stream gave its place back
    again.cancel()
    await api.channel.close()


def test_the_share_is_configured_by_flnet_tenant_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLNET_OIDC_ISSUER", "https://issuer.test.invalid")
    monkeypatch.setenv("FLNET_TENANT_SHARE", "rate=50, calls=8")
    share = ControlSettings.from_env().tenant_share
    assert share == TenantShare(rate=50.0, burst=TenantShare().burst, calls=8)
    monkeypatch.delenv("FLNET_TENANT_SHARE")
    assert ControlSettings.from_env().tenant_share == TenantShare()
    for text, problem in [
        ("rate=0", "rate must be a positive finite number"),
        ("burst=nan", "burst must be a positive finite number"),
        ("calls=1.5", "invalid literal for int()"),
        ("speed=9", "'speed=9': expected rate=, burst=, calls= or streams="),
        ("streams", "'streams': expected"),
    ]:
        monkeypatch.setenv("FLNET_TENANT_SHARE", text)
        with pytest.raises(ValueError, match=r"^FLNET_TENANT_SHARE: ") as raised:
            ControlSettings.from_env()
        assert problem in str(raised.value)
