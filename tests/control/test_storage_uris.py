"""Where the control plane keeps an artifact's bytes (a path on its host, a bucket and key)
reaches no client: no response of any service carries Artifact.storage_uri, nor an export's
run.json, nor a history written before that was so (flnet.control.storage_uris)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterable, AsyncIterator
from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from sqlalchemy import select, update

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.control import names
from flnet.control.app import ControlApp
from flnet.control.schema import run_events
from flnet.control.storage_uris import hide_storage_uris
from tests.conftest import TENANT, Clients
from tests.control.hand_engine import HandEngine, connected_engine
from tests.control.test_lifecycle import NOOP, drive_to, upload_output
from tests.s3 import storage_uri

S = lc.RunState
M = TypeVar("M", bound=Message)
CSV = b"a,b\n1,2\n"


async def finished_run(api: Clients) -> tuple[HandEngine, rp.Run]:
    """A run of NOOP with its input and its `result` output, FINISHED."""
    engine = await connected_engine(api, NOOP, CSV)
    await drive_to(engine, S.RUN_STATE_RUNNING)
    await upload_output(api, engine, "result", b'{"ok": true}')
    assert (await engine.propose(S.RUN_STATE_FINISHED)).state == S.RUN_STATE_FINISHED
    await engine.close()
    run = (await api.runs.GetRun(rs.GetRunRequest(name=engine.run))).run
    return engine, run


async def first(stream: AsyncIterable[M]) -> M:
    async for message in stream:
        return message
    raise AssertionError("an empty stream")


async def everything_a_client_sees(api: Clients, run: rp.Run) -> list[Message]:
    """A response of every RPC that returns artifacts, one way or another."""
    output = run.outputs[0].name
    upload = (
        await api.artifacts.StartUpload(
            asv.StartUploadRequest(parent=TENANT, total_size=3, media_type="text/csv")
        )
    ).upload
    await api.artifacts.UploadChunk(asv.UploadChunkRequest(name=upload.name, data=b"a\n1"))
    watch = api.runs.WatchRun(rs.WatchRunRequest(name=run.name))
    seen = [
        await api.runs.GetRun(rs.GetRunRequest(name=run.name)),
        await api.runs.ListRuns(rs.ListRunsRequest(parent=TENANT)),
        await api.runs.ListRunEvents(rs.ListRunEventsRequest(parent=run.name)),
        await first(watch),
        await api.artifacts.ListArtifacts(asv.ListArtifactsRequest(parent=TENANT)),
        await api.artifacts.ListArtifacts(asv.ListArtifactsRequest(parent=run.name)),
        await first(api.artifacts.DownloadArtifact(asv.DownloadArtifactRequest(name=output))),
        await api.artifacts.FinishUpload(asv.FinishUploadRequest(name=upload.name)),
    ]
    watch.cancel()

    async def one_input() -> AsyncIterator[asv.UploadInputRequest]:
        yield asv.UploadInputRequest(metadata=asv.UploadMetadata(parent=TENANT))
        yield asv.UploadInputRequest(chunk=b"b\n2\n")

    seen.append(await api.artifacts.UploadInput(one_input()))
    return seen


def artifacts_in(message: Message) -> list[ap.Artifact]:
    """Every Artifact a response holds, wherever it sits."""
    found: list[ap.Artifact] = []
    for field, value in message.ListFields():
        values = value if field.is_repeated else [value]
        for each in values:
            if isinstance(each, ap.Artifact):
                found.append(each)
            elif isinstance(each, Message):
                found.extend(artifacts_in(each))
    return found


async def test_no_response_tells_where_the_bytes_are(api: Clients, control: ControlApp) -> None:
    _, run = await finished_run(api)
    kept = {await storage_uri(control.store, a.name) for a in run.outputs}
    kept.add(await storage_uri(control.store, run.inputs[0].artifact))
    assert all(kept)  # the store has them
    seen = await everything_a_client_sees(api, run)
    artifacts = [a for message in seen for a in artifacts_in(message)]
    assert {a.output_name for a in artifacts} >= {"result"}  # outputs, in runs and events
    assert len({a.name for a in artifacts}) == 5  # the input, the output, two uploads, the source
    assert [a.name for a in artifacts if a.storage_uri] == []
    for message in seen:
        data = message.SerializeToString()
        assert not any(uri.encode() in data for uri in kept), type(message).__name__


async def test_an_export_tells_it_neither(api: Clients, control: ControlApp) -> None:
    _, run = await finished_run(api)
    data = b""
    async for chunk in api.runs.ExportRun(rs.ExportRunRequest(name=run.name)):
        data += chunk.data
    crate = zipfile.ZipFile(io.BytesIO(data))
    exported = crate.read("run.json").decode()
    assert '"outputs"' in exported and '"sha256"' in exported
    assert "storageUri" not in exported
    assert crate.read(crate.namelist()[-1])  # the whole crate, outputs read through the URI
    uri = await storage_uri(control.store, run.outputs[0].name)
    assert not any(uri.encode() in crate.read(name) for name in crate.namelist())


async def test_a_history_that_holds_it_loses_it_as_it_is_read(
    api: Clients, control: ControlApp
) -> None:
    """Output events of an earlier version were stored with the URI."""
    _, run = await finished_run(api)
    run_id = names.parse_run(run.name)[1]
    uri = await storage_uri(control.store, run.outputs[0].name)
    async with control.engine.begin() as conn:
        for row in (
            await conn.execute(
                select(run_events.c.first_seq, run_events.c.payload).where(
                    run_events.c.run_id == run_id
                )
            )
        ).all():
            segment = rp.RunEventSegment.FromString(row.payload)
            outputs = [e.output for e in segment.events if e.HasField("output")]
            for output in outputs:
                output.storage_uri = uri
            if outputs:
                await conn.execute(
                    update(run_events)
                    .where(run_events.c.run_id == run_id, run_events.c.first_seq == row.first_seq)
                    .values(payload=segment.SerializeToString())
                )
    control.store.feed.forget(run_id)  # what this process kept in memory was written clean
    events = (await api.runs.ListRunEvents(rs.ListRunEventsRequest(parent=run.name))).events
    [output] = [e.output for e in events if e.HasField("output")]
    assert output.output_name == "result" and output.sha256 == run.outputs[0].sha256
    assert output.storage_uri == ""
    # The run has ended: its watch streams the whole history and ends (nothing left open).
    async for response in api.runs.WatchRun(rs.WatchRunRequest(name=run.name)):
        assert uri.encode() not in response.SerializeToString()


def test_artifacts_are_found_wherever_they_sit() -> None:
    """Nested, repeated, in a map's values, in recursive types: all cleared."""
    run = rp.Run(name="tenants/a/runs/r", outputs=[ap.Artifact(storage_uri="s3://b/k")] * 2)
    response = rs.ListRunsResponse(runs=[run, run])
    response.runs[0].config.update({"nested": {"deeper": [1, {"x": "file:///kept"}]}})
    hide_storage_uris(response)
    assert [a.storage_uri for r in response.runs for a in r.outputs] == [""] * 4
    config = json_format.MessageToDict(response.runs[0].config)
    assert config["nested"]["deeper"][1]["x"] == "file:///kept"  # not an Artifact
    artifact = ap.Artifact(name="tenants/a/artifacts/x", storage_uri="file:///data/blob")
    hide_storage_uris(artifact)
    assert artifact == ap.Artifact(name="tenants/a/artifacts/x")
