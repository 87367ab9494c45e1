"""Provenance store: every read and write of tools, runs, events and artifacts.

Each write is one transaction. A run's row is locked (FOR UPDATE on PostgreSQL; SQLite
writers are serialized by one lock) while its state or event sequence changes, so event
sequence numbers have no gaps (until gc drops the telemetry of a run that ended long ago)
and terminal states are never overwritten. After a commit that adds events, the feed
publishes them: watchers wake and read them from memory."""

from __future__ import annotations

from flnet.control.store.artifacts import ArtifactStore, Upload
from flnet.control.store.base import RunRow
from flnet.control.store.history import EventList
from flnet.control.store.retention import RetentionStore
from flnet.control.store.runs import BatchOutcome, RunFilter, RunStore


class Store(RunStore, ArtifactStore, RetentionStore):
    """Every read and write of the provenance database."""


__all__ = ["BatchOutcome", "EventList", "RunFilter", "RunRow", "Store", "Upload"]
