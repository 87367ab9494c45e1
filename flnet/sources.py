"""What a tool's source is, and its digest: the files of a tool directory (no __pycache__,
hidden directories or .pyc files), and the sha256 over their relative paths and contents.
The control plane records it for local-source versions; image builds label images with it."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


def tool_files(directory: Path) -> list[Path]:
    """The files that make up the tool, relative, in digest order. Symbolic links to files
    count as the file; links to directories are not followed."""
    files: list[Path] = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(names):
            if name.endswith(".pyc"):
                continue
            path = Path(root) / name
            if path.is_file():
                files.append(path.relative_to(directory))
    return files


def source_sha256(directory: Path, files: Iterable[Path] | None = None) -> str:
    """Digest of a tool directory: every file's relative path and content, in order."""
    h = hashlib.sha256()
    for relative in tool_files(directory) if files is None else files:
        h.update(str(relative).encode() + b"\0")
        h.update(hashlib.sha256((directory / relative).read_bytes()).digest())
    return h.hexdigest()
