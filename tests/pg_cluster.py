"""A private PostgreSQL cluster in a directory of its own, for the tests (tests/postgres.py)
and the benchmarks: `initdb` (as the `postgres` user when running as root, which initdb
refuses), trust authentication, a unix socket in that directory and no TCP listener. Nothing
of the machine's own clusters is used or needed."""

from __future__ import annotations

import concurrent.futures
import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path

TEMPLATE = "flnet_template"
SUPERUSER = "postgres"

# No TCP port, room for many control planes at once (each engine pools up to 20 connections).
_CONF = """
listen_addresses = ''
unix_socket_directories = '{sockets}'
port = 5432
max_connections = 300
"""
# A test database need not survive a crash of the machine; a benchmark keeps the defaults.
_NOT_DURABLE = """
fsync = off
synchronous_commit = off
full_page_writes = off
"""


def bindir() -> Path | None:
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
    thread: a test waits for neither. `durable=False` turns fsync and synchronous commit off.
    """

    def __init__(self, bindir: Path, root: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        self.root = root
        self.durable = durable
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
            conf.write("" if self.durable else _NOT_DURABLE)
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
