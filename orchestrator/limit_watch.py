"""What a backend watches while a run's engine runs, to name (and, for a fork bomb, end) a
run by the limit it reached; exits.py turns what it saw into the exit cause.

- pids: the ``max`` counter of the run's pids.events, forks and clones refused by pids.max.
  A run that stays at its limit (pids.current = pids.max) for `FORK_BOMB_SECONDS` while its
  forks keep being refused (at half the polls or more) is a fork bomb: nothing can start in
  it any more, its engine's threads included (the engine stops heartbeating, or aborts), so
  the backend ends it at once (SIGTERM, SIGKILL without grace) with the cause
  PIDS_LIMIT_EXCEEDED. A run that met the limit and stopped asking (a pool that stopped
  growing), or asks again now and then (a shell retrying a fork after a pause), is left
  alone. Docker removes a container's cgroup as soon as the container has ended, so the
  counters are polled while it runs, every `POLL_INTERVAL`.
- disk (docker backend): what the run wrote to its file system (docker_disk.py) against its
  limit, polled likewise and once more at the end (the file system outlives the container,
  and a tool may delete what it wrote once a write failed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import cgroups
from .docker_disk import RunDisk

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.25
#: How long a run at its pids limit must keep asking for more to be ended as a fork bomb.
FORK_BOMB_SECONDS = 2.0


@dataclass(eq=False)
class LimitWatch:
    """The limits one run has reached so far."""

    pids_dir: Path | None = None
    disk: RunDisk | None = None
    pids_limit_hit: bool = False
    disk_limit_hit: bool = False
    fork_bomb: bool = False
    _refused: int = field(default=0, init=False)
    # Since when the run has been at its limit (None: it is not), the polls since then, and
    # those of them that saw refusals.
    _full_since: float | None = field(default=None, init=False)
    _full_polls: int = field(default=0, init=False)
    _refusing_polls: int = field(default=0, init=False)

    async def run(self, on_fork_bomb: Callable[[], Awaitable[None]]) -> None:
        """Polls until cancelled; calls `on_fork_bomb` once when the run is one."""
        while True:
            await asyncio.to_thread(self.check)
            if self.fork_bomb:
                log.info("refused forks for %.1f s in %s: a fork bomb", FORK_BOMB_SECONDS,
                         self.pids_dir)  # fmt: skip
                await on_fork_bomb()
                return
            if self.pids_dir is None and (self.disk is None or self.disk_limit_hit):
                return  # nothing more to learn
            await asyncio.sleep(POLL_INTERVAL)

    def check(self) -> None:
        """Reads the counters once (blocking)."""
        if self.pids_dir is not None:
            self._check_pids(self.pids_dir)
        if self.disk is not None and not self.disk_limit_hit:
            usage = self.disk.usage()
            self.disk_limit_hit = usage is not None and usage.exceeded

    def _check_pids(self, directory: Path) -> None:
        refused = max(self._refused, cgroups.pids_max_events(directory))
        refusing, self._refused = refused > self._refused, refused
        self.pids_limit_hit = refused > 0
        if not cgroups.pids_full(directory):
            self._full_since, self._full_polls, self._refusing_polls = None, 0, 0
            return
        if self._full_since is None:
            self._full_since = time.monotonic()
            return
        self._full_polls += 1
        self._refusing_polls += refusing
        lasting = time.monotonic() - self._full_since >= FORK_BOMB_SECONDS
        self.fork_bomb = lasting and 2 * self._refusing_polls >= self._full_polls


async def stop_watching(task: asyncio.Task[None]) -> None:
    """Cancels a task running `LimitWatch.run` and waits for it to end."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        log.warning("watching the limits of a run failed: %r", task.exception())
