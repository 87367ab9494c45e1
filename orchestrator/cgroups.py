"""Per-run cgroups of the process backend: what bounds a run's resident memory and its
number of processes and threads, and what tells afterwards that it hit either limit.

A run's cgroup is ``<own>/flnet-<key>/<tenant>_<run>`` in each hierarchy used, where
``<own>`` is the orchestrator's own cgroup (so that whatever accounts for the orchestrator
also accounts for its runs) and ``<key>`` is derived from the work dirs' parent (so that
orchestrators with different data dirs never share one). The engine joins it itself, in
the limits exec wrapper, before it execs the engine: everything the engine starts is in it.

- cgroup v1 (a ``memory`` hierarchy, and a ``pids`` one when mounted): memory.limit_in_bytes
  and memory.memsw.limit_in_bytes (no swap beyond it, when swap is accounted), pids.max;
  afterwards the ``oom_kill`` count of memory.oom_control and the ``max`` count of
  pids.events (fork or clone refused by pids.max).
- cgroup v2 (one unified hierarchy with the memory and pids controllers): memory.max,
  memory.swap.max 0, pids.max; afterwards ``oom_kill`` of memory.events and ``max`` of
  pids.events. The controllers must be enabled in the parent's cgroup.subtree_control, which
  the kernel refuses while the orchestrator's own cgroup holds processes (the "no internal
  processes" rule) unless it is the root: a delegated, empty parent is needed.

Unavailable (no such hierarchy, not root, a refused write): `detect` returns None with the
reason, and the process backend falls back to rlimits (limits.py).

The docker backend reads a container's pids.events the same way (`pids_dir_of`, from the
container's init process). Blocking file I/O: call through ``asyncio.to_thread`` from the
event loop.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import signal
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .backend import RunName

log = logging.getLogger(__name__)

MEMORY = "memory"
PIDS = "pids"
_PROCS = "cgroup.procs"
# Ending what a run left: rounds of SIGKILL to every member (a fork bomb adds members
# between two reads; its pids limit bounds how many), then waits for the cgroup to empty.
_KILL_ROUNDS = 200
_EMPTY_WAIT = 5.0


@dataclass(frozen=True)
class Counters:
    """What the kernel counted in a run's cgroup."""

    # Processes the OOM killer killed (the memory limit was reached).
    oom_kills: int = 0
    # Forks or clones refused by pids.max (the pids limit was reached).
    pids_max_events: int = 0


