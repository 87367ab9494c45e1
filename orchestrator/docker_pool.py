"""The docker backend's warm pool: containers started ahead of their runs, one per recently
launched shape of run (image, entrypoint, limits, environment), whose engine has imported
everything and waits for its run (flnet.runtime.standby). A launch of that shape takes the
waiting container instead of creating one; another is started for the next launch.

Isolation is a cold container's: the same profile, limits and mounts (docker_container.py),
a file system and work dir of its own, and exactly one run: the container ends with its run
and is removed like any other. What a run brings is handed over at assignment: its
credential, written into the file the container already mounts (in place: a bind-mounted
file is its inode), then its name through the FIFO the engine reads.

A standby container's work dir is ``runs/pool-<id>/``: a run's work dir (workdir.py) plus
``assignment`` (the FIFO, mounted at /run/flnet-assignment) and, once assigned, ``assigned``
(the run and its deadline), written before the engine learns its run. Its labels name no
run (flnet.pool instead): after a restart `assigned` says whose it is; a standby never
assigned is removed. The methods that touch files block: call them through
``asyncio.to_thread``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from .backend import LaunchSpec, RunName
from .errors import InvalidArgument
from .workdir import WorkDir, write_private

FIFO_FILE = "assignment"
ASSIGNED_FILE = "assigned"
POOL_PREFIX = "pool-"
#: Shapes not launched for this long lose their standby container.
DEFAULT_IDLE_SECONDS = 600.0
#: How long a launch waits for a standby that is still starting (its imports take about a
#: tenth of a second) before starting a container of its own instead.
HAND_OVER_WAIT = 0.5
_POLL = 0.005


def shape_of(spec: LaunchSpec, image: str, socket: Path) -> str:
    """What a standby container must share with the run that takes it: everything its
    create body holds but the run's name, deadline and work dir."""
    shape = {
        "image": image,
        "entrypoint": spec.entrypoint,
        "limits": asdict(spec.limits),
        "environment": sorted(spec.environment.items()),
        "socket": str(socket),
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def pool_workdir(runs_dir: Path) -> WorkDir:
    return WorkDir(runs_dir / f"{POOL_PREFIX}{uuid.uuid4().hex[:16]}")


def is_pool_dir(path: Path) -> bool:
    return path.name.startswith(POOL_PREFIX)


def pool_dirs(runs_dir: Path, claimed: set[Path]) -> list[WorkDir]:
    """The standby work dirs in `runs_dir` no container claimed (after a restart)."""
    try:
        children = list(runs_dir.iterdir())
    except FileNotFoundError:
        return []
    return [WorkDir(p) for p in children if is_pool_dir(p) and p.is_dir() and p not in claimed]


def standby_name(workdir: WorkDir) -> str:
    """Unique, and telling whose data dir it belongs to (as container_name)."""
    owner = hashlib.sha256(str(workdir.path.parent).encode()).hexdigest()[:8]
    return f"flnet-{workdir.path.name}-{owner}"


def fifo_of(workdir: WorkDir) -> Path:
    return workdir.path / FIFO_FILE


def prepare(workdir: WorkDir, owner: tuple[int, int]) -> None:
    """A standby's work dir: a run's, with an empty credential, and the FIFO its engine
    reads (the engine's user's, 0400: it only reads)."""
    workdir.prepare("", owner)
    fifo = fifo_of(workdir)
    os.mkfifo(fifo, 0o400)
    os.chown(fifo, *owner)


def hand_over(
    workdir: WorkDir, run: RunName, credential: str, deadline: datetime | None, wait: float = 0.0
) -> bool:
    """Gives the engine waiting in `workdir`'s container its run, waiting up to `wait`
    seconds for it to wait (a standby just started is still importing). False, with nothing
    written, when no engine reads the FIFO by then (still starting, or gone)."""
    pipe = _open_writer(workdir, wait)
    if pipe is None:
        return False
    try:
        fd = os.open(workdir.credential, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, credential.encode())
        finally:
            os.close(fd)
        record = {"run": str(run), "deadline": deadline.isoformat() if deadline else None}
        write_private(workdir.path / ASSIGNED_FILE, json.dumps(record))
        os.write(pipe, json.dumps({"FLNET_RUN": str(run)}).encode())
    finally:
        os.close(pipe)
    return True


def _open_writer(workdir: WorkDir, wait: float) -> int | None:
    """The FIFO opened for writing, once its engine reads it; None if none does by `wait`."""
    until = time.monotonic() + wait
    while True:
        try:
            return os.open(fifo_of(workdir), os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader (yet)
                raise
        if time.monotonic() >= until:
            return None
        time.sleep(_POLL)


def resend(workdir: WorkDir, run: RunName) -> bool:
    """After a restart: the assignment again, to an engine still waiting for it (the
    orchestrator died between recording and sending it); False when none waits."""
    try:
        pipe = _open_writer(workdir, 0.0)
    except OSError:
        return False
    if pipe is None:
        return False
    try:
        os.write(pipe, json.dumps({"FLNET_RUN": str(run)}).encode())
    finally:
        os.close(pipe)
    return True


def assigned(workdir: WorkDir) -> tuple[RunName, str | None] | None:
    """The run a standby's work dir was assigned, with its deadline (ISO 8601), if any."""
    try:
        record = json.loads((workdir.path / ASSIGNED_FILE).read_text())
        return RunName.parse(record["run"]), record.get("deadline")
    except (OSError, ValueError, KeyError, TypeError, InvalidArgument):
        return None


@dataclass(frozen=True)
class Standby:
    shape: str
    container_id: str
    workdir: WorkDir


class WarmPool:
    """Which standby containers wait, for which shapes: one per shape, at most `size`, the
    least recently launched shape's making room. Bookkeeping only (the backend starts and
    removes containers)."""

    def __init__(self, size: int, idle_seconds: float = DEFAULT_IDLE_SECONDS) -> None:
        self.size = size
        self.idle_seconds = idle_seconds
        self._waiting: OrderedDict[str, Standby] = OrderedDict()
        self._filling: set[str] = set()
        self._used: dict[str, float] = {}

    def take(self, shape: str) -> Standby | None:
        """The standby of `shape`, no longer the pool's; the shape counts as just used."""
        self._used[shape] = time.monotonic()
        return self._waiting.pop(shape, None)

    def wants(self, shape: str) -> bool:
        """Whether a standby of `shape` should be started (none waits or is starting)."""
        return self.size > 0 and shape not in self._waiting and shape not in self._filling

    def filling(self, shape: str) -> None:
        self._filling.add(shape)

    def add(self, standby: Standby) -> list[Standby]:
        """Adds a started standby; returns those to remove to stay within `size`."""
        self._filling.discard(standby.shape)
        self._waiting[standby.shape] = standby
        evicted = []
        while len(self._waiting) > self.size:
            oldest = min(self._waiting, key=lambda s: self._used.get(s, 0.0))
            evicted.append(self._waiting.pop(oldest))
        return evicted

    def failed(self, shape: str) -> None:
        self._filling.discard(shape)

    def expired(self) -> list[Standby]:
        """Standbys of shapes unused for `idle_seconds`, no longer the pool's."""
        now = time.monotonic()
        stale = [s for s, t in self._used.items() if now - t > self.idle_seconds]
        out = [self._waiting.pop(s) for s in stale if s in self._waiting]
        for s in stale:
            del self._used[s]
        return out

    def drain(self) -> list[Standby]:
        """Every waiting standby, no longer the pool's."""
        out = list(self._waiting.values())
        self._waiting.clear()
        return out

    def __len__(self) -> int:
        return len(self._waiting)
