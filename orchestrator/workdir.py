"""A run's work dir on the orchestrator's host, ``<data-dir>/orchestrator/runs/<tenant>_<run>/``:
``input/``, ``output/`` and ``credential`` (mode 0400), which every backend hands to the
engine, ``tool/`` (the process backend: the run's own copy of its tool's source), plus two
small records the docker backend reads back after a restart (a container outlives the
orchestrator process that started it):

- ``stop-cause``: why the orchestrator ended the run (StopRun, deadline), written before it
  signals the engine, so that a container that ended while no orchestrator watched is still
  classified as stopped rather than signaled;
- ``exit-reported``: the run's EXITED event was published; written after publishing, so a
  crash in between reports the exit twice (terminal duplicates are harmless), never not.

Folders are 0700 and records 0600 (flnet.datadir), the work dir's parents included; input/,
output/ and the credential belong to the engine's user where it is not the orchestrator's.

The methods block (file system): call them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from flnet.datadir import open_private, private_dir

from .backend import ExitCause, RunName
from .errors import InvalidArgument
from .mounts import detach_all_under

CREDENTIAL_FILE = "credential"
STOP_CAUSE_FILE = "stop-cause"
REPORTED_FILE = "exit-reported"
# Tenant ids hold no "_" (see RunName): the first "_" separates tenant and run.
_DIR_NAME = re.compile(r"(?P<tenant>[^_]+)_(?P<run>.+)")


def runs_dir(data_dir: str | os.PathLike[str]) -> Path:
    """Parent of the per-run work dirs of the orchestrator using `data_dir`."""
    return Path(data_dir).resolve() / "orchestrator" / "runs"


@dataclass(frozen=True)
class WorkDir:
    """The work dir of one run (it need not exist)."""

    path: Path

    @classmethod
    def of(cls, runs: Path, run: RunName) -> WorkDir:
        return cls(runs / f"{run.tenant}_{run.run_id}")

    def run(self) -> RunName | None:
        """The run this directory belongs to, from its name; None for a foreign name."""
        match = _DIR_NAME.fullmatch(self.path.name)
        if match is None:
            return None
        try:
            return RunName.parse(f"tenants/{match['tenant']}/runs/{match['run']}")
        except InvalidArgument:
            return None

    @property
    def input(self) -> Path:
        return self.path / "input"

    @property
    def output(self) -> Path:
        return self.path / "output"

    @property
    def credential(self) -> Path:
        return self.path / CREDENTIAL_FILE

    @property
    def tool(self) -> Path:
        return self.path / "tool"

    def copy_tool(self, source: Path) -> Path:
        """The run's own copy of `source` (what one run does to its files, no other sees)."""
        shutil.copytree(source, self.tool, symlinks=False)
        return self.tool

    def exists(self) -> bool:
        return self.path.is_dir()

    def prepare(self, credential: str, owner: tuple[int, int] | None = None) -> None:
        """Creates the work dir afresh (a leftover of an earlier orchestrator process is
        removed first). `owner` (uid, gid) gets input/, output/ and the credential: the
        engine's user when it is not the orchestrator's (containers)."""
        if self.path.exists():
            shutil.rmtree(self.path)
        private_dir(self.path.parent)  # the data dir's folders: 0700, like the work dir
        self.path.mkdir(mode=0o700)
        self.input.mkdir(mode=0o700)
        self.output.mkdir(mode=0o700)
        fd = os.open(self.credential, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        try:
            os.fchmod(fd, 0o400)  # whatever the umask
            os.write(fd, credential.encode())
            if owner is not None:
                os.fchown(fd, *owner)
        finally:
            os.close(fd)
        if owner is not None:
            os.chown(self.input, *owner)
            os.chown(self.output, *owner)

    def remove(self) -> None:
        """Removes the work dir and everything in it. What is mounted in it (the docker
        backend's per-run file system) is detached first: removing through a mount would
        leave its mount point busy, and the work dir with it."""
        with contextlib.suppress(OSError):
            detach_all_under(self.path)
        shutil.rmtree(self.path, ignore_errors=True)

    def record_stop_cause(self, cause: ExitCause) -> None:
        # The run may have ended and its work dir gone meanwhile: nothing to record then.
        with contextlib.suppress(OSError):
            write_private(self.path / STOP_CAUSE_FILE, cause.name)

    def stop_cause(self) -> ExitCause | None:
        try:
            return ExitCause[(self.path / STOP_CAUSE_FILE).read_text().strip()]
        except (OSError, KeyError):
            return None

    def mark_reported(self) -> None:
        with contextlib.suppress(OSError):
            write_private(self.path / REPORTED_FILE, "")

    def reported(self) -> bool:
        return (self.path / REPORTED_FILE).exists()


def write_private(path: Path, text: str) -> None:
    """Writes a record of the work dir (0600, whatever the umask)."""
    fd = open_private(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
