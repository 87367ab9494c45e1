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
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flnet.control.database import create_engine, migrate

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
TEMPLATE = "flnet_template"
SUPERUSER = "postgres"
_PREFIX = "flnet-pg-"  # the clusters' directories, in the temporary directory

# Test-only settings: no TCP port, no durability, room for many control planes at once (each
# engine pools up to 20 connections).
_CONF = """
listen_addresses = ''
unix_socket_directories = '{sockets}'
port = 5432
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
"""


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


def _bindir() -> Path | None:
    """Where initdb, pg_ctl and psql are, or None when PostgreSQL is not installed."""
    if configured := os.environ.get("FLNET_PG_BIN"):
        candidates = [Path(configured)]
    else:
        versions = Path("/usr/lib/postgresql")
        numbered = [p for p in versions.iterdir() if p.name.isdigit()] if versions.is_dir() else []
        candidates = [p / "bin" for p in sorted(numbered, key=lambda p: int(p.name), reverse=True)]
        if found := shutil.which("pg_ctl"):
            candidates.append(Path(found).resolve().parent)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "psql")):
            return bindir
    return None


class Cluster:
    """A private PostgreSQL cluster in `root` (data directory and unix socket). Test databases
    are created ahead of the tests that take them and dropped behind them, by one worker
    thread: a test waits for neither."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.log = root / "postgresql.log"
        # initdb and postgres refuse to run as root: they run as the `postgres` user then.
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", SUPERUSER, "--"]
            entry = pwd.getpwnam(SUPERUSER)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        root.chmod(0o755)
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="flnet-pg")
        self._ready: list[concurrent.futures.Future[str]] = []
        self._strategy = ""

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@/{database}?host={self.root}"

    def _run(self, *args: str | Path, as_owner: bool = False) -> str:
        command = [*(self._as if as_owner else []), *map(str, args)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
            )
        return done.stdout

    def start(self) -> None:
        self._run(
            self.bindir / "initdb",
            "-D",
            self.data,
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
            as_owner=True,
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(_CONF.format(sockets=self.root))
        try:
            self._run(
                self.bindir / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60",
                "start", as_owner=True,
            )  # fmt: skip
        except RuntimeError as e:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{e}\n{log[-2000:]}") from None
        # Copying a small template file by file is faster than through the WAL (15's default).
        if int(self.sql("SHOW server_version_num")) >= 150000:
            self._strategy = " STRATEGY = FILE_COPY"

    def stop(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)
        self._run(self.bindir / "pg_ctl", "-D", self.data, "-m", "immediate", "stop", as_owner=True)

    def sql(self, statement: str) -> str:
        """Runs one statement as the superuser (psql, in the `postgres` database)."""
        return self._run(
            self.bindir / "psql", "-h", self.root, "-U", SUPERUSER, "-d", "postgres",
            "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", statement,
        )  # fmt: skip

    def create_database(self, name: str, template: str = "template0") -> str:
        self.sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{self._strategy}')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _new_database(self, template: str) -> str:
        name = f"test_{uuid.uuid4().hex[:16]}"
        self.create_database(name, template)
        return name

    def take(self, *, migrated: bool = True) -> str:
        """The name of a new database: a copy of the migrated template (made ahead of time,
        while the previous test ran), or empty."""
        if not migrated:
            return self._worker.submit(self._new_database, "template0").result()
        if not self._ready:
            self._ready.append(self._worker.submit(self._new_database, TEMPLATE))
        taken = self._ready.pop(0)
        self._ready.append(self._worker.submit(self._new_database, TEMPLATE))
        return taken.result()

    def give_back(self, name: str) -> None:
        """Drops a database taken (in the background)."""
        self._worker.submit(self.drop_database, name)


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
    bindir = _bindir()
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
