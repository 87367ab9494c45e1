"""RunService: validation, idempotency, listing and watching, against a real control plane."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from flnet import timeouts
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.control.app import ControlApp
from flnet.control.fleet.scheduler import NO_ORCHESTRATOR
from flnet.control.runs.context import MAX_CONFIG_BYTES
from flnet.control.validation import canonical_sha256
from flnet.structs import dict_to_struct, struct_to_dict
from tests.conftest import FIXTURES, TENANT, Clients, clients_for, packed, request_id
from tests.control.hand_engine import HandEngine, connected_engine, dev_run, log, transition
from tests.identity import IDENTITY
from tests.status import reason, violations

S = lc.RunState
NOOP = FIXTURES / "tools" / "noop"


def config(**values: object) -> struct_pb2.Struct:
    return dict_to_struct(values)


async def setup(api: Clients) -> tuple[tp.ToolVersion, str]:
    return await api.register(NOOP), await api.upload(b"a,b\n1,2\n")


def create(version: str, artifact: str, rid: str = "", **cfg: object) -> rs.CreateRunRequest:
    return rs.CreateRunRequest(
        parent=TENANT,
        request_id=rid,
        run=rp.Run(
            tool_version=version,
            config=config(**(cfg or {"rate": 0.1})),
            inputs=[rp.RunInput(name="data", artifact=artifact)],
        ),
    )


async def test_invalid_config_names_the_failing_fields(api: Clients) -> None:
    version, artifact = await setup(api)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.runs.CreateRun(create(version.name, artifact, epochs=0, nested={"depth": 9}))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(e.value) == "CONFIG_INVALID"
    assert set(violations(e.value)) == {
        "run.config.rate",
        "run.config.epochs",
        "run.config.nested.depth",
    }
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.runs.CreateRun(create(version.name, artifact, rate=1, unknown=True))
    assert violations(e.value) == ["run.config.unknown"]
    listed = await api.runs.ListRuns(rs.ListRunsRequest(parent=TENANT))
    assert not listed.runs  # nothing was recorded for rejected requests


async def test_a_config_over_its_size_limit_is_refused_before_validation(api: Clients) -> None:
    """A large configuration is refused by its size, before its schema is evaluated (the
    schema here would refuse `nested` too: only the size is named)."""
    version, artifact = await setup(api)
    huge = {"depth": 1, "filler": "x" * (MAX_CONFIG_BYTES + 1)}
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.runs.CreateRun(create(version.name, artifact, rate=0.5, nested=huge))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(e.value) == "CONFIG_INVALID"
    assert violations(e.value) == ["run.config"]
    assert f"at most {MAX_CONFIG_BYTES}" in (e.value.details() or "")
    fits = {"depth": 1, "filler": "x" * (MAX_CONFIG_BYTES // 2)}
    run = (await api.runs.CreateRun(create(version.name, artifact, rate=0.5, nested=fits))).run
    assert struct_to_dict(run.config)["nested"] == fits


async def test_defaults_are_recorded_and_hashed(api: Clients) -> None:
    version, artifact = await setup(api)
    run = (await api.runs.CreateRun(create(version.name, artifact, rate=0.5))).run
    assert dict(run.config) == {"rate": 0.5, "epochs": 3}
    assert run.config_sha256 == canonical_sha256({"rate": 0.5, "epochs": 3})
    assert run.inputs[0].sha256 and run.inputs[0].size_bytes == 8
    assert run.artifact_digest == "sha256:" + version.source.sha256
    assert version.source.sha256 == hashlib.sha256(packed(NOOP)).hexdigest()


async def test_inputs_are_checked_against_the_contract(api: Clients) -> None:
    version, artifact = await setup(api)
    req = create(version.name, artifact)
    req.run.inputs.append(rp.RunInput(name="bogus", artifact=artifact))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.runs.CreateRun(req)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(e.value) == ["run.inputs[1].name"]
    req = create(version.name, artifact)
    del req.run.inputs[:]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.runs.CreateRun(req)
    assert violations(e.value) == ["run.inputs"]
    too_big = await api.upload(b"x" * (1024 * 1024 + 1))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.runs.CreateRun(create(version.name, too_big))
    assert violations(e.value) == ["run.inputs[0].artifact"]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.runs.CreateRun(create(version.name, f"{TENANT}/artifacts/missing"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_unknown_tool_version_is_not_found(api: Clients) -> None:
    _, artifact = await setup(api)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.runs.CreateRun(create(f"{TENANT}/tools/noop/versions/9.9.9", artifact))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.runs.CreateRun(create("tools/noop", artifact))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(e.value) == ["run.tool_version"]


async def test_unknown_run_is_not_found(api: Clients) -> None:
    for call in (
        api.runs.GetRun(rs.GetRunRequest(name=f"{TENANT}/runs/nope")),
        api.runs.CancelRun(rs.CancelRunRequest(name=f"{TENANT}/runs/nope")),
        api.runs.ListRunEvents(rs.ListRunEventsRequest(parent=f"{TENANT}/runs/nope")),
        api.runs.ReproduceRun(rs.ReproduceRunRequest(name=f"{TENANT}/runs/nope")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for _ in api.runs.WatchRun(rs.WatchRunRequest(name=f"{TENANT}/runs/nope")):
            pass
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_create_run_is_idempotent_by_request_id(api: Clients) -> None:
    version, artifact = await setup(api)
    rid = request_id()
    first = (await api.runs.CreateRun(create(version.name, artifact, rid))).run
    second = (await api.runs.CreateRun(create(version.name, artifact, rid))).run
    assert first.name == second.name
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.runs.CreateRun(create(version.name, artifact, rid, rate=0.9))
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert violations(e.value) == ["request_id"]
    listed = await api.runs.ListRuns(rs.ListRunsRequest(parent=TENANT))
    assert len(listed.runs) == 1


async def test_concurrent_retries_create_one_run(api: Clients) -> None:
    version, artifact = await setup(api)
    rid = request_id()
    results = await asyncio.gather(
        *(api.runs.CreateRun(create(version.name, artifact, rid)) for _ in range(8))
    )
    assert len({r.run.name for r in results}) == 1


async def get(api: Clients, name: str) -> rp.Run:
    return (await api.runs.GetRun(rs.GetRunRequest(name=name))).run


async def test_a_run_without_orchestrator_waits_in_its_queue_saying_why(api: Clients) -> None:
    version, artifact = await setup(api)
    first = (await api.runs.CreateRun(create(version.name, artifact, request_id()))).run
    second = (await api.runs.CreateRun(create(version.name, artifact))).run
    assert (first.state, second.state) == (S.RUN_STATE_PENDING, S.RUN_STATE_PENDING)
    assert (first.queue.position, second.queue.position) == (1, 2)
    async with asyncio.timeout(10):
        while (run := await get(api, second.name)).queue.reason != NO_ORCHESTRATOR:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert run.queue.reason == NO_ORCHESTRATOR
    assert run.queue.position == 2 and not run.orchestrator
    retried = (await api.runs.CreateRun(create(version.name, artifact, first.request_id))).run
    assert (retried.name, retried.queue.position) == (first.name, 1)


async def test_list_runs_paginates_and_filters(api: Clients) -> None:
    version, artifact = await setup(api)
    names = [(await api.runs.CreateRun(create(version.name, artifact))).run.name for _ in range(5)]
    dev, _ = await dev_run(api, version.name, artifact)
    seen: list[str] = []
    token = ""
    while True:
        page = await api.runs.ListRuns(
            rs.ListRunsRequest(parent=TENANT, page_size=2, page_token=token)
        )
        seen += [r.name for r in page.runs]
        token = page.next_page_token
        if not token:
            break
    assert seen == [dev.name, *reversed(names)]
    pending = await api.runs.ListRuns(
        rs.ListRunsRequest(parent=TENANT, states=[S.RUN_STATE_PENDING])
    )
    assert [r.name for r in pending.runs] == [dev.name, *reversed(names)]  # all queued
    by_tool = await api.runs.ListRuns(rs.ListRunsRequest(parent=TENANT, tool=f"{TENANT}/tools/x"))
    assert not by_tool.runs
    first = await api.runs.ListRuns(rs.ListRunsRequest(parent=TENANT, page_size=2))
    with pytest.raises(grpc.aio.AioRpcError) as e:  # a token is bound to its filters
        await api.runs.ListRuns(
            rs.ListRunsRequest(
                parent=TENANT, page_token=first.next_page_token, states=[S.RUN_STATE_ERROR]
            )
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.runs.ListRuns(rs.ListRunsRequest(parent=TENANT, page_token="bm90LWEtdG9rZW4"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_reproduce_links_to_the_original(api: Clients) -> None:
    version, artifact = await setup(api)
    original = (await api.runs.CreateRun(create(version.name, artifact, rate=0.25))).run
    copy = (await api.runs.ReproduceRun(rs.ReproduceRunRequest(name=original.name))).run
    assert copy.name != original.name
    assert copy.reproduce_of == original.name
    assert copy.config_sha256 == original.config_sha256
    assert copy.artifact_digest == original.artifact_digest
    assert [(i.name, i.sha256) for i in copy.inputs] == [
        (i.name, i.sha256) for i in original.inputs
    ]


async def test_watch_streams_history_then_live_without_gap_or_duplicate(api: Clients) -> None:
    engine = await connected_engine(api, NOOP)
    await engine.propose(S.RUN_STATE_INITIALIZED)
    await engine.send_batch(*(log(f"early {i}") for i in range(50)))

    received: list[rp.RunEvent] = []

    async def watch(after: int) -> None:
        request = rs.WatchRunRequest(name=engine.run, after_sequence=after)
        async for res in api.runs.WatchRun(request):
            received.extend(res.events)

    watcher = asyncio.create_task(watch(0))
    for i in range(20):
        await engine.send_batch(*(log(f"live {i}.{j}") for j in range(30)))
    await engine.propose(S.RUN_STATE_CANCELLED)
    await timeouts.wait_for(watcher, 10)
    sequences = [e.sequence for e in received]
    assert sequences == list(range(1, len(received) + 1))
    assert received[-1].state_change.to_state == S.RUN_STATE_CANCELLED
    assert sum(1 for e in received if e.HasField("log")) == 50 + 20 * 30

    resumed: list[rp.RunEvent] = []
    async for res in api.runs.WatchRun(rs.WatchRunRequest(name=engine.run, after_sequence=600)):
        resumed.extend(res.events)
    assert [e.sequence for e in resumed] == sequences[600:]
    await engine.close()


async def test_watch_ends_after_telemetry_that_follows_the_end(api: Clients) -> None:
    """An engine may flush telemetry with (after) its run's end: watchers get it, from the
    start or resuming at any point, and their streams end."""
    engine = await connected_engine(api, NOOP)
    await engine.propose(S.RUN_STATE_INITIALIZED)
    await engine.send_batch(transition(S.RUN_STATE_CANCELLED), log("flushed as it ended"))
    await engine.close()

    async def watch(after: int) -> list[rp.RunEvent]:
        request = rs.WatchRunRequest(name=engine.run, after_sequence=after)
        return [e async for res in api.runs.WatchRun(request) for e in res.events]

    for after in range(5):  # 1 PENDING, 2 INITIALIZED, 3 CANCELLED, 4 the flushed log
        received = await timeouts.wait_for(watch(after), 5)
        assert [e.sequence for e in received] == list(range(after + 1, 5)), after
        if after == 3:
            assert received[0].log.message == "flushed as it ended"


async def test_watch_rejects_negative_resume_point(api: Clients) -> None:
    version, artifact = await setup(api)
    run, _ = await dev_run(api, version.name, artifact)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for _ in api.runs.WatchRun(rs.WatchRunRequest(name=run.name, after_sequence=-1)):
            pass
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_oversized_message_is_resource_exhausted(api: Clients) -> None:
    version, artifact = await setup(api)
    req = create(version.name, artifact)
    req.run.config.update({"rate": 1, "blob": "x" * (9 * 1024 * 1024)})
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await api.runs.CreateRun(req)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_watch_reads_the_store_when_memory_is_stale(api: Clients, control: Any) -> None:
    """The in-memory feed may miss a segment (a publish lost to a cancelled session): a
    watcher must then read the store, not spin or stall."""
    engine = await connected_engine(api, NOOP)
    await engine.propose(S.RUN_STATE_INITIALIZED)
    await engine.send_batch(*(log(f"line {i}") for i in range(10)))
    run_id = engine.run.rsplit("/", 1)[1]
    feed = control.store.feed
    kept = feed.recent(run_id, 0)
    feed.forget(run_id)
    feed.publish(run_id, kept[:1])  # memory now ends at the first segment; the store does not
    got: list[int] = []

    async def watch() -> None:
        async for res in api.runs.WatchRun(rs.WatchRunRequest(name=engine.run, after_sequence=1)):
            got.extend(e.sequence for e in res.events)
            if got and got[-1] >= 12:
                return

    await timeouts.wait_for(watch(), 5)
    assert got[:11] == list(range(2, 13))
    await engine.close()


async def test_large_histories_page_by_size(api: Clients) -> None:
    """Responses stay under the message limit however long the lines: ListRunEvents pages
    and WatchRun streams everything, in order."""
    engine = await connected_engine(api, NOOP)
    await engine.propose(S.RUN_STATE_INITIALIZED)
    line = "y" * 60_000
    for b in range(8):
        await engine.send_batch(*(log(f"{b}.{i} {line}") for i in range(40)))
    await engine.propose(S.RUN_STATE_CANCELLED)
    listed: list[int] = []
    token = ""
    pages = 0
    while True:
        page = await api.runs.ListRunEvents(
            rs.ListRunEventsRequest(parent=engine.run, page_size=10_000, page_token=token)
        )
        listed += [e.sequence for e in page.events]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages > 1
    assert listed == list(range(1, len(listed) + 1)) and len(listed) == 1 + 1 + 320 + 1
    watched: list[int] = []
    async for res in api.runs.WatchRun(rs.WatchRunRequest(name=engine.run)):
        watched += [e.sequence for e in res.events]
    assert watched == listed
    await engine.close()


async def test_a_retried_development_session_gets_a_working_credential(
    api: Clients, control: ControlApp
) -> None:
    """The first answer (with the session's credential) may have been lost: a retry under
    the same request_id gets a fresh credential for the same run."""
    version, artifact = await setup(api)
    request = create(version.name, artifact, request_id())
    request.run.dev_session = True
    first = await api.runs.CreateRun(request)
    retried = await api.runs.CreateRun(request)
    assert retried.run.name == first.run.name
    assert retried.dev_credential and retried.dev_credential != first.dev_credential
    engine = HandEngine(api, first.run.name, retried.dev_credential)
    welcome = await engine.connect()
    assert welcome.spec.run == first.run.name
    await engine.close()
    # The request is visible to the whole tenant: anyone else repeating it gets no credential.
    bob = clients_for(f"127.0.0.1:{control.port}", IDENTITY.token(subject="bob"))
    theirs = await bob.runs.CreateRun(request)
    assert theirs.run.name == first.run.name and theirs.dev_credential == ""
    await bob.channel.close()
