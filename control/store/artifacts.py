"""Artifacts (inputs and verified outputs) and resumable uploads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from flnet import lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import run_pb2 as rp
from flnet.control import names
from flnet.control.clock import now_us, timestamp
from flnet.control.reasons import Reason
from flnet.control.schema import artifacts, runs, uploads
from flnet.control.store.base import Database, Obj, Pending, RunRow, older_than, storable
from flnet.control.store.history import append_events
from flnet.errors import FailedPrecondition, NotFound


def _artifact(r: Any) -> ap.Artifact:
    """An artifact row as the services use it: with its storage_uri, which no response
    carries (flnet.control.storage_uris)."""
    a = ap.Artifact(
        name=names.artifact_name(r.tenant, r.id),
        direction=r.direction,
        sha256=r.sha256,
        size_bytes=r.size_bytes,
        media_type=r.media_type,
        filename=r.filename,
        output_name=r.output_name or "",
        storage_uri=r.storage_uri,
    )
    if r.run_id:
        a.run = names.run_name(r.tenant, r.run_id)
    a.create_time.CopyFrom(timestamp(r.create_us))
    return a


S = lc.RunState
# Built once: building a statement costs more than running it (every GetRun reads this).
_OUTPUTS_OF_RUNS = (
    select(artifacts)
    .where(artifacts.c.run_id.in_(bindparam("ids", expanding=True)))
    .order_by(artifacts.c.output_name)
)


async def _input_of(conn: AsyncConnection, tenant: str, sha256: str) -> Any:
    """The tenant's input artifact with this content, if any."""
    return (
        await conn.execute(
            select(artifacts).where(
                artifacts.c.tenant == tenant,
                artifacts.c.sha256 == sha256,
                artifacts.c.direction == ap.ARTIFACT_DIRECTION_INPUT,
            )
        )
    ).first()


async def _uploaded_again(conn: AsyncConnection, artifact_id: str, now: int) -> bool:
    """Refreshes an input's uploaded_us; False when gc deleted it. gc's DELETE re-checks
    uploaded_us under the row's lock (PostgreSQL re-evaluates its condition on the row this
    update committed; SQLite runs one writer at a time), so either this update finds the row
    and gc then spares it, or gc's delete committed first and this finds nothing."""
    refreshed = await conn.execute(
        update(artifacts).where(artifacts.c.id == artifact_id).values(uploaded_us=now)
    )
    return refreshed.rowcount == 1


@dataclass
class Upload:
    id: str
    tenant: str
    filename: str
    media_type: str
    total_size: int
    committed_size: int
    sha256: str
    finished: bool
    expire_us: int


class ArtifactStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_input_artifact(
        self,
        *,
        artifact_id: str,
        tenant: str,
        sha256: str,
        size: int,
        media_type: str,
        filename: str,
        uri: str,
    ) -> ap.Artifact:
        """Records an uploaded input; identical content in a tenant is one artifact (a unique
        index decides between concurrent uploads of the same content). Finding it refreshes
        its uploaded_us, unless gc deleted it meanwhile: then this upload records it anew."""
        storable(filename, artifacts.c.filename, "filename")
        storable(media_type, artifacts.c.media_type, "media_type")
        async with self.db.write() as conn:
            now = now_us()
            existing = await _input_of(conn, tenant, sha256)
            if existing is not None and await _uploaded_again(conn, existing.id, now):
                return _artifact(existing)
            values = dict(
                id=artifact_id,
                tenant=tenant,
                direction=ap.ARTIFACT_DIRECTION_INPUT,
                sha256=sha256,
                size_bytes=size,
                media_type=media_type,
                filename=filename,
                storage_uri=uri,
                create_us=now,
                uploaded_us=now,
            )
            insert_ = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            stored = await conn.execute(
                insert_(artifacts)
                .values(**values)
                .on_conflict_do_nothing(
                    index_elements=[artifacts.c.tenant, artifacts.c.sha256],
                    # The index's own predicate, literally: PostgreSQL cannot match the
                    # index to a bound parameter once it plans the prepared statement
                    # generically (after a few executions on one connection).
                    index_where=text(f"direction = {ap.ARTIFACT_DIRECTION_INPUT}"),
                )
            )
            if stored.rowcount == 0:
                # A concurrent upload of the same content committed first (on PostgreSQL,
                # this insert waited for it).
                existing = await _input_of(conn, tenant, sha256)
                assert existing is not None
                return _artifact(existing)
        return _artifact(Obj(values | {"run_id": None, "output_name": None}))

    async def add_output_artifact(
        self,
        *,
        artifact_id: str,
        run: RunRow,
        output_name: str,
        sha256: str,
        size: int,
        media_type: str,
        uri: str,
    ) -> ap.Artifact:
        """Records a verified output and its event. Uploading the same output again (an
        engine retrying after a reconnect) replaces it."""
        storable(media_type, artifacts.c.media_type, "media_type")
        pending = Pending()
        async with self.db.write(pending) as conn:
            row = await self.db.lock_run(conn, run.id)
            if row.state != S.RUN_STATE_RUNNING:
                raise FailedPrecondition(
                    f"outputs are accepted while the run is RUNNING, not "
                    f"{lifecycle.state_name(row.state)}"
                )
            now = now_us()
            existing = (
                await conn.execute(
                    select(artifacts).where(
                        artifacts.c.run_id == run.id, artifacts.c.output_name == output_name
                    )
                )
            ).first()
            if existing is not None and existing.sha256 == sha256:
                return _artifact(existing)
            if existing is not None:
                try:
                    await conn.execute(artifacts.delete().where(artifacts.c.id == existing.id))
                except IntegrityError:  # run_inputs' foreign key: another run reads it
                    raise FailedPrecondition(
                        f"output '{output_name}' is already an input of another run: it cannot "
                        "be replaced",
                        reason=Reason.OUTPUT_IN_USE,
                    ) from None
            values = dict(
                id=artifact_id,
                tenant=run.tenant,
                direction=ap.ARTIFACT_DIRECTION_OUTPUT,
                sha256=sha256,
                size_bytes=size,
                media_type=media_type,
                filename=output_name,
                run_id=run.id,
                output_name=output_name,
                storage_uri=uri,
                create_us=now,
                uploaded_us=now,
            )
            await conn.execute(insert(artifacts).values(**values))
            artifact = _artifact(Obj(values))
            seq = row.last_sequence + 1
            ev = rp.RunEvent(sequence=seq, output=artifact)
            # The history is what watchers get: where the bytes are stays here.
            ev.output.ClearField("storage_uri")
            append_events(pending, run.id, now, [ev])
            await conn.execute(
                update(runs).where(runs.c.id == run.id).values(last_sequence=seq, update_us=now)
            )
        return artifact

    async def get_artifact(self, tenant: str, artifact_id: str) -> ap.Artifact:
        async with self.db.read() as conn:
            r = (
                await conn.execute(
                    select(artifacts).where(
                        artifacts.c.tenant == tenant, artifacts.c.id == artifact_id
                    )
                )
            ).first()
        if r is None:
            raise NotFound(f"artifact {names.artifact_name(tenant, artifact_id)} does not exist")
        return _artifact(r)

    async def run_outputs(self, run_ids: Sequence[str]) -> dict[str, list[ap.Artifact]]:
        if not run_ids:
            return {}
        async with self.db.read() as conn:
            rows = (await conn.execute(_OUTPUTS_OF_RUNS, {"ids": list(run_ids)})).all()
        out: dict[str, list[ap.Artifact]] = {rid: [] for rid in run_ids}
        for r in rows:
            out[r.run_id].append(_artifact(r))
        return out

    async def list_artifacts(
        self, tenant: str, *, run_id: str | None, after: tuple[int, str] | None, limit: int
    ) -> list[ap.Artifact]:
        q = select(artifacts).where(artifacts.c.tenant == tenant)
        if run_id is not None:
            q = q.where(artifacts.c.run_id == run_id)
        if after is not None:
            q = q.where(older_than(artifacts.c.create_us, artifacts.c.id, after))
        q = q.order_by(artifacts.c.create_us.desc(), artifacts.c.id.desc()).limit(limit)
        async with self.db.read() as conn:
            return [_artifact(r) for r in (await conn.execute(q)).all()]

    # --------------------------------------------------------------------------- uploads

    async def create_upload(self, upload: Upload) -> None:
        storable(upload.filename, uploads.c.filename, "filename")
        storable(upload.media_type, uploads.c.media_type, "media_type")
        async with self.db.write() as conn:
            await conn.execute(
                insert(uploads).values(
                    id=upload.id,
                    tenant=upload.tenant,
                    filename=upload.filename,
                    media_type=upload.media_type,
                    total_size=upload.total_size,
                    committed_size=0,
                    sha256=upload.sha256,
                    finished=False,
                    create_us=now_us(),
                    expire_us=upload.expire_us,
                )
            )

    async def get_upload(self, tenant: str, upload_id: str) -> Upload:
        async with self.db.read() as conn:
            r = (
                await conn.execute(
                    select(uploads).where(uploads.c.tenant == tenant, uploads.c.id == upload_id)
                )
            ).first()
        if r is None or r.expire_us < now_us():
            raise NotFound(
                f"upload {names.upload_name(tenant, upload_id)} does not exist or expired"
            )
        return Upload(
            id=r.id,
            tenant=r.tenant,
            filename=r.filename,
            media_type=r.media_type,
            total_size=r.total_size,
            committed_size=r.committed_size,
            sha256=r.sha256,
            finished=r.finished,
            expire_us=r.expire_us,
        )

    async def set_upload_progress(
        self, upload_id: str, committed: int, finished: bool = False
    ) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(uploads)
                .where(uploads.c.id == upload_id)
                .values(committed_size=committed, finished=finished)
            )
