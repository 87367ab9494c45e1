"""The fleet, control-plane side, driven by hand orchestrators (tests/control/
hand_orchestrator.py) against the real control plane: placement by capacity and labels, the
queue (FIFO within a tenant, fair share across tenants, quotas), the orchestrators' sessions
(commands, reports once, leases) and every refusal of the session's protocol."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from flnet import timeouts
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import fleet_pb2 as fp
from flnet.api.control.v1 import fleet_service_pb2 as fs
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.api.orchestrator.v1 import orchestrator_pb2 as op
from flnet.api.orchestrator.v1 import session_service_pb2 as sp
from flnet.api.orchestrator.v1 import session_service_pb2_grpc as spg
from flnet.channels import insecure_channel
from flnet.control.app import ControlApp
from flnet.control.fleet.scheduler import WAITING_FOR_CAPACITY
from flnet.server.auth.local import LocalIssuer
from flnet.sources import MEDIA_TYPE as SOURCE_MEDIA_TYPE
from flnet.structs import dict_to_struct
from flnet.toolspec import load_tool_spec
from tests.conftest import (
    FIXTURES,
    TENANT,
    Clients,
    clients_for,
    control_app,
    control_settings,
    packed,
    upload_messages,
)
from tests.conftest import request_id as new_request_id
from tests.control.hand_engine import HandEngine, transition
from tests.control.hand_orchestrator import HandOrchestrator
from tests.identity import IDENTITY, ISSUER
from tests.status import violations

S = lc.RunState
BEHAVE = FIXTURES / "tools" / "behave"
ADMIN = IDENTITY.token(subject="operator", scopes=("admin",))


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[ControlApp, Clients]]:
    """A control plane with short leases, and an operator's clients."""
    app = control_app(control_settings(tmp_path, orchestrator_lease=1.5, placement_interval=0.2))
    await app.start("127.0.0.1:0")
    api = clients_for(f"127.0.0.1:{app.port}")
    yield app, api
    await api.channel.close()
    await app.stop(0.5)


def address(app: ControlApp) -> str:
    return f"127.0.0.1:{app.port}"


async def hand(app: ControlApp, name: str = "hand", **kwargs: object) -> HandOrchestrator:
    orchestrator = HandOrchestrator(address(app), name, **kwargs)  # type: ignore[arg-type]
    await orchestrator.attach()
    return orchestrator


async def version(
    api: Clients,
    name: str = "behave",
    tenant: str = TENANT,
    required_labels: tuple[str, ...] = (),
    **resources: int,
) -> tp.ToolVersion:
    """The behave tool of `tenant` with `resources`."""
    spec = load_tool_spec(BEHAVE)
    for field, value in resources.items():
        setattr(spec.version.resources, field, value)
    spec.version.resources.required_labels.extend(required_labels)
    archive = await api.artifacts.UploadInput(
        upload_messages(tenant, packed(BEHAVE), "source.tar.gz", SOURCE_MEDIA_TYPE)
    )
    res = await api.tools.CreateToolVersion(
        ts.CreateToolVersionRequest(
            parent=f"{tenant}/tools/{name}",
            tool_version=spec.with_source(archive.artifact.name),
        )
    )
    return res.tool_version


async def submit(api: Clients, tool_version: str, tenant: str = TENANT) -> rp.Run:
    request = rs.CreateRunRequest(
        parent=tenant,
        request_id=new_request_id(),
        run=rp.Run(tool_version=tool_version, config=dict_to_struct({"mode": "finish"})),
    )
    return (await api.runs.CreateRun(request)).run


async def get(api: Clients, run: str) -> rp.Run:
    return (await api.runs.GetRun(rs.GetRunRequest(name=run))).run


async def until(api: Clients, run: str, check: object, within: float = 20.0) -> rp.Run:
    assert callable(check)
    async with asyncio.timeout(within):
        while not check(current := await get(api, run)):  # noqa: ASYNC110 - polls the API
            await asyncio.sleep(0.05)
    return current


