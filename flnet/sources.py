"""What a tool's source is: the files of a tool directory (no __pycache__, .pyc files,
hidden files or directories). Image builds label images with their digest (`source_sha256`);
`pack_source` makes the archive a source version is registered with, byte for byte the same
for the same files, so its sha256 is the source digest runs record."""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

#: What a source archive may hold, checked by the control plane when a version is registered.
MAX_SOURCE_ENTRIES = 10_000
MAX_SOURCE_BYTES = 64 * 1024 * 1024  # unpacked, and the archive itself
MEDIA_TYPE = "application/gzip"


def tool_files(directory: Path) -> list[Path]:
    """The files that make up the tool, relative, in digest order. Symbolic links to files
    count as the file; links to directories are not followed."""
    files: list[Path] = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(names):
            if name.endswith(".pyc") or name.startswith("."):  # .env, .netrc: not the tool
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


def pack_source(directory: Path, target: BinaryIO) -> int:
    """Writes the tool's files as a gzip-compressed tar to `target`, reproducibly: sorted
    entries, no times or owners, modes 0644 or 0755 (executables). Returns the file count."""
    files = tool_files(directory)
    # mtime=0 and no file name in the gzip header: the same files, the same bytes.
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=target, mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for relative in files:
            path = directory / relative
            info = tarfile.TarInfo(relative.as_posix())
            info.size = path.stat().st_size
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            with path.open("rb") as f:
                tar.addfile(info, f)
    return len(files)
