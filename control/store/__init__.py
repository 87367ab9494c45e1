"""Provenance store: every read and write of tools, runs, events and artifacts.

Each write is one transaction. A run's row is locked (FOR UPDATE on PostgreSQL; SQLite
writers are serialized by one lock) while its state or event sequence changes, so event
sequence numbers have no gaps (until gc drops the telemetry of a run that ended long ago)
and terminal states are never overwritten. After a commit that adds events, the feed
publishes them: watchers wake and read them from memory.

The store records; it does not decide. Which state change a proposal becomes is
control.verdicts', called inside the transaction that holds the run's row."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from flnet.control.news import RunFeed
from flnet.control.store.artifacts import ArtifactStore, Upload
from flnet.control.store.base import Database, RunRow
from flnet.control.store.fleet import FleetStore
from flnet.control.store.history import EventList, HistoryStore
from flnet.control.store.retention import RetentionStore
from flnet.control.store.runs import BatchOutcome, RunFilter, RunStore
from flnet.control.store.tools import ToolStore


class Store:
    """The provenance database, one part per kind of record, over one connection."""

    def __init__(self, engine: AsyncEngine, feed: RunFeed) -> None:
        self.db = Database(engine, feed)
        self.feed = feed
        self.tools = ToolStore(self.db)
        self.runs = RunStore(self.db, self.tools)
        self.history = HistoryStore(self.db)
        self.artifacts = ArtifactStore(self.db)
        self.retention = RetentionStore(self.db)
        self.fleet = FleetStore(self.db)


__all__ = ["BatchOutcome", "EventList", "RunFilter", "RunRow", "Store", "Upload"]
