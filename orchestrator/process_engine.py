"""How the process backend finds again an engine it started before a restart. An engine
runs in a session of its own, so it outlives an orchestrator process that dies: its work dir
keeps ``engine.json`` (pid, the kernel's start time of that pid, start time and deadline),
written right after the spawn. With the pid and its start time a process is named for the
machine's uptime (pids are reused, start times with them are not), and a live one is
watched through a pidfd, which reports its end though it is no longer our child. Its exit
status is lost with its parent: only the parent can wait for it.

The functions block (file system): call them through ``asyncio.to_thread``, except
`wait_for_exit`, a coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .workdir import WorkDir

ENGINE_FILE = "engine.json"
# /proc/<pid>/stat after the command's ")": state is field 3, starttime field 22.
_STATE, _START_TICKS = 0, 19
_DEAD = frozenset({"Z", "X"})


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a process; None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[_STATE], int(fields[_START_TICKS])


def start_ticks(pid: int) -> int:
    """The kernel's start time of process `pid` (0 when it is gone already)."""
    found = _stat(pid)
    return found[1] if found else 0


@dataclass(frozen=True)
class EngineRecord:
    """What the work dir keeps of its engine process."""

    pid: int
    start_ticks: int
    start_time: datetime
    deadline: datetime | None

    def write(self, workdir: WorkDir) -> None:
        data = {
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "start_time": self.start_time.isoformat(),
            "deadline": self.deadline.isoformat() if self.deadline else None,
        }
        temporary = workdir.path / f".{ENGINE_FILE}"
        temporary.write_text(json.dumps(data))
        temporary.replace(workdir.path / ENGINE_FILE)  # whole or absent, never half

    @classmethod
    def read(cls, workdir: WorkDir) -> EngineRecord | None:
        """The record; None when there is none (the engine never started) or it is
        unreadable."""
        try:
            data: dict[str, Any] = json.loads((workdir.path / ENGINE_FILE).read_text())
            deadline = data["deadline"]
            return cls(
                pid=int(data["pid"]),
                start_ticks=int(data["start_ticks"]),
                start_time=datetime.fromisoformat(data["start_time"]),
                deadline=datetime.fromisoformat(deadline) if deadline else None,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def alive(self) -> bool:
        """The recorded process still runs (not a zombie, and not another one with its pid)."""
        found = _stat(self.pid)
        return found is not None and found[0] not in _DEAD and found[1] == self.start_ticks


async def wait_for_exit(record: EngineRecord) -> None:
    """Returns once the recorded process has ended (at once when it is gone)."""
    try:
        pidfd = os.pidfd_open(record.pid)
    except ProcessLookupError:
        return
    try:
        # Opened before the check: if the pid names our process now, the pidfd does too.
        if not await asyncio.to_thread(record.alive):
            return
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def readable() -> None:  # the process has ended
            if not ended.done():
                ended.set_result(None)

        loop.add_reader(pidfd, readable)
        try:
            await ended
        finally:
            loop.remove_reader(pidfd)
    finally:
        with contextlib.suppress(OSError):
            os.close(pidfd)
