"""Mount points below a directory, and detaching them: a work dir that holds mounts (the
docker backend's per-run file system, docker_disk.py) can only be removed once they are gone,
and removing it without detaching them first would delete the mounted files and leave the
mount points busy. Linux only; blocking (call through ``asyncio.to_thread``)."""

from __future__ import annotations

import ctypes
import errno
import os
import re
from pathlib import Path

_MNT_DETACH = 2
# mountinfo escapes space, tab, newline and backslash in paths as octal: "\040".
_ESCAPE = re.compile(r"\\([0-7]{3})")

_libc = ctypes.CDLL(None, use_errno=True)


def _unescape(path: str) -> str:
    return _ESCAPE.sub(lambda match: chr(int(match[1], 8)), path)


def mounts_under(directory: Path) -> list[Path]:
    """Mount points at or below `directory` in this process's mount namespace, deepest
    first (the order to detach them in)."""
    root = os.path.realpath(directory)
    found: list[Path] = []
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            point = _unescape(line.split()[4])
            if point == root or point.startswith(root + "/"):
                found.append(Path(point))
    return sorted(set(found), key=lambda path: len(path.parts), reverse=True)


def detach(point: Path) -> None:
    """Detaches a mount at once (umount2 MNT_DETACH: the kernel frees it once the last user
    is gone); OSError when refused. One that is not mounted any more is fine."""
    if _libc.umount2(os.fsencode(point), _MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code != errno.EINVAL:  # EINVAL: not a mount point (any more)
            raise OSError(code, f"cannot unmount {point}: {os.strerror(code)}")


def detach_all_under(directory: Path) -> None:
    """Detaches every mount at or below `directory`."""
    for point in mounts_under(directory):
        detach(point)
