"""`flnet gc`: removes what no record needs any more, beside running control planes.

In this order:

1. resumable uploads that expired more than the grace period ago: their bytes, then their
   record (a crash in between leaves the record, and the next gc tries again);
2. input artifacts that no run or tool version (as its source archive) references, last
   uploaded more than the grace period ago: the record first, in a transaction that
   re-checks both as it deletes, then the bytes once that committed. A reference can never
   dangle: a crash in between leaves only bytes that no record points to, which step 4
   finds (control.store.retention explains the races);
3. the telemetry (logs, metrics, progress) of runs that ended more than `telemetry_age` ago:
   dropped from their history, one transaction per run. State changes, cancellation,
   configuration changes and outputs stay, with their sequence numbers;
4. what the artifact store holds that no record points to, written more than the grace period
   ago: blobs, pieces of resumable uploads, writes never finished (a temporary file, an S3
   multipart upload).

Outputs belong to their run and runs are provenance: neither is ever collected. The grace
period spares what is in use before anything records it (a file uploaded for a run not
created yet, a write in progress): it must exceed the longest upload. A failure to remove
bytes is reported and the sweep goes on; they are found again next time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from flnet.control import clock, names
from flnet.control.blobs import Blob, BlobStore, open_blob_store
from flnet.control.blobs.protocol import Stored
from flnet.control.database import open_current
from flnet.control.news import RunFeed
from flnet.control.store import Store
from flnet.control.store.retention import EndedRun, StaleInput

log = logging.getLogger(__name__)

DAY = 24 * 3600.0
DEFAULT_GRACE = 1 * DAY
DEFAULT_TELEMETRY_AGE = 30 * DAY
# Stored items looked up in the database per query while sweeping the artifact store.
PAGE = 500


@dataclass(frozen=True)
class Policy:
    """What gc may remove. Durations in seconds; `telemetry_age` None keeps all telemetry."""

    grace: float = DEFAULT_GRACE
    telemetry_age: float | None = DEFAULT_TELEMETRY_AGE
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.grace < 0:
            raise ValueError("the grace period must not be negative")
        if self.telemetry_age is not None and self.telemetry_age < 0:
            raise ValueError("the telemetry age must not be negative")


@dataclass
class Tally:
    count: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.count += 1
        self.bytes += size


@dataclass
class Report:
    """What gc removed, or would remove on a dry run, per kind; bytes are those freed."""

    dry_run: bool
    uploads: Tally = field(default_factory=Tally)  # expired resumable uploads, stray pieces
    inputs: Tally = field(default_factory=Tally)  # input artifacts (bytes: of their blobs)
    telemetry: Tally = field(default_factory=Tally)  # runs (bytes: of their history)
    telemetry_events: int = 0
    orphan_blobs: Tally = field(default_factory=Tally)
    unfinished_writes: Tally = field(default_factory=Tally)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dryRun": self.dry_run,
            "uploads": asdict(self.uploads),
            "inputs": asdict(self.inputs),
            "telemetry": {
                "runs": self.telemetry.count,
                "events": self.telemetry_events,
                "bytes": self.telemetry.bytes,
            },
            "orphanBlobs": asdict(self.orphan_blobs),
            "unfinishedWrites": asdict(self.unfinished_writes),
            "errors": list(self.errors),
        }


async def run_gc(
    database_url: str,
    artifact_url: str,
    policy: Policy,
    *,
    s3_endpoint: str = "",
    s3_region: str = "",
) -> Report:
    """gc on the database and artifact store these URLs name, as a deployment configures
    them. ValueError when either is unusable, or the database's schema is not this version's."""
    engine = await open_current(database_url)
    try:
        try:
            blobs = await open_blob_store(
                artifact_url, s3_endpoint=s3_endpoint, s3_region=s3_region
            )
        except OSError as e:  # a file store's directory that cannot be one
            raise ValueError(f"FLNET_ARTIFACT_URL: {artifact_url}: {e}") from None
        try:
            return await collect(Store(engine, RunFeed()), blobs, policy)
        finally:
            await blobs.close()
    finally:
        await engine.dispose()


async def collect(
    store: Store, blobs: BlobStore, policy: Policy, *, now_us: int | None = None
) -> Report:
    """One pass of gc (see the module's docstring) as if it were `now_us`."""
    now = clock.now_us() if now_us is None else now_us
    gc = _Collector(store, blobs, policy, now - int(policy.grace * 1e6))
    await gc.expired_uploads()
    await gc.stale_inputs()
    if policy.telemetry_age is not None:
        await gc.telemetry(now - int(policy.telemetry_age * 1e6))
    await gc.sweep("blob", blobs.list_blobs(), gc.orphan_blobs)
    await gc.sweep("upload", blobs.list_partials(), gc.stray_partials)
    await gc.sweep("unfinished write", blobs.list_unfinished(), gc.unfinished_writes)
    return gc.report


class _Collector:
    def __init__(self, store: Store, blobs: BlobStore, policy: Policy, cutoff_us: int) -> None:
        self.store = store
        self.blobs = blobs
        self.dry_run = policy.dry_run
        self.cutoff = cutoff_us  # nothing written or used since is collected
        self.report = Report(dry_run=policy.dry_run)

    async def _attempt(self, what: str, action: Awaitable[bool | None]) -> bool:
        """Whether `action` did its work: it did not fail (a failure is recorded; one item
        the store cannot remove now does not stop the sweep) nor say False."""
        try:
            return await action is not False
        except Exception as e:
            log.warning("gc: %s: %s", what, e, exc_info=True)
            self.report.errors.append(f"{what}: {e}")
            return False

    async def _recorded(self, blob: Blob, ignore_stale_before: int = 0) -> bool:
        """Whether an artifact records the blob's bytes (by URI, or by content where the
        store keeps one copy per content)."""
        shas = [blob.sha256] if self.blobs.shares_content else []
        found = await self.store.retention.recorded(
            [blob.uri], shas, ignore_stale_before=ignore_stale_before
        )
        return bool(found)

    async def expired_uploads(self) -> None:
        after = ""
        while page := await self.store.retention.expired_uploads(self.cutoff, after=after):
            after = page[-1].id
            for upload in page:
                if self.dry_run:
                    self.report.uploads.add(upload.size)
                    continue
                dropping = self.blobs.drop_partial(upload.id)
                if not await self._attempt(f"upload {upload.id}", dropping):
                    continue  # its record stays: the next gc tries again
                if await self.store.retention.delete_upload(upload.id, self.cutoff):
                    self.report.uploads.add(upload.size)

    async def stale_inputs(self) -> None:
        counted: set[str] = set()  # a dry run's: the bytes of the inputs it counted already
        after: StaleInput | None = None
        while page := await self.store.retention.stale_inputs(self.cutoff, after=after):
            after = page[-1]
            for candidate in page:
                if self.dry_run:
                    self.report.inputs.add(await self._would_free(candidate.blob, counted))
                    continue
                deleted = await self.store.retention.delete_stale_input(candidate.id, self.cutoff)
                if deleted is None:
                    continue  # referenced or uploaded again meanwhile
                freed = 0
                if not await self._recorded(deleted.blob):  # shared content stays
                    name = names.artifact_name(deleted.tenant, deleted.id)
                    if await self._attempt(f"the bytes of {name}", self._remove(deleted.blob)):
                        freed = deleted.blob.size
                self.report.inputs.add(freed)

    async def _would_free(self, blob: Blob, counted: set[str]) -> int:
        """The bytes deleting a stale input would free: none while an artifact that stays
        records them too, nor where a stale input counted before shares them (the real run
        frees bytes several stale inputs share once, as it deletes the last of them)."""
        keys = {blob.uri, blob.sha256} if self.blobs.shares_content else {blob.uri}
        if not counted.isdisjoint(keys):
            return 0
        counted.update(keys)
        return 0 if await self._recorded(blob, self.cutoff) else blob.size

    def _remove(self, blob: Blob) -> Awaitable[bool]:
        return self.blobs.remove_blob(blob, written_before_us=self.cutoff)

    async def telemetry(self, ended_before_us: int) -> None:
        after: EndedRun | None = None
        while page := await self.store.retention.runs_keeping_telemetry(
            ended_before_us, after=after
        ):
            after = page[-1]
            for run in page:
                dropped = await self.store.retention.drop_telemetry(
                    run.id, ended_before_us, dry_run=self.dry_run
                )
                if dropped is not None and dropped.events:
                    self.report.telemetry.add(dropped.bytes)
                    self.report.telemetry_events += dropped.events

    async def sweep(
        self,
        kind: str,
        listing: AsyncIterator[Stored],
        handle: Callable[[list[Stored]], Awaitable[None]],
    ) -> None:
        """Hands what `listing` shows, written before the cutoff, to `handle` a page at a
        time. A listing that fails is reported (what it listed until then is handled); the
        sweep of the other kinds goes on."""
        page: list[Stored] = []
        items = aiter(listing)
        while True:
            try:
                item = await anext(items)
            except StopAsyncIteration:
                break
            except Exception as e:
                log.warning("gc: listing every %s of the artifact store: %s", kind, e)
                self.report.errors.append(f"listing every {kind} of the artifact store: {e}")
                break
            if item.modified_us < self.cutoff:
                page.append(item)
            if len(page) == PAGE:
                await handle(page)
                page = []
        if page:
            await handle(page)

    async def orphan_blobs(self, page: list[Stored]) -> None:
        recorded = await self.store.retention.recorded(
            [s.key for s in page], [s.sha256 for s in page if s.sha256]
        )
        for s in page:
            if s.key in recorded or (s.sha256 and s.sha256 in recorded):
                continue
            blob = Blob(s.key, s.sha256, s.size)
            if self.dry_run or await self._attempt(f"blob {s.key}", self._remove(blob)):
                self.report.orphan_blobs.add(s.size)

    async def stray_partials(self, page: list[Stored]) -> None:
        """Pieces of resumable uploads that have no record (any more)."""
        present = await self.store.retention.uploads_present([s.key for s in page])
        for s in page:
            if s.key in present:
                continue
            if self.dry_run or await self._attempt(
                f"upload {s.key}", self.blobs.drop_partial(s.key)
            ):
                self.report.uploads.add(s.size)

    async def unfinished_writes(self, page: list[Stored]) -> None:
        for s in page:
            if self.dry_run or await self._attempt(
                f"unfinished write {s.key}", self.blobs.drop_unfinished(s.key)
            ):
                self.report.unfinished_writes.add(s.size)
