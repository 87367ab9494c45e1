"""Who may connect to the unix socket engines dial (containers have no network).

A run credential says which run an engine speaks for, but only a connected peer can present
one: the socket itself is closed to everyone else. It lives in a folder of its own, which
the docker backend bind-mounts into each run's container (a folder, so that a restarted
control plane's new socket is seen there):

- without `engine_gid` (engines run as the control plane's user: the process backend, `flnet
  dev`): folder 0700, socket 0600;
- with `engine_gid` (FLNET_ENGINE_GID: the group engine containers run with, 10001 for the
  docker backend): folder 0710 and socket 0660, both of that group: the containers' user can
  reach and connect to it, other users cannot.

The folder must be this user's own real folder: in a shared place (/tmp, for a data dir whose
path is too long for a socket) another user could have made it first, and then replace the
socket with one of theirs that collects the run credentials of every engine connecting."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from flnet.datadir import PRIVATE_DIR, PRIVATE_FILE, private_dir

# Folder and socket modes when engines of another user (in the engine group) connect.
GROUP_DIR = 0o710
GROUP_SOCKET = 0o660


def prepare_folder(socket: Path, engine_gid: int | None) -> None:
    """Creates the socket's folder (0700 parents), or checks that an existing one is this
    user's, and gives it its mode and group. PermissionError when the folder is another
    user's or not a folder, or its group cannot be set (the user is neither root nor in the
    engine group)."""
    folder = socket.parent
    private_dir(folder)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        what = "folder" if stat.S_ISDIR(st.st_mode) else "symbolic link or file"
        raise PermissionError(
            f"{folder} is a {what} of uid {st.st_uid}, not of this user (uid {os.geteuid()}):"
            " refusing to put the engine socket there"
        )
    _restrict(folder, engine_gid, PRIVATE_DIR, GROUP_DIR)


def restrict_socket(socket: Path, engine_gid: int | None) -> None:
    """Gives the bound socket its mode and group."""
    _restrict(socket, engine_gid, PRIVATE_FILE, GROUP_SOCKET)


def _restrict(path: Path, engine_gid: int | None, private: int, shared: int) -> None:
    if engine_gid is None:
        path.chmod(private)
        return
    try:
        os.chown(path, -1, engine_gid)
    except PermissionError:
        raise PermissionError(
            f"cannot give {path} to the engine group {engine_gid} (FLNET_ENGINE_GID): run "
            "the control plane as root or as a member of that group"
        ) from None
    path.chmod(shared)
