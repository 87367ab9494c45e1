"""Database engine creation and in-process Alembic migrations.

Two databases, chosen by URL alone: SQLite (`sqlite+aiosqlite:///<path>`, the default, one
control plane) and PostgreSQL (`postgresql+asyncpg://...`, several replicas). The store and the
audit log issue the same statements on both; what differs is how concurrent writers are kept
apart. SQLite allows one writer at a time and fails a transaction that read before another
committed ("database is locked") instead of waiting: every writer in this process holds one
lock (`write_lock`) around its transaction. PostgreSQL runs writers at once under READ
COMMITTED; a run's row is locked (SELECT ... FOR UPDATE) while its state or history changes,
and unique constraints decide the races between creators (a request_id, a tool version, an
input's content).
"""

from __future__ import annotations

import asyncio
import os
import stat
import weakref
from pathlib import Path
from typing import Any

import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, event, make_url, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from flnet.datadir import PRIVATE_FILE, open_private, private_dir

MIGRATIONS = Path(__file__).parent / "migrations"
# The key of the PostgreSQL advisory lock that control planes starting at once take around
# their migration: one migrates, the others wait and find the schema current.
MIGRATION_LOCK_KEY = int.from_bytes(b"flnet-db", "big")
# What SQLite keeps next to a database: its write-ahead log, shared memory, rollback journal.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def create_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL (readers never block the writer) and a busy timeout,
    and a file database a reader on the loop (`loop_reader`); PostgreSQL (asyncpg) a pool and
    the application name `flnet-control`."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        if _sqlite_file(engine.url) is not None:
            _readers[engine] = reader = _loop_reader_for(engine.url)
            event.listen(engine.sync_engine, "engine_disposed", lambda _: reader.dispose())

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # Committed transactions survive a process crash in WAL mode with NORMAL.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    connect_args: dict[str, Any] = {}
    if make_url(url).get_driver_name() == "asyncpg":
        connect_args["server_settings"] = {"application_name": "flnet-control"}
    return create_async_engine(
        url, pool_size=10, max_overflow=10, pool_pre_ping=True, connect_args=connect_args
    )


_readers: weakref.WeakKeyDictionary[AsyncEngine, Engine] = weakref.WeakKeyDictionary()


def loop_reader(engine: AsyncEngine) -> Engine | None:
    """A synchronous engine on the SQLite file `engine` writes, for reads made on the event
    loop's own thread; None for other databases. An indexed read of a local SQLite file takes
    tens of microseconds, an order of magnitude less than the async driver's hops to its
    thread and back (several per statement, about 0.3 ms): the store's reads, the bulk of
    every unary call, are made here. Its connections are read-only (query_only) and, in WAL
    mode, never wait for the writer."""
    return _readers.get(engine)


def _loop_reader_for(url: URL) -> Engine:
    reader = sqlalchemy.create_engine(
        url.set(drivername="sqlite"),
        connect_args={"timeout": 5},
        # Rows fetched whole at execute, as the async driver's are: a result outlives its
        # connection's return to the pool.
        execution_options={"prebuffer_rows": True},
    )

    @event.listens_for(reader, "connect")
    def _read_only(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA query_only=ON")

    return reader


_write_locks: weakref.WeakKeyDictionary[AsyncEngine, asyncio.Lock] = weakref.WeakKeyDictionary()


def write_lock(engine: AsyncEngine) -> asyncio.Lock | None:
    """The lock that serializes the write transactions of everything writing through `engine`
    (the store, the audit log), or None where the database keeps concurrent writers apart
    itself (PostgreSQL). SQLite allows one writer at a time, and a transaction that read before
    another one committed fails at its first write ("database is locked") instead of waiting:
    on SQLite every writer holds this lock around its transaction."""
    if engine.dialect.name != "sqlite":
        return None
    lock = _write_locks.get(engine)
    if lock is None:
        lock = _write_locks[engine] = asyncio.Lock()
    return lock


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrades the schema to `revision` (idempotent), in one transaction. On PostgreSQL,
    whose DDL is transactional, control planes starting at once take turns (an advisory lock):
    the first migrates, the next ones find nothing left to do."""

    def _upgrade(conn: Connection) -> None:
        command.upgrade(alembic_config(conn), revision)

    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        await conn.run_sync(_upgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema's revision (None: never migrated)."""

    def _current(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(_current)


def head_revision() -> str:
    """The newest revision this version of FLNet knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _engine_for(url: str) -> tuple[AsyncEngine, URL]:
    """An engine on `url`, and the URL parsed; ValueError when it names no database this
    FLNet can use (the password never appears in the message)."""
    try:
        parsed = make_url(url)
        return create_engine(url), parsed
    except (ArgumentError, NoSuchModuleError) as e:
        raise ValueError(f"not a database URL this FLNet can use: {e}") from None


def _sqlite_file(url: URL) -> Path | None:
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database)
    return None


def make_private(url: str) -> None:
    """Makes the SQLite database `url` names its user's only, before an engine opens it:
    created 0600 when missing (its folder, 0700, too), made 0600 when it is more open (made by
    an earlier version). SQLite gives its -wal and -shm files the database's mode; leftovers of
    those are tightened as well. Nothing to do for other databases."""
    path = _sqlite_file(make_url(url))
    if path is None:
        return
    private_dir(path.parent)
    os.close(open_private(path, os.O_RDONLY))
    for each in (path, *(path.with_name(path.name + end) for end in SQLITE_COMPANIONS)):
        try:
            st = each.stat()
        except FileNotFoundError:
            continue
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & ~PRIVATE_FILE:
            each.chmod(PRIVATE_FILE)


async def open_current(url: str) -> AsyncEngine:
    """An engine on the existing database at `url`, whose schema is this version's: what
    tools that work on a deployment's database directly (`flnet gc`) need. ValueError when
    the database is unreachable, missing, or at another revision (never created or upgraded
    here: that is `flnet db upgrade`'s decision)."""
    engine, parsed = _engine_for(url)
    shown = parsed.render_as_string(hide_password=True)
    try:
        path = _sqlite_file(parsed)
        if path is not None and not path.is_file():
            raise ValueError(f"no database at {shown}: create it with `flnet db upgrade`")
        try:
            current = await current_revision(engine)
        except (DBAPIError, OSError) as e:
            raise ValueError(f"cannot reach the database {shown}: {e}") from None
        if current != head_revision():
            raise ValueError(
                f"the database {shown} is at revision {current or 'none'}, this version of "
                f"FLNet needs {head_revision()}: run `flnet db upgrade` (and upgrade every "
                "control plane) first"
            )
    except BaseException:
        await engine.dispose()
        raise
    return engine


async def upgrade(url: str, revision: str = "head") -> str:
    """Upgrades the database at `url` to `revision` (default: the newest) and returns the
    revision it is at now: what `flnet db upgrade` runs before a deployment, so that control
    planes start on a current schema. A SQLite database's directory is created. ValueError
    when the URL names no usable database (the password never appears in it)."""
    engine, parsed = _engine_for(url)
    shown = parsed.render_as_string(hide_password=True)
    try:
        make_private(url)
        await migrate(engine, revision)
        current = await current_revision(engine)
    except (OperationalError, OSError) as e:
        raise ValueError(f"cannot reach the database {shown}: {e}") from None
    finally:
        await engine.dispose()
    if current is None:
        raise RuntimeError(f"{parsed.render_as_string()}: no revision after the upgrade")
    return current
