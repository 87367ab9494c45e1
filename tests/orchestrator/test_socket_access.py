"""Whether the docker backend's engine (10001:10001, no other group) could use the control
plane's socket, judged from the modes and owners as the kernel judges them: the owner's bits
for the owner, else the group's for the group, else the others'."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flnet.orchestrator.docker_container import socket_access_problem

ENGINE, ROOT, NOBODY = 10001, 0, 65534
SOCKET = Path("/srv/flnet/sockets/control.sock")


def entry(mode: int, uid: int = ROOT, gid: int = ROOT) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("folder", "socket"),
    [
        (entry(0o40710, gid=ENGINE), entry(0o140660, gid=ENGINE)),  # the control plane's way
        (entry(0o40700, uid=ENGINE), entry(0o140600, uid=ENGINE)),
        (entry(0o40711), entry(0o140666)),
        (entry(0o40710, gid=ENGINE), None),  # no socket while the control plane restarts
    ],
)
def test_the_engine_may_use_the_socket(
    folder: os.stat_result, socket: os.stat_result | None
) -> None:
    assert socket_access_problem(folder, socket, SOCKET) is None


@pytest.mark.parametrize(
    ("folder", "socket", "refused"),
    [
        (entry(0o40700), entry(0o140600), "may not enter the socket's folder '/srv/flnet/sock"),
        (entry(0o40710, gid=NOBODY), entry(0o140660), "may not enter"),
        # The owner's bits decide for the owner, even when the others' would allow.
        (entry(0o40071, uid=ENGINE), None, "may not enter"),
        (entry(0o40701, gid=ENGINE), None, "may not enter"),
        (entry(0o40710, gid=ENGINE), entry(0o140640, gid=ENGINE), "may not connect to the sock"),
        (entry(0o40711), entry(0o140664), "may not connect"),
    ],
)
def test_the_engine_may_not_use_the_socket(
    folder: os.stat_result, socket: os.stat_result | None, refused: str
) -> None:
    problem = socket_access_problem(folder, socket, SOCKET) or ""
    assert problem.startswith("the engine's user (10001:10001) ")
    assert refused in problem
    assert problem.endswith(": start the control plane with FLNET_ENGINE_GID=10001")
