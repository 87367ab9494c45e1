"""The placement loop of a replica: a pass whenever something may let a queued run start (a
run queued or ended, an orchestrator attached or resized; `kick()`), and every `interval`
seconds anyway (another replica's change, a quota changed). Passes of all replicas are
serialized by the store (control.store.fleet.place); each placement is handed to `placed`,
which gets the launch to the orchestrator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from flnet import timeouts
from flnet.control.fleet.scheduler import Decisions, Quota, decide
from flnet.control.store.fleet import FleetStore

log = logging.getLogger(__name__)

# Queued runs read per tenant and pass: no more can be placed in one pass than there are
# free slots, and more are read next pass.
HEADS_PER_TENANT = 64
UNLIMITED = Quota()


class Placer:
    def __init__(
        self,
        store: FleetStore,
        placed: Callable[[str], None],
        *,
        default_quota: Quota = UNLIMITED,
        interval: float = 1.0,
    ) -> None:
        self.store = store
        self.placed = placed
        self.default_quota = default_quota
        self.interval = interval
        self._kicked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Passes and decisions so far, and the time they took (bench, logs).
        self.passes = 0
        self.decisions = 0
        self.seconds = 0.0

    def kick(self) -> None:
        self._kicked.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="placement")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await timeouts.wait_for(self._kicked.wait(), self.interval)
            self._kicked.clear()
            try:
                await self.pass_once()
            except Exception:
                log.exception("placing queued runs failed")

    async def pass_once(self) -> Decisions:
        """One pass: places what fits, records why the rest waits."""
        started = time.perf_counter()
        decisions = await self.store.place(
            lambda sites, queues, usage, quotas: decide(
                sites, queues, usage, quotas, self.default_quota
            ),
            HEADS_PER_TENANT,
        )
        self.passes += 1
        self.decisions += len(decisions.placements)
        self.seconds += time.perf_counter() - started
        for orchestrator in sorted({p.orchestrator for p in decisions.placements}):
            self.placed(orchestrator)
        if decisions.placements:
            log.info("placed %d run(s)", len(decisions.placements))
            self.kick()  # more may fit (each pass reads a bounded number of heads)
        return decisions
