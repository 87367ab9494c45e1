"""What the tests of private data (flnet.datadir, the engine socket) share: modes, the most
permissive umask (so that only the modes FLNet gives count), and other local users.

Other users need root (to become them); without root those tests are skipped, or fail under
CI=true."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

NOBODY = 65534
# The docker backend's engine user and group (flnet.orchestrator.docker_container).
ENGINE = 10001
# Stdlib only: the tests' virtualenv lives where other users may not go.
SYSTEM_PYTHON = "/usr/bin/python3"

_CONNECT = """
import errno, socket, sys
with socket.socket(socket.AF_UNIX) as s:
    try:
        s.connect(sys.argv[1])
    except OSError as e:
        print(errno.errorcode[e.errno])
    else:
        print("connected")
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def umask_of(pid: int) -> int:
    """The umask of a running process (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError(f"no Umask in /proc/{pid}/status")


def require_root() -> None:
    """Skips the test (fails it under CI=true) unless it may act as other users."""
    if os.geteuid() != 0 or not Path(SYSTEM_PYTHON).exists():
        reason = f"needs root and {SYSTEM_PYTHON} to act as other users"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def open_dir() -> Path:
    """A fresh directory every user may enter (as /srv or /home are)."""
    path = Path(tempfile.mkdtemp(prefix="flnet-open-"))
    path.chmod(0o755)
    return path


def connect_as(socket: Path, uid: int, gid: int) -> str:
    """ "connected", or the errno name (EACCES, ...) of a process of `uid`:`gid` (and no other
    group) connecting to the unix socket."""
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", _CONNECT, str(socket)],
        user=uid,
        group=gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


@contextmanager
def acting_as(uid: int) -> Iterator[None]:
    """This process's effective uid is `uid` meanwhile (its groups stay root's)."""
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
