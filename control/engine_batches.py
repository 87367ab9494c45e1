"""A batch as an engine sent it, checked once on arrival: every entry's kind, and that every
time it carries is one a Timestamp may hold (stored, a far time would break what reads the run
later: its export). This is the one pass in Python over a batch's entries on the way in; the
store reads the kinds instead of looking again."""

from __future__ import annotations

from dataclasses import dataclass

from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.server.ranges import MAX_TIMESTAMP_SECONDS, MIN_TIMESTAMP_SECONDS, timestamp_us

_NANOS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class EngineBatch:
    batch: rt.Batch
    kinds: list[str | None]  # entry i's `entry` oneof (None: a kind this control plane lacks)

    @property
    def telemetry_only(self) -> bool:
        """Logs, metrics and progress only: stored as sent (see Entry's field numbers)."""
        return "transition" not in self.kinds and None not in self.kinds

    @property
    def last_progress(self) -> int:
        """The index of the last progress entry, or -1."""
        kinds = self.kinds
        return len(kinds) - 1 - kinds[::-1].index("progress") if "progress" in kinds else -1


def checked(batch: rt.Batch) -> EngineBatch:
    """`batch` with its kinds; InvalidArgument naming the first entry whose time is out of
    range (the engine stamps its entries: a broken engine's)."""
    kinds: list[str | None] = []
    add = kinds.append
    for entry in batch.entries:  # (inlined: this loop runs for every line a tool logs)
        which = entry.WhichOneof("entry")
        add(which)
        if which == "log":
            ts = entry.log.time
        elif which == "metric":
            ts = entry.metric.time
        elif which == "progress":
            ts = entry.progress.time
        else:
            continue
        if not (
            0 <= ts.nanos < _NANOS and MIN_TIMESTAMP_SECONDS <= ts.seconds <= MAX_TIMESTAMP_SECONDS
        ):
            timestamp_us(ts, f"batch.entries[{len(kinds) - 1}].{which}.time")
    return EngineBatch(batch, kinds)
