"""The tests' database: SQLite (default) or PostgreSQL, chosen for the whole session.

`--database postgresql` (or FLNET_TEST_DATABASE=postgresql) runs the suite against a private
PostgreSQL cluster that this module starts: `initdb` into a temporary directory (as the
`postgres` user when the tests run as root, which initdb refuses), trust authentication, a unix
socket in that directory and no TCP listener, durability off (a test database need not survive
a crash of the machine), stopped when the session ends. Nothing of the machine's own clusters is
used or needed. The cluster starts the first time a test asks for a database (tests that never
touch one run without it) and Alembic migrates one template database then; every data
directory of a test gets its own database, a copy of that template (CREATE DATABASE ...
TEMPLATE instead of a migration, made while the previous test ran), dropped after the test.

When PostgreSQL is selected but not installed, a test that needs it is skipped, or fails under
CI=true. The binaries are those in $FLNET_PG_BIN when it is set, else in
/usr/lib/postgresql/<newest>/bin or beside pg_ctl on PATH.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from flnet.control.database import create_engine, migrate
from tests import pg_cluster
from tests.pg_cluster import TEMPLATE, Cluster

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
_PREFIX = "flnet-pg-"  # the clusters' directories, in the temporary directory


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database",
        choices=(SQLITE, POSTGRESQL),
        default=os.environ.get("FLNET_TEST_DATABASE") or SQLITE,
        help="the control plane's database in tests: sqlite (default) or postgresql, a private "
        "cluster started for the session ($FLNET_TEST_DATABASE)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"database: {config.getoption('--database')}"


def _migrate_template(url: str) -> None:
    """Alembic on the template, on a loop of its own: the caller may be inside a test's loop."""

    async def upgrade() -> None:
        engine = create_engine(url)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, upgrade()).result()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(bindir: Path) -> None:
    """Stops and removes the clusters of test sessions that died without stopping theirs
    (killed: no teardown ran)."""
    for root in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        try:
            owner = int((root / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        cluster = Cluster(bindir, root)
        with contextlib.suppress(RuntimeError):
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """The session's PostgreSQL cluster, with the migrated template database."""
    bindir = pg_cluster.bindir()
    if bindir is None:
        message = "PostgreSQL is not installed (apt-get install -y postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"--database postgresql: {message}", pytrace=False)
        pytest.skip(message)
    _reap(bindir)
    root = Path(tempfile.mkdtemp(prefix=_PREFIX))
    (root / "owner.pid").write_text(str(os.getpid()))
    cluster = Cluster(bindir, root)
    try:
        cluster.start()
        try:
            _migrate_template(cluster.create_database(TEMPLATE))
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


class Databases:
    """The databases of one test, one per data directory, created on first use."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.request = request
        self.backend: str = request.config.getoption("--database")
        self._created: dict[tuple[Path, bool], str] = {}
        self._cluster: Cluster | None = None

    def url(self, data_dir: Path, *, migrated: bool = True) -> str:
        if self.backend == SQLITE:
            return f"sqlite+aiosqlite:///{data_dir / 'flnet.db'}"
        if self._cluster is None:
            self._cluster = self.request.getfixturevalue("postgres")
        key = (data_dir.resolve(), migrated)
        if key not in self._created:
            self._created[key] = self._cluster.take(migrated=migrated)
        return self._cluster.url(self._created[key])

    def drop(self) -> None:
        if self._cluster is not None:
            for name in self._created.values():
                self._cluster.give_back(name)


_current: Databases | None = None


@pytest.fixture(autouse=True)
def databases(request: pytest.FixtureRequest) -> Iterator[Databases]:
    """This test's databases (see `database_url`), dropped after it."""
    global _current  # noqa: PLW0603
    _current = current = Databases(request)
    try:
        yield current
    finally:
        _current = None
        current.drop()


def backend() -> str:
    """The session's database: "sqlite" or "postgresql"."""
    if _current is None:
        raise RuntimeError("the test database is chosen per test: call this inside a test")
    return _current.backend


def database_url(data_dir: Path, *, migrated: bool = True) -> str:
    """The database URL of a control plane whose data lives in `data_dir`, in this test:
    SQLite in that directory (a new file is empty), or a PostgreSQL database of this test, the
    same one for the same directory: a copy of the migrated template, or empty with
    `migrated=False`. Either way `migrate` makes it current."""
    if _current is None:
        raise RuntimeError("the test database is chosen per test: call this inside a test")
    return _current.url(data_dir, migrated=migrated)