@dataclass(frozen=True)
class RunCgroup:
    """The cgroup of one run: a directory per hierarchy (v1: memory, then pids when
    mounted; v2: one). It need not exist."""

    version: int
    dirs: Mapping[str, Path]

    @property
    def join_dirs(self) -> tuple[Path, ...]:
        """The directories the engine joins (writes its pid to their cgroup.procs)."""
        return tuple(dict.fromkeys(self.dirs.values()))

    def create(self, *, memory_bytes: int, pids: int) -> None:
        """Creates the cgroup afresh (a leftover is ended and removed first) with the limits
        (0: none). Raises OSError when the kernel refuses."""
        if self.exists():
            self.end()
        for path in self.join_dirs:
            path.mkdir()
        try:
            if memory_bytes > 0:
                self._limit_memory(memory_bytes)
            if pids > 0 and PIDS in self.dirs:
                _write(self.dirs[PIDS] / "pids.max", str(pids))
        except OSError:
            self.remove()
            raise

    def _limit_memory(self, memory_bytes: int) -> None:
        memory = self.dirs[MEMORY]
        if self.version == 1:
            _write(memory / "memory.limit_in_bytes", str(memory_bytes))
            # Memory plus swap: the same, so that nothing is swapped out instead of killed.
            # Absent when the kernel does not account swap.
            if (memory / "memory.memsw.limit_in_bytes").exists():
                _write(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
        else:
            _write(memory / "memory.max", str(memory_bytes))
            if (memory / "memory.swap.max").exists():
                _write(memory / "memory.swap.max", "0")

    def exists(self) -> bool:
        return any(path.is_dir() for path in self.join_dirs)

    def members(self) -> list[int]:
        """Pids of the processes in the cgroup (empty when it does not exist)."""
        found: set[int] = set()
        for path in self.join_dirs:
            with contextlib.suppress(OSError):
                found.update(int(line) for line in (path / _PROCS).read_text().split())
        return sorted(found)

    def counters(self) -> Counters:
        """The OOM kills and refused forks so far (0 when unknown)."""
        if self.version == 1:
            oom = _field(self.dirs.get(MEMORY), "memory.oom_control", "oom_kill")
        else:
            oom = _field(self.dirs.get(MEMORY), "memory.events", "oom_kill")
        pids = self.dirs.get(PIDS)
        return Counters(oom_kills=oom, pids_max_events=pids_max_events(pids) if pids else 0)

    def kill(self) -> None:
        """SIGKILLs every process in the cgroup and waits (bounded) until it is empty."""
        kill_file = next(iter(self.join_dirs)) / "cgroup.kill"  # v2, Linux 5.14+
        if self.version == 2 and kill_file.exists():
            with contextlib.suppress(OSError):
                _write(kill_file, "1")
        for _ in range(_KILL_ROUNDS):
            members = self.members()
            if not members:
                return
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        log.warning("processes still in %s after %d rounds of SIGKILL", self, _KILL_ROUNDS)

    def remove(self) -> None:
        """Removes the (empty) cgroup; one still busy after a few seconds stays (logged)."""
        deadline = time.monotonic() + _EMPTY_WAIT
        for path in self.join_dirs:
            while True:
                try:
                    path.rmdir()
                except FileNotFoundError:
                    break
                except OSError as exc:
                    # EBUSY: exiting members are still being released.
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        log.warning("cannot remove cgroup %s: %s", path, exc)
                        break
                    time.sleep(0.02)
                else:
                    break

    def end(self) -> Counters:
        """Kills what is left in the cgroup, removes it, and returns its counters."""
        counters = self.counters()
        self.kill()
        self.remove()
        return counters


@dataclass(frozen=True)
class Cgroups:
    """Where the run cgroups of one orchestrator (one work-dir parent) live."""

    version: int
    # Controller → the parent directory ``<own>/flnet-<key>`` of the run cgroups.
    parents: Mapping[str, Path]

    def of(self, run: RunName) -> RunCgroup:
        name = f"{run.tenant}_{run.run_id}"
        return RunCgroup(self.version, {c: parent / name for c, parent in self.parents.items()})

    def leftovers(self) -> list[tuple[str, RunCgroup]]:
        """Run cgroups present now, by directory name (those of an earlier process)."""
        names: set[str] = set()
        for parent in self.parents.values():
            with contextlib.suppress(OSError):
                names.update(child.name for child in parent.iterdir() if child.is_dir())
        return [
            (name, RunCgroup(self.version, {c: p / name for c, p in self.parents.items()}))
            for name in sorted(names)
        ]

    def close(self) -> None:
        """Removes the parents when no run cgroup is left in them."""
        for parent in dict.fromkeys(self.parents.values()):
            with contextlib.suppress(OSError):
                parent.rmdir()


def detect(runs_dir: Path) -> tuple[Cgroups | None, str]:
    """The run cgroups of the orchestrator whose work dirs are under `runs_dir`, ready to
    use (parents created); else None and why not."""
    key = "flnet-" + hashlib.sha256(str(runs_dir).encode()).hexdigest()[:12]
    try:
        mounts = list(_cgroup_mounts(Path("/proc/self/mountinfo").read_text()))
        own = _own_cgroups(Path("/proc/self/cgroup").read_text())
    except OSError as exc:
        return None, f"cannot read the process's cgroups: {exc}"
    v1 = {c: _inside(mount, root, own[c]) for fs, mount, root, c in mounts if fs == 1 and c in own}
    if v1.get(MEMORY) is not None:
        parents = {c: path / key for c, path in v1.items() if path is not None}
        return _prepared(Cgroups(1, parents))
    for fs, mount, root, _ in mounts:
        if fs != 2 or "" not in own:
            continue
        path = _inside(mount, root, own[""])
        if path is None:
            continue
        try:
            available = (path / "cgroup.controllers").read_text().split()
        except OSError as exc:
            return None, f"cannot read {path / 'cgroup.controllers'}: {exc}"
        missing = {MEMORY, PIDS} - set(available)
        if missing:
            return None, f"cgroup v2 without the {', '.join(sorted(missing))} controller"
        try:
            _write(path / "cgroup.subtree_control", "+memory +pids")
        except OSError as exc:
            return None, f"cannot enable memory and pids below {path}: {exc}"
        return _prepared(Cgroups(2, {MEMORY: path / key, PIDS: path / key}))
    return None, "no cgroup v1 memory hierarchy or cgroup v2 with memory and pids mounted"


def _prepared(cgroups: Cgroups) -> tuple[Cgroups | None, str]:
    try:
        for parent in dict.fromkeys(cgroups.parents.values()):
            parent.mkdir(exist_ok=True)
            if cgroups.version == 2:
                _write(parent / "cgroup.subtree_control", "+memory +pids")
    except OSError as exc:
        return None, f"cannot create {parent}: {exc.strerror or exc}"
    return cgroups, ""


def _cgroup_mounts(mountinfo: str) -> Iterator[tuple[int, Path, PurePosixPath, str]]:
    """(version, mount point, root inside the hierarchy, controller) of each cgroup mount;
    v1 mounts once per controller they hold, v2 with controller ""."""
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        root, point = PurePosixPath(fields[3]), Path(fields[4])
        fstype, options = fields[sep + 1], fields[sep + 3].split(",")
        if fstype == "cgroup2":
            yield 2, point, root, ""
        elif fstype == "cgroup":
            for controller in (MEMORY, PIDS):
                if controller in options:
                    yield 1, point, root, controller


def _own_cgroups(text: str) -> dict[str, PurePosixPath]:
    """Controller (v2: "") → this process's cgroup path, from /proc/self/cgroup."""
    own: dict[str, PurePosixPath] = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = PurePosixPath(path)
    return own


def _inside(mount: Path, root: PurePosixPath, own: PurePosixPath) -> Path | None:
    """The directory of cgroup `own` under a hierarchy mounted at `mount` from `root`."""
    try:
        return mount / own.relative_to(root)
    except ValueError:
        return None  # our cgroup is outside what is mounted (another namespace's view)


def _write(path: Path, value: str) -> None:
    # One write(2) of the whole value: cgroup files take it or refuse it.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _field(directory: Path | None, name: str, key: str) -> int:
    """The value of `key` in a flat-keyed cgroup file ("key value" per line); 0 if absent."""
    if directory is None:
        return 0
    try:
        lines: Iterable[str] = (directory / name).read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    return 0


def pids_dir_of(pid: int) -> Path | None:
    """The directory of the pids cgroup process `pid` is in (a container's init: its
    container's), as this process sees the hierarchy; None when it cannot be found."""
    try:
        mounts = list(_cgroup_mounts(Path("/proc/self/mountinfo").read_text()))
        theirs = _own_cgroups(Path(f"/proc/{pid}/cgroup").read_text())
    except OSError:
        return None
    for version, mount, root, controller in mounts:
        key = PIDS if version == 1 else ""
        if (version == 1 and controller != PIDS) or key not in theirs:
            continue
        path = _inside(mount, root, theirs[key])
        if path is not None and (path / "pids.events").exists():
            return path
    return None


def pids_max_events(directory: Path) -> int:
    """Forks or clones the pids cgroup at `directory` refused so far (0: none, or gone)."""
    return _field(directory, "pids.events", "max")


def pids_full(directory: Path) -> bool:
    """The pids cgroup at `directory` holds as many processes and threads as pids.max
    allows (False without a limit, or when it is gone)."""
    try:
        limit = (directory / "pids.max").read_text().strip()
        current = int((directory / "pids.current").read_text())
    except (OSError, ValueError):
        return False
    return limit != "max" and current >= int(limit)
