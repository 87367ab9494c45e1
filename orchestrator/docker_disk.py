"""A run's writable space in the docker backend: a file system of its own, so that a tool
writing past its limit meets ENOSPC instead of filling the host's disk (a bind-mounted work
dir shares the host's; ``--storage-opt size`` needs overlay2 on xfs with project quotas).

In the work dir::

    disk.img     sparse file holding an ext4 file system (no journal), of the limit plus a
                 margin; it takes host disk only as the run writes
    disk/        where it is mounted: loop, nosuid, nodev, noexec
      input/ output/   owned by the engine's user (0700); bind-mounted over the work dir's
                       own input/ and output/, which the container mounts as before
      tmp/         the container's /tmp (1777): scratch space counts against the limit too
    disk.json    the limit and what the fresh file system used, read back after a restart

The limit is what the run may write (Limits.disk_bytes: its inputs', outputs' and scratch
sizes together). ext4 refuses allocations a little before it is full (per-CPU counters
keep a watermark; 2 % is reserved), so the file system gets `margin` more than the limit:
writes never fail before the limit, and fail shortly past it. A run that wrote more than
its limit has `exceeded` it; that names DISK_LIMIT_EXCEEDED when it then ended abnormally.

Needs root, ``mkfs.ext4`` (e2fsprogs), ``mount`` (util-linux) with loop devices, and the
Docker engine in the same mount namespace (it bind-mounts what is mounted here). The work
dir's removal detaches the mounts first (mounts.py, WorkDir.remove); the loop device is
freed with the last unmount. Blocking: call through ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .mounts import detach_all_under
from .workdir import WorkDir

#: The writable space of a run whose launch names none (Limits.disk_bytes 0).
DEFAULT_DISK_BYTES = 10 * 1024**3
_BLOCK = 4096
_MOUNT_OPTIONS = "loop,nosuid,nodev,noexec,noinit_itable"
_TOOLS = ("mkfs.ext4", "mount")
_TOOL_TIMEOUT = 60.0


def missing_tools() -> list[str]:
    """The commands this module needs that are not on PATH."""
    return [tool for tool in _TOOLS if shutil.which(tool) is None]


def margin(limit: int, cpus: int | None = None) -> int:
    """What the file system gets beyond `limit`: ext4's metadata (inode tables, about 1.6 %)
    and reserved clusters (2 %), its free-space watermark (4 * max(32, 2 * CPUs) * CPUs
    blocks) twice over, and 8 MiB."""
    n = cpus or os.cpu_count() or 1
    watermark = 4 * max(32, 2 * n) * n * _BLOCK
    return limit // 25 + 2 * watermark + 8 * 1024**2


@dataclass(frozen=True)
class Usage:
    """What a run has written to its file system."""

    used_bytes: int
    limit_bytes: int
    inodes_left: int

    @property
    def exceeded(self) -> bool:
        """More than the limit written, or no inode left (files can't be created either)."""
        return self.used_bytes > self.limit_bytes or self.inodes_left == 0


@dataclass(frozen=True)
class RunDisk:
    """The file system of one run (it need not exist)."""

    workdir: WorkDir

    @property
    def image(self) -> Path:
        return self.workdir.path / "disk.img"

    @property
    def mount_point(self) -> Path:
        return self.workdir.path / "disk"

    @property
    def scratch(self) -> Path:
        """The container's /tmp."""
        return self.mount_point / "tmp"

    @property
    def _record(self) -> Path:
        return self.workdir.path / "disk.json"

    def create(self, limit: int, owner: tuple[int, int]) -> None:
        """Makes and mounts the file system of a prepared work dir; `owner` (uid, gid) gets
        input/ and output/. Raises OSError (the caller removes the work dir)."""
        fd = os.open(self.image, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, limit + margin(limit))
        finally:
            os.close(fd)
        _run("mkfs.ext4", "-q", "-F", "-b", str(_BLOCK), "-m", "0", "-O", "^has_journal",
             "-E", "nodiscard,lazy_itable_init=1", str(self.image))  # fmt: skip
        self.mount_point.mkdir(mode=0o755)
        _run("mount", "-o", _MOUNT_OPTIONS, str(self.image), str(self.mount_point))
        for name, target in (("input", self.workdir.input), ("output", self.workdir.output)):
            directory = self.mount_point / name
            directory.mkdir(mode=0o700)
            os.chown(directory, *owner)
            _run("mount", "--bind", str(directory), str(target))
        self.scratch.mkdir()
        self.scratch.chmod(0o1777)  # whatever the umask, as a /tmp is
        stat = os.statvfs(self.mount_point)
        baseline = (stat.f_blocks - stat.f_bfree) * stat.f_frsize
        self._record.write_text(json.dumps({"limit": limit, "baseline": baseline}))

    def mounted(self) -> bool:
        return os.path.ismount(self.mount_point)

    def usage(self) -> Usage | None:
        """What the run wrote so far; None when the file system is not mounted."""
        if not self.mounted():
            return None
        try:
            record = json.loads(self._record.read_text())
            stat = os.statvfs(self.mount_point)
        except (OSError, ValueError):
            return None
        used = (stat.f_blocks - stat.f_bfree) * stat.f_frsize - int(record["baseline"])
        return Usage(used, int(record["limit"]), stat.f_favail)

    def unmount(self) -> None:
        """Detaches the file system and its binds (the work dir's removal does it too)."""
        detach_all_under(self.workdir.path)


def _run(*argv: str) -> None:
    try:
        subprocess.run(
            argv, check=True, capture_output=True, text=True, timeout=_TOOL_TIMEOUT
        )  # exec-based: nothing runs between fork and exec
    except subprocess.CalledProcessError as exc:
        message = (exc.stderr or exc.stdout or "").strip() or f"exit code {exc.returncode}"
        raise OSError(f"{argv[0]}: {message}") from exc
    except subprocess.TimeoutExpired as exc:
        raise OSError(f"{argv[0]} took more than {_TOOL_TIMEOUT:g} s") from exc
