"""`flnet gc` beside a running control plane, on SQLite and files or PostgreSQL and S3: what
goes (old inputs no run references, old telemetry, what no record points to) and what stays
(referenced inputs, outputs, anything fresh, provenance events), and that a dry run reports
what the real run then does, changing nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import pairwise

import grpc
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from flnet import timeouts
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.control.app import ControlApp
from flnet.control.blobs import LocalBlobStore, S3BlobStore
from flnet.control.clock import now_us
from flnet.control.retention import Report
from flnet.control.schema import artifacts, run_events, runs
from flnet.control.store import retention as retention_store
from flnet.control.store.retention import without_telemetry
from tests.conftest import TENANT, Clients, clients_for
from tests.control.hand_engine import HandEngine, dev_run, log, transition
from tests.identity import IDENTITY
from tests.retention.support import (
    DAY,
    DAY_US,
    NOOP,
    Gc,
    S,
    download,
    events_of,
    exported,
    finished_run,
    upload,
    watched,
)
from tests.s3 import storage_uri

KEPT = {"state_change", "output", "cancellation", "config_change"}


def kinds(events: list[rp.RunEvent]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


def provenance(events: list[rp.RunEvent]) -> list[rp.RunEvent]:
    return [e for e in events if e.WhichOneof("event") in KEPT]


def id_of(name: str) -> str:
    return name.rsplit("/", 1)[1]


async def missing(call: object) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call  # type: ignore[misc]
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def nothing_removed(report: Report) -> bool:
    tallies = (
        report.uploads,
        report.inputs,
        report.telemetry,
        report.orphan_blobs,
        report.unfinished_writes,
    )
    return all(t.count == 0 for t in tallies) and not report.errors


# --- inputs and outputs ----------------------------------------------------------------------


async def test_old_inputs_no_run_references_go_row_and_blob(api: Clients, gc: Gc) -> None:
    version = await api.register(NOOP)
    used = (await upload(api, b"a,b\n1,2\n")).artifact
    unused = (await upload(api, b"never used\n")).artifact
    unused_uri = await storage_uri(gc.store, unused.name)
    run = await finished_run(api, version.name, used.name)
    [output] = (await api.runs.GetRun(rs.GetRunRequest(name=run))).run.outputs

    report = await gc.collect(days_later=2, telemetry_age=None)

    assert (report.inputs.count, report.inputs.bytes) == (1, unused.size_bytes)
    assert report.errors == [] and report.telemetry.count == 0
    await missing(download(api, unused.name))
    assert not await gc.holds(unused_uri, unused.sha256)
    # What a run references stays, and so does what it produced.
    assert await download(api, used.name) == b"a,b\n1,2\n"
    assert await download(api, output.name) == b'{"ok": true}'
    listed = await api.artifacts.ListArtifacts(asv.ListArtifactsRequest(parent=TENANT))
    # And the source archive the tool version names.
    assert {a.name for a in listed.artifacts} == {used.name, output.name, version.source.archive}
    crate = await exported(api, run)
    assert any(n.startswith("inputs/data/") for n in crate.namelist())
    # Reproducing the run finds its inputs.
    again = await api.runs.ReproduceRun(rs.ReproduceRunRequest(name=run))
    assert [i.artifact for i in again.run.inputs] == [used.name]
    assert nothing_removed(await gc.collect(days_later=2, telemetry_age=None))


async def test_fresh_inputs_survive_and_an_upload_again_restarts_their_grace(
    api: Clients, gc: Gc
) -> None:
    fresh = (await upload(api, b"just uploaded\n")).artifact
    old = (await upload(api, b"old\n")).artifact
    again = (await upload(api, b"old, uploaded again\n")).artifact
    for artifact in (old, again):
        await gc.set(artifacts, id_of(artifact.name), uploaded_us=now_us() - 7 * DAY_US)
    # Uploading the same content finds the same artifact, and refreshes it.
    assert (await upload(api, b"old, uploaded again\n")).artifact.name == again.name

    report = await gc.collect()  # now, with the default grace of a day

    assert report.inputs.count == 1
    await missing(download(api, old.name))
    assert await download(api, fresh.name) == b"just uploaded\n"
    assert await download(api, again.name) == b"old, uploaded again\n"


async def test_content_another_artifact_records_keeps_its_bytes(
    control: ControlApp, api: Clients, gc: Gc
) -> None:
    """The file store keeps one copy per content: another tenant's artifact with the same
    bytes keeps them when this one goes (S3 keeps an object per artifact)."""
    data = b"shared,content\n"
    mine = (await upload(api, data)).artifact
    theirs_api = clients_for(f"127.0.0.1:{control.port}", IDENTITY.token(tenant="acme"))
    try:
        theirs = (await upload(theirs_api, data, tenant="acme")).artifact
        uris = {await storage_uri(gc.store, a.name) for a in (mine, theirs)}
        await gc.set(artifacts, id_of(theirs.name), uploaded_us=now_us() + 9 * DAY_US)

        report = await gc.collect(days_later=2)

        assert report.inputs.count == 1
        await missing(download(api, mine.name))
        assert await download(theirs_api, theirs.name) == data
        if isinstance(gc.blobs, LocalBlobStore):
            assert len(uris) == 1 and report.inputs.bytes == 0
        else:
            assert report.inputs.bytes == len(data)
    finally:
        await theirs_api.channel.close()


# --- telemetry -------------------------------------------------------------------------------


def test_dropping_telemetry_keeps_numbered_segments_of_provenance() -> None:
    change = rp.RunEvent(state_change=lc.StateChange(message="x"))
    out = rp.RunEvent(output=ap.Artifact(output_name="result"))
    line = rp.RunEvent(log=tm.LogRecord(message="l"))
    segment = rp.RunEventSegment(events=[line, change, out, line, line, change, line])

    kept = without_telemetry(10, segment.SerializeToString())

    assert kept is not None
    assert [(s.first, s.last) for s in kept] == [(11, 12), (15, 15)]
    replaced = [list(rp.RunEventSegment.FromString(s.payload).events) for s in kept]
    assert [kinds(events) for events in replaced] == [["state_change", "output"], ["state_change"]]
    assert without_telemetry(1, rp.RunEventSegment(events=[line, line]).SerializeToString()) == []
    assert without_telemetry(1, rp.RunEventSegment(events=[change]).SerializeToString()) is None


async def test_old_runs_lose_telemetry_and_keep_provenance_with_their_numbers(
    api: Clients, gc: Gc
) -> None:
    version = await api.register(NOOP)
    artifact = (await upload(api, b"a,b\n1,2\n")).artifact.name
    old = await finished_run(api, version.name, artifact)
    recent = await finished_run(api, version.name, artifact)
    before = await events_of(api, old)
    await gc.set(runs, id_of(old), end_us=now_us() - 40 * DAY_US)
    recent_before = await events_of(api, recent)

    report = await gc.collect(telemetry_age=30 * DAY)

    kept = provenance(before)
    assert report.telemetry.count == 1 and report.telemetry_events == len(before) - len(kept)
    assert report.telemetry.bytes > 0 and report.errors == []
    after = await events_of(api, old)
    assert [(e.sequence, e.SerializeToString()) for e in after] == [
        (e.sequence, e.SerializeToString()) for e in kept
    ]
    assert set(kinds(after)) == {"state_change", "output"}
    assert await events_of(api, old, page_size=1) == after  # pages across the gaps
    assert await events_of(api, recent) == recent_before
    # The history no longer reaches last_sequence (the telemetry flushed after the end is
    # gone): WatchRun still ends, from any point.
    got = (await api.runs.GetRun(rs.GetRunRequest(name=old))).run
    assert got.last_sequence == before[-1].sequence > after[-1].sequence
    assert await timeouts.wait_for(watched(api, old), 10) == after
    assert await timeouts.wait_for(watched(api, old, after[2].sequence), 10) == after[3:]
    assert await timeouts.wait_for(watched(api, old, after[-1].sequence), 10) == []
    crate = await exported(api, old)
    timeline = json.loads(crate.read("timeline.json"))
    changes = [e.sequence for e in after if e.HasField("state_change")]
    assert [t["sequence"] for t in timeline] == changes
    assert crate.read("logs.jsonl") == b""
    assert crate.read("metrics.csv").decode().splitlines() == ["time,name,step,value,unit"]
    # Done once: the run says so, and another pass finds nothing.
    assert got.HasField("telemetry_drop_time")
    latest = (await api.runs.GetRun(rs.GetRunRequest(name=recent))).run
    assert not latest.HasField("telemetry_drop_time")
    assert nothing_removed(await gc.collect(telemetry_age=30 * DAY))


async def history_rows(gc: Gc, run_id: str) -> list[tuple[int, int, int]]:
    """(first, last, events held) of each stored segment of the run's history, in order."""
    async with gc.store.db.engine.connect() as conn:
        rows = await conn.execute(
            select(run_events.c.first_seq, run_events.c.last_seq, run_events.c.payload)
            .where(run_events.c.run_id == run_id)
            .order_by(run_events.c.first_seq)
        )
        return [
            (r.first_seq, r.last_seq, len(rp.RunEventSegment.FromString(r.payload).events))
            for r in rows
        ]


