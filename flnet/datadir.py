"""Where platform data lives unless told otherwise ($FLNET_DATA_DIR, else ~/.local/share/flnet),
and how it is kept private. It holds every tenant's configurations, inputs, outputs and audit
trail: FLNet's folders are 0700 and its files 0600, readable by the user the servers run as
and nobody else.

Two layers. Everything FLNet creates gets its mode explicitly (these helpers), whatever the
umask, so that it holds however a component is started: a server process, `flnet up`, a
test embedding it. And the server processes start with umask 0o077 (`private_umask`), for
what other code creates in their name (SQLite's journals, Envoy's access log, files a
library writes): a mode chosen here cannot reach those."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
PRIVATE_UMASK = 0o077


def default_data_dir() -> Path:
    return Path(os.environ.get("FLNET_DATA_DIR", "~/.local/share/flnet")).expanduser()


def private_umask() -> None:
    """What a server process calls first: files and folders created without an explicit
    mode (by any code of the process, or its children) are its user's only."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """Creates `path` and each missing parent, 0700 (pathlib's `parents=True` would give the
    parents the umask's mode). Existing directories are left as they are."""
    missing: list[Path] = []
    at = path
    while not at.exists() and at != at.parent:
        missing.append(at)
        at = at.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made by a concurrent caller
            directory.mkdir(mode=PRIVATE_DIR)
    return path


def own_private_dir(path: Path) -> Path:
    """A directory FLNet owns (a data dir, an artifact store's root): created 0700, and made
    0700 when it exists more open (written by an earlier version): closing it closes
    everything under it to other users. One of another user is left alone: its owner
    decides."""
    private_dir(path)
    st = path.stat()
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & ~PRIVATE_DIR:
        log.warning("%s was open to other users (%o): made 0700", path, stat.S_IMODE(st.st_mode))
        path.chmod(PRIVATE_DIR)
    return path


def open_private(path: Path, flags: int) -> int:
    """os.open with mode 0600 when it creates the file (the umask can only take bits away)."""
    return os.open(path, flags | os.O_CREAT, PRIVATE_FILE)


def write_private(path: Path, data: str | bytes) -> None:
    """Replaces `path` with `data` atomically, mode 0600 from the first byte on; its folder
    is created (0700) when missing."""
    private_dir(path.parent)
    # mkstemp creates the file 0600: never readable by others, even briefly.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
