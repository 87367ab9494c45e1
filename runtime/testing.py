"""Helpers to call a tool's functions in tests, without a control plane: a real Context whose
telemetry is kept in memory."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from flnet.api.runtime.v1 import runtime_service_pb2 as rt

from .context import Context, Outputs
from .telemetry import EntryBuffer, entries_of

C = TypeVar("C")


class Recorder:
    """The telemetry a test Context produced, as Entry messages."""

    def __init__(self, buffer: EntryBuffer) -> None:
        self._buffer = buffer
        self._entries: list[rt.Entry] = []

    def entries(self) -> list[rt.Entry]:
        self._entries.extend(entries_of(self._buffer.drain()))
        return list(self._entries)

    def logs(self) -> list[str]:
        return [e.log.message for e in self.entries() if e.WhichOneof("entry") == "log"]

    def metrics(self, name: str) -> list[tuple[int, float]]:
        """(step, value) of metric `name`, in order."""
        return [
            (e.metric.step, e.metric.value)
            for e in self.entries()
            if e.WhichOneof("entry") == "metric" and e.metric.name == name
        ]

    def progress(self) -> list[float]:
        return [e.progress.fraction for e in self.entries() if e.WhichOneof("entry") == "progress"]


def make_context(
    config: C,
    *,
    output_dir: Path,
    outputs: Iterable[str] = (),
    inputs: Mapping[str, Path] | None = None,
    raw_config: Mapping[str, Any] | None = None,
    run: str = "tenants/test/runs/test",
) -> tuple[Context[C], Recorder]:
    """A Context for calling a tool directly, and the Recorder of its telemetry."""
    buffer = EntryBuffer()
    ctx = Context(
        run=run,
        config=config,
        raw_config=raw_config or {},
        inputs=inputs or {},
        outputs=Outputs(output_dir, outputs),
        buffer=buffer,
    )
    return ctx, Recorder(buffer)