def compacted_up_to(before: list[rp.RunEvent], now: list[rp.RunEvent]) -> bool:
    """Whether `now` is `before` without the telemetry up to some sequence number."""
    return any(
        now == [e for e in before if e.sequence > upto or e.WhichOneof("event") in KEPT]
        for upto in range(before[-1].sequence + 1)
    )


async def test_a_long_history_is_compacted_in_several_transactions_each_leaving_it_valid(
    api: Clients, gc: Gc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each transaction rewrites a few segments and commits: what readers see in between is
    a valid history (segments without gaps, none overlapping, every event numbered as before)
    with telemetry up to some point gone; only the last one marks the run."""
    version = await api.register(NOOP)
    run = await finished_run(api, version.name, (await upload(api, b"x\n")).artifact.name)
    before = await events_of(api, run)
    segments = len(await history_rows(gc, id_of(run)))
    await gc.set(runs, id_of(run), end_us=now_us() - 40 * DAY_US)
    monkeypatch.setattr(retention_store, "SEGMENTS_PER_TRANSACTION", 2)
    seen: list[tuple[list[rp.RunEvent], int | None]] = []
    gc_write = gc.store.retention.gc_write

    @asynccontextmanager
    async def observed() -> AsyncIterator[AsyncConnection]:
        async with gc_write() as conn:
            yield conn
        rows = await history_rows(gc, id_of(run))
        assert all(last - first + 1 == held for first, last, held in rows)
        assert all(a[1] < b[0] for a, b in pairwise(rows))
        async with gc.store.db.engine.connect() as conn:
            marked = await conn.execute(
                select(runs.c.telemetry_dropped_us).where(runs.c.id == id_of(run))
            )
            seen.append((await events_of(api, run), marked.scalar_one()))

    monkeypatch.setattr(gc.store.retention, "gc_write", observed)

    report = await gc.collect(telemetry_age=30 * DAY)

    assert segments >= 8 and len(seen) == segments // 2 + 1
    assert report.telemetry.count == 1
    assert report.telemetry_events == len(before) - len(provenance(before))
    assert all(compacted_up_to(before, events) for events, _ in seen)
    assert [marked is None for _, marked in seen] == [True] * (len(seen) - 1) + [False]
    assert seen[-1][0] == provenance(before) == await events_of(api, run)


async def test_an_interrupted_compaction_is_finished_by_the_next_gc(
    api: Clients, gc: Gc, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = await api.register(NOOP)
    run = await finished_run(api, version.name, (await upload(api, b"x\n")).artifact.name)
    before = await events_of(api, run)
    await gc.set(runs, id_of(run), end_us=now_us() - 40 * DAY_US)
    monkeypatch.setattr(retention_store, "SEGMENTS_PER_TRANSACTION", 2)
    gc_write = gc.store.retention.gc_write
    began = 0

    @asynccontextmanager
    async def crashing() -> AsyncIterator[AsyncConnection]:
        nonlocal began
        began += 1
        async with gc_write() as conn:
            if began == 3:
                raise RuntimeError("gc killed")
            yield conn

    with monkeypatch.context() as patched:
        patched.setattr(gc.store.retention, "gc_write", crashing)
        with pytest.raises(RuntimeError, match="gc killed"):
            await gc.collect(telemetry_age=30 * DAY)
    halfway = await events_of(api, run)
    assert compacted_up_to(before, halfway) and provenance(before) != halfway != before

    report = await gc.collect(telemetry_age=30 * DAY)

    assert report.telemetry.count == 1
    assert report.telemetry_events == len(halfway) - len(provenance(before))
    assert await events_of(api, run) == provenance(before)
    assert nothing_removed(await gc.collect(telemetry_age=30 * DAY))


async def test_a_run_that_has_not_ended_keeps_its_telemetry(api: Clients, gc: Gc) -> None:
    version = await api.register(NOOP)
    run, credential = await dev_run(api, version.name, (await upload(api, b"x\n")).artifact.name)
    engine = HandEngine(api, run.name, credential)
    await engine.connect()
    try:
        await engine.send_batch(log("connected"), transition(S.RUN_STATE_INITIALIZED))
        before = await events_of(api, run.name)

        report = await gc.collect(days_later=365, telemetry_age=0)

        assert report.telemetry.count == 0
        assert await events_of(api, run.name) == before
    finally:
        await engine.close()


async def test_a_cancellation_is_provenance(api: Clients, gc: Gc) -> None:
    version = await api.register(NOOP)
    run, credential = await dev_run(api, version.name, (await upload(api, b"x\n")).artifact.name)
    engine = HandEngine(api, run.name, credential)
    await engine.connect()
    try:
        for state in (S.RUN_STATE_INITIALIZED, S.RUN_STATE_STARTED, S.RUN_STATE_RUNNING):
            await engine.send_batch(log(f"before {state}"), transition(state))
        await api.runs.CancelRun(rs.CancelRunRequest(name=run.name, reason="not needed"))
        await engine.receive_kind("command")
        await engine.send_batch(log("stopping"), transition(S.RUN_STATE_CANCELLED))
    finally:
        await engine.close()
    before = await events_of(api, run.name)
    assert "cancellation" in kinds(before)

    report = await gc.collect(days_later=31, telemetry_age=30 * DAY)

    assert report.telemetry_events == kinds(before).count("log") == 4
    assert await events_of(api, run.name) == provenance(before)


# --- what no record points to ---------------------------------------------------------------


async def abandon_write(gc: Gc, data: bytes) -> None:
    """A write that never finished: a crashed writer's temporary file, or a multipart upload
    neither completed nor aborted."""
    if isinstance(gc.blobs, S3BlobStore):
        key = gc.blobs.key("objects", "abandoned")
        client, bucket = gc.blobs.client, gc.blobs.bucket
        started = await client.create_multipart_upload(Bucket=bucket, Key=key)
        await client.upload_part(
            Bucket=bucket, Key=key, UploadId=started["UploadId"], PartNumber=1, Body=data
        )
    else:
        await gc.blobs.writer().write(data)


async def test_orphans_stale_writes_and_expired_uploads_are_collected(api: Clients, gc: Gc) -> None:
    kept = (await upload(api, b"recorded\n")).artifact
    await gc.set(artifacts, id_of(kept.name), uploaded_us=now_us() + 9 * DAY_US)
    writer = gc.blobs.writer()
    await writer.write(b"no record points here")
    orphan = await writer.commit()
    await abandon_write(gc, b"half written")
    await gc.blobs.append_partial("strayupload", 0, b"a piece without an upload")
    started = (
        await api.artifacts.StartUpload(asv.StartUploadRequest(parent=TENANT, total_size=10))
    ).upload
    await api.artifacts.UploadChunk(
        asv.UploadChunkRequest(name=started.name, offset=0, data=b"12345")
    )
    listed = await gc.listed()
    assert [len(listed[k]) for k in ("blobs", "partials", "unfinished")] == [2, 2, 1]

    assert nothing_removed(await gc.collect())  # all of it is fresh
    assert await gc.listed() == listed

    report = await gc.collect(days_later=3)

    assert report.errors == [] and report.inputs.count == 0
    assert (report.orphan_blobs.count, report.orphan_blobs.bytes) == (1, orphan.size)
    assert (report.unfinished_writes.count, report.unfinished_writes.bytes) == (1, 12)
    assert (report.uploads.count, report.uploads.bytes) == (2, 5 + 25)
    now = await gc.listed()
    assert [s.key for s in now["blobs"]] == [s.key for s in listed["blobs"] if s.key != orphan.uri]
    assert now["partials"] == [] and now["unfinished"] == []
    assert not await gc.holds(orphan.uri, orphan.sha256)
    await missing(api.artifacts.GetUpload(asv.GetUploadRequest(name=started.name)))
    assert await download(api, kept.name) == b"recorded\n"


# --- dry run ---------------------------------------------------------------------------------


async def test_a_dry_run_reports_what_gc_then_does_and_changes_nothing(
    api: Clients, gc: Gc
) -> None:
    version = await api.register(NOOP)
    used = (await upload(api, b"a,b\n1,2\n")).artifact
    await upload(api, b"unused\n")
    run = await finished_run(api, version.name, used.name)
    writer = gc.blobs.writer()
    await writer.write(b"orphan")
    await writer.commit()
    await abandon_write(gc, b"half")
    await gc.blobs.append_partial("strayupload", 0, b"piece")
    history = await events_of(api, run)
    listed = await gc.listed()
    names = await api.artifacts.ListArtifacts(asv.ListArtifactsRequest(parent=TENANT))

    dry = await gc.collect(days_later=40, telemetry_age=30 * DAY, dry_run=True)

    assert dry.dry_run and dry.errors == []
    assert await events_of(api, run) == history
    assert await gc.listed() == listed
    assert await api.artifacts.ListArtifacts(asv.ListArtifactsRequest(parent=TENANT)) == names
    real = await gc.collect(days_later=40, telemetry_age=30 * DAY)
    assert dry.to_dict() == real.to_dict() | {"dryRun": True}
    counts = [real.inputs, real.telemetry, real.orphan_blobs, real.unfinished_writes]
    assert [t.count for t in counts] == [1, 1, 1, 1] and real.uploads.count == 1


@pytest.mark.parametrize("other_uploaded", ["old", "never"])
async def test_a_dry_run_counts_content_stale_inputs_share_as_the_real_run_frees_it(
    control: ControlApp, api: Clients, gc: Gc, other_uploaded: str
) -> None:
    """Two tenants' inputs with the same bytes (one copy in the file store, an object each on
    S3), one of them stale and the other stale too, or without an upload time (never
    collected): the dry run reports the bytes the real run frees."""
    data = b"the same bytes\n"
    mine = (await upload(api, data)).artifact
    theirs_api = clients_for(f"127.0.0.1:{control.port}", IDENTITY.token(tenant="acme"))
    try:
        theirs = (await upload(theirs_api, data, tenant="acme")).artifact
        if other_uploaded == "never":
            await gc.set(artifacts, id_of(theirs.name), uploaded_us=None)

        dry = await gc.collect(days_later=2, telemetry_age=None, dry_run=True)
        real = await gc.collect(days_later=2, telemetry_age=None)

        assert dry.to_dict() == real.to_dict() | {"dryRun": True}
        gone = 2 if other_uploaded == "old" else 1
        if isinstance(gc.blobs, LocalBlobStore):  # one copy: freed with the last record
            freed = len(data) if other_uploaded == "old" else 0
        else:
            freed = gone * len(data)
        assert (real.inputs.count, real.inputs.bytes) == (gone, freed)
        assert real.errors == [] and real.orphan_blobs.count == 0
        await missing(download(api, mine.name))
        if other_uploaded == "never":
            assert await download(theirs_api, theirs.name) == data
    finally:
        await theirs_api.channel.close()
