"""The last lines an engine printed, as every backend reports them once it exited
(`Container.last_output_lines`): at most `LAST_LINES`, each cut to a sane length."""

from __future__ import annotations

import os
from pathlib import Path

LAST_LINES = 50
MAX_LINE_CHARS = 2000
_TAIL_BYTES = 64 * 1024


def last_lines(
    text: str, count: int = LAST_LINES, *, first_is_cut: bool = False
) -> tuple[str, ...]:
    """The last `count` lines of `text`; `first_is_cut` drops its first line, the end of a
    line whose start was not read."""
    lines = text.splitlines()
    if first_is_cut and lines:
        lines = lines[1:]
    return tuple(line[:MAX_LINE_CHARS] for line in lines[-count:])


def read_last_lines(path: Path, count: int = LAST_LINES) -> tuple[str, ...]:
    """The last `count` lines of a file (decoded leniently); () when it cannot be read."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - _TAIL_BYTES))
            data = file.read()
    except OSError:
        return ()
    return last_lines(
        data.decode("utf-8", errors="replace"), count, first_is_cut=size > _TAIL_BYTES
    )