async def test_a_run_is_launched_on_an_attached_orchestrator_and_ends_with_its_container(
    fleet: tuple[ControlApp, Clients],
) -> None:
    app, api = fleet
    orchestrator = await hand(app, slots=2)
    v = await version(api, cpu_millis=500, memory_bytes=256 << 20)
    run = await submit(api, v.name)
    await orchestrator.wait(lambda: orchestrator.launches() == [run.name])
    [launch] = [c.launch for c in orchestrator.commands]
    assert (launch.tenant, launch.entrypoint) == ("default", "tool.py:main")
    assert launch.credential and launch.source_path
    assert (launch.limits.cpu_millis, launch.limits.memory_bytes) == (500, 256 << 20)
    placed = await until(api, run.name, lambda r: r.orchestrator)
    assert placed.orchestrator == "orchestrators/hand" and not placed.HasField("queue")
    [listed] = (
        await api.fleet.ListOrchestrators(fs.ListOrchestratorsRequest(), metadata=admin())
    ).orchestrators
    assert (listed.name, listed.state, listed.backend) == (
        "orchestrators/hand",
        fp.ORCHESTRATOR_STATE_ATTACHED,
        "hand",
    )
    assert (listed.capacity.runs, listed.load.runs, listed.load.cpu_millis) == (2, 1, 500)
    assert listed.subject == "orchestrator"

    orchestrator.exited(run.name, exit_code=3)
    done = await until(api, run.name, lambda r: r.state == S.RUN_STATE_ERROR)
    assert done.error.reason == lc.ERROR_REASON_EXIT_NONZERO
    assert done.error.context["backend"] == "hand"
    await orchestrator.close()


def admin() -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {ADMIN}"),)


def launched(orchestrator: HandOrchestrator, count: int) -> bool:
    return len(orchestrator.launches()) == count


async def test_runs_never_exceed_capacity_and_start_in_order_as_slots_free(
    fleet: tuple[ControlApp, Clients],
) -> None:
    app, api = fleet
    orchestrator = await hand(app, slots=2)
    v = await version(api)
    runs = [(await submit(api, v.name)).name for _ in range(5)]
    await orchestrator.wait(lambda: len(orchestrator.launches()) == 2)
    await asyncio.sleep(0.6)  # several placement passes: still two
    assert orchestrator.launches() == runs[:2]
    third = await until(api, runs[2], lambda r: r.queue.reason == WAITING_FOR_CAPACITY)
    assert third.queue.position == 1 and (await get(api, runs[4])).queue.position == 3
    orchestrator.exited(runs[0])
    await orchestrator.wait(lambda: len(orchestrator.launches()) == 3)
    assert orchestrator.launches() == runs[:3]
    await orchestrator.close()


async def test_one_tenants_queue_never_starves_another_tenants_runs(
    fleet: tuple[ControlApp, Clients],
) -> None:
    """Tenant A queues 200 runs, then tenant B 5: B's runs start within the next few free
    slots, not after A's 200."""
    app, api = fleet
    orchestrator = await hand(app, slots=2)
    v = await version(api)
    a_runs = [(await submit(api, v.name)).name for _ in range(200)]
    other = clients_for(address(app), IDENTITY.token(tenant="other"))
    v_other = await version(other, tenant="tenants/other")
    b_runs = [(await submit(other, v_other.name, "tenants/other")).name for _ in range(5)]
    await orchestrator.wait(lambda: len(orchestrator.launches()) == 2)
    for freed in range(10):  # end the oldest running run, one at a time
        ended = orchestrator.launches()[freed]
        orchestrator.exited(ended)
        await orchestrator.wait(functools.partial(launched, orchestrator, freed + 3))
    started = orchestrator.launches()
    assert set(b_runs) <= set(started[:12]), "B waited behind A's queue"
    # Fair share: with one run of each placed, they take turns; A's in its own order.
    assert [r for r in started if r in a_runs] == a_runs[: len(started) - 5]
    await other.channel.close()
    await orchestrator.close()


async def test_a_quota_bounds_a_tenants_placed_runs_and_changes_at_runtime(
    fleet: tuple[ControlApp, Clients],
) -> None:
    app, api = fleet
    orchestrator = await hand(app, slots=10)
    quota = fp.TenantQuota(tenant=TENANT, max_runs=2, max_cpu_millis=0)
    stored = (
        await api.fleet.UpdateTenantQuota(
            fs.UpdateTenantQuotaRequest(quota=quota), metadata=admin()
        )
    ).quota
    assert (stored.max_runs, stored.updated_by) == (2, "operator")
    v = await version(api)
    runs = [(await submit(api, v.name)).name for _ in range(5)]
    await orchestrator.wait(lambda: len(orchestrator.launches()) == 2)
    waiting = await until(api, runs[2], lambda r: r.queue.reason.startswith("tenant quota"))
    assert waiting.queue.reason == "tenant quota: 2/2 runs"
    got = (
        await api.fleet.GetTenantQuota(fs.GetTenantQuotaRequest(tenant=TENANT), metadata=admin())
    ).quota
    assert (got.usage.runs, got.queued_runs, got.max_runs) == (2, 3, 2)
    await asyncio.sleep(0.6)
    assert len(orchestrator.launches()) == 2  # never beyond the quota
    quota.max_runs = 3
    await api.fleet.UpdateTenantQuota(fs.UpdateTenantQuotaRequest(quota=quota), metadata=admin())
    await orchestrator.wait(lambda: len(orchestrator.launches()) == 3)
    assert orchestrator.launches() == runs[:3]
    await orchestrator.close()


