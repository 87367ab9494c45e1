"""What the retention tests share: gc as a separate client of the control plane's database
and artifact store (its own engine, as `flnet gc` in a process of its own), and runs driven
by hand through every kind of event."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, update

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.common.v1 import telemetry_pb2 as tm
from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.control.blobs import Blob, BlobStore, open_blob_store
from flnet.control.blobs.protocol import Stored
from flnet.control.clock import now_us
from flnet.control.database import create_engine
from flnet.control.news import RunFeed
from flnet.control.retention import Policy, Report, collect
from flnet.control.settings import ControlSettings
from flnet.control.store import Store
from tests.conftest import FIXTURES, Clients
from tests.control.hand_engine import HandEngine, dev_run, log, transition

S = lc.RunState
DAY_US = 86_400 * 1_000_000
DAY = 86_400.0
NOOP = FIXTURES / "tools" / "noop"


@dataclass
class Gc:
    """gc's side: its own store (engine) and artifact store."""

    store: Store
    blobs: BlobStore

    async def collect(self, *, days_later: float = 0, **policy: Any) -> Report:
        """One gc pass, as if `days_later` days had passed."""
        return await collect(
            self.store, self.blobs, Policy(**policy), now_us=now_us() + int(days_later * DAY_US)
        )

    async def set(self, table: Table, key: str, **values: Any) -> None:
        """Rewrites columns of one row (time travel for a row's timestamps)."""
        async with self.store.db.engine.begin() as conn:
            await conn.execute(update(table).where(table.c.id == key).values(**values))

    async def listed(self) -> dict[str, list[Stored]]:
        """Everything the artifact store lists, by kind."""
        return {
            "blobs": [s async for s in self.blobs.list_blobs()],
            "partials": [s async for s in self.blobs.list_partials()],
            "unfinished": [s async for s in self.blobs.list_unfinished()],
        }

    async def holds(self, uri: str, sha256: str = "") -> bool:
        return await self.blobs.exists(Blob(uri, sha256, 0))


@asynccontextmanager
async def gc_of(settings: ControlSettings) -> AsyncIterator[Gc]:
    engine = create_engine(settings.resolved_database_url)
    blobs = await open_blob_store(settings.resolved_artifact_url, s3_endpoint=settings.s3_endpoint)
    try:
        yield Gc(Store(engine, RunFeed()), blobs)
    finally:
        await blobs.close()
        await engine.dispose()


async def upload(api: Clients, data: bytes, tenant: str = "default") -> asv.UploadInputResponse:
    async def messages() -> AsyncIterator[asv.UploadInputRequest]:
        yield asv.UploadInputRequest(
            metadata=asv.UploadMetadata(
                parent=f"tenants/{tenant}",
                filename="data.csv",
                media_type="text/csv",
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
        yield asv.UploadInputRequest(chunk=data)

    return await api.artifacts.UploadInput(messages())


async def download(api: Clients, name: str) -> bytes:
    data = b""
    async for msg in api.artifacts.DownloadArtifact(asv.DownloadArtifactRequest(name=name)):
        data += msg.data
    return data


async def upload_output(api: Clients, engine: HandEngine, name: str, data: bytes) -> None:
    async def messages() -> AsyncIterator[rt.UploadOutputRequest]:
        yield rt.UploadOutputRequest(
            metadata=rt.OutputMetadata(
                run=engine.run,
                name=name,
                sha256=hashlib.sha256(data).hexdigest(),
                size_bytes=len(data),
            )
        )
        yield rt.UploadOutputRequest(chunk=data)

    await api.runtime.UploadOutput(messages(), metadata=engine.metadata)


def metric(step: int) -> rt.Entry:
    return rt.Entry(metric=tm.MetricPoint(name="loss", value=1.0 / (step + 1), step=step))


def progress(fraction: float) -> rt.Entry:
    return rt.Entry(progress=tm.Progress(fraction=fraction))


async def finished_run(api: Clients, tool_version: str, artifact: str) -> str:
    """A run through every state with telemetry between its state changes (some of it in
    the batch that proposes a change), an output, and telemetry after its terminal change."""
    run, credential = await dev_run(api, tool_version, artifact)
    engine = HandEngine(api, run.name, credential)
    await engine.connect()
    try:
        await engine.send_batch(log("connected"), transition(S.RUN_STATE_INITIALIZED))
        await engine.propose(S.RUN_STATE_STARTED)
        await engine.send_batch(log("starting"), transition(S.RUN_STATE_RUNNING), log("go"))
        for step in range(3):
            await engine.send_batch(log(f"epoch {step}"), metric(step), progress(step / 3))
        await upload_output(api, engine, "result", b'{"ok": true}')
        end = transition(S.RUN_STATE_FINISHED)
        await engine.send_batch(progress(1.0), end, log("flushed as it ended"))
    finally:
        await engine.close()
    return run.name


async def events_of(api: Clients, run: str, page_size: int = 0) -> list[rp.RunEvent]:
    """Every stored event, through ListRunEvents' pages."""
    events: list[rp.RunEvent] = []
    token = ""
    while True:
        page = await api.runs.ListRunEvents(
            rs.ListRunEventsRequest(parent=run, page_size=page_size, page_token=token)
        )
        events.extend(page.events)
        token = page.next_page_token
        if not token:
            return events


async def watched(api: Clients, run: str, after: int = 0) -> list[rp.RunEvent]:
    """WatchRun's events of an ended run, until the stream ends by itself."""
    return [
        event
        async for res in api.runs.WatchRun(rs.WatchRunRequest(name=run, after_sequence=after))
        for event in res.events
    ]


async def exported(api: Clients, run: str) -> zipfile.ZipFile:
    data = b"".join([msg.data async for msg in api.runs.ExportRun(rs.ExportRunRequest(name=run))])
    return zipfile.ZipFile(io.BytesIO(data))
