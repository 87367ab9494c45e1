"""Placement decisions, pure and fast: which queued runs go where now.

Given the attached orchestrators (capacity, labels, what their runs reserve), each tenant's
usage and quota, and the heads of the tenants' queues, `decide` places runs one at a time:

- Fair share across tenants: the next run placed is the head of the tenant that has the
  fewest runs placed (ties: the tenant whose head has waited longest), so one tenant's
  thousand queued runs never starve another tenant's one.
- FIFO within a tenant: a tenant's head that waits for room (capacity or quota) blocks the
  tenant's later runs (they would overtake it), and its reason is the tenant's. A run that
  no attached orchestrator could ever take (its labels, its size) is passed over, keeping
  its place and its own reason, until one attaches.
- Never beyond a quota or a capacity: a run is placed only where its CPU, memory and slot
  fit what is left, and only while its tenant stays within its quota.
- Spread: among the orchestrators where it fits and whose labels satisfy it, the run goes
  to the one with the most room left (the largest free share of its scarcest resource).

The caller reads the inputs and applies the decisions in one transaction (control.fleet
.placement), so two replicas never place the same run or overfill an orchestrator."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

WAITING_FOR_CAPACITY = "waiting for capacity"
NO_ORCHESTRATOR = "waiting for an orchestrator to attach"


@dataclass
class Amounts:
    """CPU (millicores), memory (bytes) and runs."""

    cpu_millis: int = 0
    memory_bytes: int = 0
    runs: int = 0

    def add(self, run: QueuedRun) -> None:
        self.cpu_millis += run.cpu_millis
        self.memory_bytes += run.memory_bytes
        self.runs += 1


@dataclass(frozen=True)
class Quota:
    """Zero: unlimited."""

    max_runs: int = 0
    max_cpu_millis: int = 0
    max_memory_bytes: int = 0

    def refusal(self, usage: Amounts, run: QueuedRun) -> str:
        """Why `run` would exceed the quota ("" when it fits)."""
        if self.max_runs and usage.runs + 1 > self.max_runs:
            return f"tenant quota: {usage.runs}/{self.max_runs} runs"
        if self.max_cpu_millis and usage.cpu_millis + run.cpu_millis > self.max_cpu_millis:
            return (
                f"tenant quota: {usage.cpu_millis}/{self.max_cpu_millis} millicores"
                f" in use, the run needs {run.cpu_millis}"
            )
        if self.max_memory_bytes and usage.memory_bytes + run.memory_bytes > self.max_memory_bytes:
            return (
                f"tenant quota: {usage.memory_bytes}/{self.max_memory_bytes} bytes of memory"
                f" in use, the run needs {run.memory_bytes}"
            )
        return ""


@dataclass(frozen=True)
class QueuedRun:
    id: str
    tenant: str
    queued_us: int
    cpu_millis: int = 0
    memory_bytes: int = 0
    # "gpu" (present) or "site=eu" (equal).
    required_labels: tuple[str, ...] = ()


@dataclass
class Site:
    """An attached orchestrator: what it has and what its runs reserve."""

    name: str
    cpu_millis: int
    memory_bytes: int
    run_slots: int
    labels: Mapping[str, str] = field(default_factory=dict)
    load: Amounts = field(default_factory=Amounts)

    def satisfies(self, required: Iterable[str]) -> bool:
        for label in required:
            key, sep, value = label.partition("=")
            if key not in self.labels or (sep and self.labels[key] != value):
                return False
        return True

    def room(self, run: QueuedRun) -> float | None:
        """The share of its scarcest resource left once `run` is placed, or None when the
        run does not fit."""
        cpu = self.cpu_millis - self.load.cpu_millis - run.cpu_millis
        memory = self.memory_bytes - self.load.memory_bytes - run.memory_bytes
        slots = self.run_slots - self.load.runs - 1
        if cpu < 0 or memory < 0 or slots < 0:
            return None
        return min(cpu / self.cpu_millis, memory / self.memory_bytes, slots / self.run_slots)


@dataclass(frozen=True)
class Placement:
    run: QueuedRun
    orchestrator: str


@dataclass
class Decisions:
    placements: list[Placement] = field(default_factory=list)
    # Why each tenant whose queue did not empty waits (its head's reason).
    reasons: dict[str, str] = field(default_factory=dict)
    # Runs passed over: why each waits.
    run_reasons: dict[str, str] = field(default_factory=dict)


def decide(
    sites: Sequence[Site],
    queues: Mapping[str, Sequence[QueuedRun]],
    usage: Mapping[str, Amounts],
    quotas: Mapping[str, Quota],
    default_quota: Quota = Quota(),
) -> Decisions:
    """Places the heads of `queues` (each tenant's queued runs, oldest first; the first few
    are enough: no more can be placed than there are free slots) on `sites`. Mutates the
    sites' loads (and so sees its own placements)."""
    out = Decisions()
    used = {tenant: Amounts(a.cpu_millis, a.memory_bytes, a.runs) for tenant, a in usage.items()}
    cursor = dict.fromkeys(queues, 0)
    # (runs placed, head's queue time, tenant): the fairest tenant first.
    turn = [
        (used.get(tenant, Amounts()).runs, runs[0].queued_us, tenant)
        for tenant, runs in queues.items()
        if runs
    ]
    heapq.heapify(turn)
    while turn:
        _, _, tenant = heapq.heappop(turn)
        runs = queues[tenant]
        run = runs[cursor[tenant]]
        tenant_usage = used.setdefault(tenant, Amounts())
        reason = quotas.get(tenant, default_quota).refusal(tenant_usage, run)
        if reason:
            out.reasons[tenant] = reason
            continue
        site = _best_site(sites, run)
        if site is None:
            why = _why_nowhere(sites, run)
            if why not in (WAITING_FOR_CAPACITY, NO_ORCHESTRATOR):
                out.run_reasons[run.id] = why  # not a matter of room: the next may go first
            else:
                out.reasons[tenant] = why
                continue
        else:
            site.load.add(run)
            tenant_usage.add(run)
            out.placements.append(Placement(run, site.name))
        cursor[tenant] += 1
        if cursor[tenant] < len(runs):
            heapq.heappush(turn, (tenant_usage.runs, runs[cursor[tenant]].queued_us, tenant))
    return out


def _best_site(sites: Sequence[Site], run: QueuedRun) -> Site | None:
    best: Site | None = None
    best_room = -1.0
    for site in sites:
        if not site.satisfies(run.required_labels):
            continue
        room = site.room(run)
        if room is not None and room > best_room:
            best, best_room = site, room
    return best


def _why_nowhere(sites: Sequence[Site], run: QueuedRun) -> str:
    if not sites:
        return NO_ORCHESTRATOR
    matching = [s for s in sites if s.satisfies(run.required_labels)]
    if not matching:
        return f"no attached orchestrator has the labels {' '.join(run.required_labels)}"
    if not any(
        run.cpu_millis <= s.cpu_millis and run.memory_bytes <= s.memory_bytes for s in matching
    ):
        return (
            f"no attached orchestrator is large enough ({run.cpu_millis} millicores,"
            f" {run.memory_bytes} bytes of memory)"
        )
    return WAITING_FOR_CAPACITY