async def test_quota_and_fleet_calls_are_for_operators_and_check_their_input(
    fleet: tuple[ControlApp, Clients],
) -> None:
    _, api = fleet
    with pytest.raises(grpc.aio.AioRpcError) as raised:  # a data scientist's token
        await api.fleet.ListOrchestrators(fs.ListOrchestratorsRequest())
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    bad = fp.TenantQuota(tenant=TENANT, max_runs=-1, max_memory_bytes=-5)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.fleet.UpdateTenantQuota(fs.UpdateTenantQuotaRequest(quota=bad), metadata=admin())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(raised.value) == ["quota.max_runs", "quota.max_memory_bytes"]
    for tenant in ("", "tenants/", "tenants/A_b", "runs/x"):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await api.fleet.GetTenantQuota(
                fs.GetTenantQuotaRequest(tenant=tenant), metadata=admin()
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(raised.value) == ["tenant"]
    # First writes of one tenant's quota at once: one row, the last write wins, no error.
    quotas = [fp.TenantQuota(tenant="tenants/burst", max_runs=n) for n in range(1, 9)]
    await asyncio.gather(
        *(
            api.fleet.UpdateTenantQuota(fs.UpdateTenantQuotaRequest(quota=q), metadata=admin())
            for q in quotas
        )
    )
    burst = (
        await api.fleet.GetTenantQuota(
            fs.GetTenantQuotaRequest(tenant="tenants/burst"), metadata=admin()
        )
    ).quota
    assert 1 <= burst.max_runs <= 8
    never = (
        await api.fleet.GetTenantQuota(
            fs.GetTenantQuotaRequest(tenant="tenants/nobody"), metadata=admin()
        )
    ).quota
    assert (never.max_runs, never.HasField("update_time")) == (0, False)  # the defaults


async def test_runs_go_where_their_labels_are_and_wait_saying_which_are_missing(
    fleet: tuple[ControlApp, Clients],
) -> None:
    app, api = fleet
    plain = await hand(app, "plain", slots=4)
    gpu = await hand(app, "gpu", slots=4, labels={"gpu": "", "site": "lab"})
    v_gpu = await version(api, "gpu-tool", required_labels=("gpu", "site=lab"))
    v_eu = await version(api, "eu-tool", required_labels=("site=eu",))
    v_any = await version(api)
    on_gpu = [(await submit(api, v_gpu.name)).name for _ in range(3)]
    eu = (await submit(api, v_eu.name)).name
    spread = [(await submit(api, v_any.name)).name for _ in range(2)]
    await gpu.wait(lambda: set(on_gpu) <= set(gpu.launches()))
    assert not set(on_gpu) & set(plain.launches())
    # The gpu orchestrator is fuller: the others go to the plain one.
    await plain.wait(lambda: set(spread) <= set(plain.launches()))
    waiting = await until(api, eu, lambda r: r.queue.reason.startswith("no attached"))
    assert waiting.queue.reason == "no attached orchestrator has the labels site=eu"
    for o in (plain, gpu):
        await o.close()

    spec = load_tool_spec(BEHAVE)
    spec.version.resources.required_labels.extend(["GPU", "a=b=c", "ok"])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(
                parent=f"{TENANT}/tools/bad", tool_version=await api.with_source(spec)
            )
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(raised.value) == [
        "tool_version.resources.required_labels[0]",
        "tool_version.resources.required_labels[1]",
    ]


async def refused(orchestrator: HandOrchestrator) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await orchestrator.attach()
    await orchestrator.close()
    return raised.value


async def test_sessions_with_a_forged_or_wrong_token_are_refused(
    fleet: tuple[ControlApp, Clients],
) -> None:
    app, _ = fleet
    forger = LocalIssuer(ISSUER)  # the issuer's name, another key
    cases = {
        "forged": (forger.orchestrator_token(), grpc.StatusCode.UNAUTHENTICATED),
        "a user's": (IDENTITY.token(), grpc.StatusCode.UNAUTHENTICATED),
        "none": ("", grpc.StatusCode.UNAUTHENTICATED),
        "without the scope": (
            IDENTITY.token(audience="flnet-orchestrator", scopes=("runs:read",), tenant=None),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
    }
    for what, (token, code) in cases.items():
        error = await refused(HandOrchestrator(address(app), token=token))
        assert error.code() == code, what
    assert await app.store.fleet.orchestrators() == []


async def test_malformed_registrations_are_refused_naming_their_fields(
    fleet: tuple[ControlApp, Clients],
) -> None:
    app, _ = fleet
    bad = HandOrchestrator(address(app), "-Bad_Name", slots=0, labels={"GPU": "x y"})
    error = await refused(bad)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error) == [
        "registration.name",
        "registration.capacity.run_slots",
        "registration.labels['GPU']",
    ]
    # Another client may not take over a registered name.
    owner = await hand(app, "site-a")
    thief = HandOrchestrator(
        address(app), "site-a", token=IDENTITY.orchestrator_token(client="someone-else")
    )
    error = await refused(thief)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "registered by another client" in (error.details() or "")
    await owner.close()


async def test_reports_are_applied_once_and_bad_ones_refused_without_effect(
    fleet: tuple[ControlApp, Clients],
) -> None:
    app, api = fleet
    orchestrator = await hand(app, slots=3)
    other = await hand(app, "other", slots=1)
    v = await version(api)
    mine = (await submit(api, v.name)).name
    await timeouts.wait_for(_either(orchestrator, other, mine), 30)
    here = mine in orchestrator.launches()
    owner, stranger = (orchestrator, other) if here else (other, orchestrator)
    # A claim on a run placed elsewhere: refused, the run untouched.
    seq = stranger.exited(mine, exit_code=9)
    ack = await stranger.acked(seq)
    [rejection] = ack.rejections
    assert (rejection.sequence, rejection.code) == (seq, grpc.StatusCode.PERMISSION_DENIED.value[0])
    assert "not placed on orchestrator" in rejection.message
    assert (await get(api, mine)).state == S.RUN_STATE_PENDING
    # Malformed capacity: refused, the capacity unchanged.
    seq = owner.report(sp.Report(capacity=sp.Capacity(cpu_millis=-1, memory_bytes=0)))
    [rejection] = (await owner.acked(seq)).rejections
    assert rejection.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    stored = await app.store.fleet.get(owner.name)
    assert stored is not None and stored.run_slots >= 1
    # A report sent twice (a resend after a reconnect) is applied once.
    seq = owner.exited(mine, exit_code=4)
    owner.exited(mine, exit_code=5)  # a later report of the same run: the run has ended
    resent = op.RunContainer(run=mine, state=op.CONTAINER_STATE_EXITED, exit_code=6)
    owner.report(sp.Report(container=resent), sequence=seq)
    await owner.acked(seq + 1)
    done = await get(api, mine)
    assert done.error.context["exit_code"] == "4"
    history = await api.runs.ListRunEvents(rs.ListRunEventsRequest(parent=mine))
    ends = [e for e in history.events if e.state_change.to_state == S.RUN_STATE_ERROR]
    assert len(ends) == 1
    stored = await app.store.fleet.get(owner.name)
    assert stored is not None and stored.acked_sequence == seq + 1
    for o in (orchestrator, other):
        await o.close()


async def _either(a: HandOrchestrator, b: HandOrchestrator, run: str) -> None:
    while run not in a.launches() and run not in b.launches():  # noqa: ASYNC110
        await asyncio.sleep(0.02)


async def test_a_new_session_replaces_the_old_and_a_reconnect_flood_is_refused(
    fleet: tuple[ControlApp, Clients],
) -> None:
    app, _ = fleet
    first = await hand(app, "edge")
    second = await hand(app, "edge")
    await first.wait(lambda: first.error is not None)
    assert first.error is not None and first.error.code() == grpc.StatusCode.ABORTED
    await second.close()
    codes = []
    for _ in range(12):
        again = HandOrchestrator(address(app), "edge")
        try:
            await again.attach()
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as e:
            codes.append(e.code())
            retry = [d for d in _details(e) if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
            assert retry, "a refusal says when to retry"
        await again.close()
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}


def _details(error: grpc.aio.AioRpcError) -> list[any_pb2.Any]:
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    return list(status_pb2.Status.FromString(raw).details) if raw else []


async def test_an_orchestrator_lost_past_its_lease_has_its_runs_judged(
    fleet: tuple[ControlApp, Clients],
) -> None:
    """Runs whose engine never started go elsewhere; a run whose engine ran, silent now,
    ends in ERROR(LOST) naming the orchestrator; both visibly in their histories."""
    app, api = fleet
    lost = await hand(app, "lost", slots=2)
    v = await version(api)
    waiting, running = [(await submit(api, v.name)).name for _ in range(2)]
    await lost.wait(lambda: len(lost.launches()) == 2)
    [command] = [c for c in lost.commands if c.launch.run == running]
    engine = HandEngine(api, running, command.launch.credential)
    await engine.connect()
    await engine.propose(S.RUN_STATE_INITIALIZED)
    await engine.send_batch(transition(S.RUN_STATE_STARTED), transition(S.RUN_STATE_RUNNING))
    await engine.close()  # its host went away with the orchestrator
    await lost.close()
    spare = await hand(app, "spare", slots=2)
    await spare.wait(lambda: waiting in spare.launches(), within=30)
    assert running not in spare.launches()
    done = await until(api, running, lambda r: r.state == S.RUN_STATE_ERROR, within=30)
    assert done.error.reason == lc.ERROR_REASON_LOST
    assert "orchestrator lost was lost" in done.error.message
    moved = await get(api, waiting)
    assert moved.orchestrator == "orchestrators/spare"
    history = await api.runs.ListRunEvents(rs.ListRunEventsRequest(parent=waiting))
    notes = [e.log.message for e in history.events if e.HasField("log")]
    assert any("placed elsewhere" in n for n in notes)
    listed = {
        o.name: o.state
        for o in (
            await api.fleet.ListOrchestrators(fs.ListOrchestratorsRequest(), metadata=admin())
        ).orchestrators
    }
    assert listed == {
        "orchestrators/lost": fp.ORCHESTRATOR_STATE_LOST,
        "orchestrators/spare": fp.ORCHESTRATOR_STATE_ATTACHED,
    }
    await spare.close()


async def test_an_orchestrator_back_within_its_lease_carries_on(
    fleet: tuple[ControlApp, Clients],
) -> None:
    """It reconnects, says which containers it runs: its runs stay; a container of a run not
    placed on it is stopped."""
    app, api = fleet
    first = await hand(app, "steady", slots=2)
    v = await version(api)
    run = (await submit(api, v.name)).name
    await first.wait(lambda: first.launches() == [run])
    await first.close()
    back = HandOrchestrator(address(app), "steady", slots=2)
    stray = "tenants/default/runs/not-placed-here"
    back.registration.containers.add(run=run, state=2)
    back.registration.containers.add(run=stray, state=2)
    await back.attach()
    await back.wait(lambda: any(c.stop.run == stray for c in back.commands))
    assert not any(c.HasField("stop") and c.stop.run == run for c in back.commands)
    await asyncio.sleep(2.0)  # past the lease it would have had
    current = await get(api, run)
    assert (current.state, current.orchestrator) == (S.RUN_STATE_PENDING, "orchestrators/steady")
    await back.close()


async def test_a_session_must_open_with_a_registration_and_go_on_with_reports(
    fleet: tuple[ControlApp, Clients],
) -> None:
    app, _ = fleet
    token = (("authorization", f"Bearer {IDENTITY.orchestrator_token()}"),)
    async with insecure_channel(address(app)) as channel:
        stub = spg.SessionServiceStub(channel)
        call = stub.Attach(metadata=token)
        await call.write(sp.AttachRequest(heartbeat=sp.OrchestratorHeartbeat()))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call.read()
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "must open with a Registration" in (raised.value.details() or "")
    orchestrator = await hand(app, "twice")
    orchestrator._outgoing.put_nowait(sp.AttachRequest(registration=orchestrator.registration))
    await orchestrator.wait(lambda: orchestrator.error is not None)
    assert orchestrator.error is not None
    assert orchestrator.error.code() == grpc.StatusCode.INVALID_ARGUMENT
    await orchestrator.close()


async def test_the_placer_closes_when_kicked_in_the_step_it_is_cancelled(
    control: ControlApp,
) -> None:
    """An orchestrator detaching (a kick) as the control plane stops: the placement loop
    must end, not take the kick and wait again while the shutdown waits for it."""
    placer = control.runs.context.placer
    for _ in range(5):
        await placer.close()
        placer.start()
        await asyncio.sleep(0.02)  # waiting for a kick
        placer.kick()
        await asyncio.sleep(0)  # the kick's waiter completes in this step
        closing = asyncio.create_task(placer.close())
        done, _ = await asyncio.wait([closing], timeout=5)
        assert done, "the placer took the kick and waited again"
