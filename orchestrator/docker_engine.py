"""What the backends on a Docker engine (docker_backend.py, swarm_backend.py) share, besides
the container profile (docker_container.py) and exit classification (docker_state.py):
engine errors as domain errors, the checks before a launch (the control plane's socket usable
by the engine's user, the image present), which labelled object belongs to which
orchestrator, and the work dirs no container claims after a restart.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

import aiodocker
import aiohttp

from .backend import RunName
from .docker_container import LABEL_WORKDIR, socket_access_problem
from .docker_state import run_of
from .errors import InvalidArgument, LaunchFailed, NotFound, OrchestratorError, Reason, Unavailable
from .workdir import WorkDir

# aiodocker reports a connection failure as this status.
UNREACHABLE = 900


def engine_error(exc: aiodocker.DockerError | aiohttp.ClientError, doing: str) -> OrchestratorError:
    """Unavailable when the Docker engine cannot be reached, else LaunchFailed."""
    if isinstance(exc, aiohttp.ClientError) or exc.status == UNREACHABLE:
        return Unavailable(f"{doing}: the Docker engine is unreachable", Reason.DOCKER_UNAVAILABLE)
    return LaunchFailed(f"{doing}: {exc.message}", Reason.LAUNCH_FAILED)


async def check_launchable(docker: aiodocker.Docker, image: str, socket: Path) -> None:
    """InvalidArgument when the engine's user could not use the control plane's `socket`
    (the run would end in CONNECT_TIMEOUT, much later); NotFound when the engine lacks
    `image`."""
    problem = await asyncio.to_thread(socket_problem, socket)
    if problem is not None:
        raise InvalidArgument.field("control_address", problem, Reason.CONTROL_ADDRESS_INVALID)
    try:
        await docker.images.inspect(image)
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            raise NotFound(
                f"image {image} is not on this Docker engine",
                Reason.IMAGE_NOT_FOUND,
                metadata={"image_digest": image},
            ) from exc
        raise engine_error(exc, "cannot inspect the image") from exc
    except aiohttp.ClientError as exc:
        raise engine_error(exc, "cannot inspect the image") from exc


def socket_problem(socket: Path) -> str | None:
    """Why the engine could not reach the control plane's `socket` (module docker_container)."""
    missing = f"the socket's directory {str(socket.parent)!r} does not exist"
    try:
        folder = socket.parent.stat()
        found: os.stat_result | None = socket.stat()
    except (FileNotFoundError, NotADirectoryError):
        if not socket.parent.is_dir():
            return missing
        found = None  # the control plane is restarting: its folder is what is mounted
    except PermissionError:
        return None  # another user's data dir: Docker mounts it all the same, unchecked
    if not stat.S_ISDIR(folder.st_mode):
        return missing
    return socket_access_problem(folder, found, socket)


def owned_run(labels: Mapping[str, str], runs_dir: Path) -> tuple[RunName, WorkDir] | None:
    """The run and work dir of an object (container, service) labelled by the orchestrator
    whose work dirs lie in `runs_dir`; None for another data dir's (another orchestrator on
    this engine) or a foreign one."""
    run = run_of(labels)
    if run is None:
        return None
    workdir = WorkDir.of(runs_dir, run)
    return (run, workdir) if labels.get(LABEL_WORKDIR) == str(workdir.path) else None


async def sweep_workdirs(
    runs_dir: Path,
    claimed: set[Path],
    *,
    keep_workdirs: bool,
    tracked: Callable[[RunName], bool],
) -> list[tuple[RunName, WorkDir]]:
    """After a restart, the work dirs in `runs_dir` that nothing `claimed`, of runs not
    `tracked`: those whose exit was reported are removed (kept with `keep_workdirs`); the
    others are returned, their runs' containers having disappeared while no orchestrator
    watched."""
    vanished: list[tuple[RunName, WorkDir]] = []
    for path in await asyncio.to_thread(_subdirectories, runs_dir):
        workdir = WorkDir(path)
        run = workdir.run()
        if path in claimed or run is None or tracked(run):
            continue
        if await asyncio.to_thread(workdir.reported):
            if not keep_workdirs:
                await asyncio.to_thread(workdir.remove)
            continue
        vanished.append((run, workdir))
    return vanished


def _subdirectories(path: Path) -> list[Path]:
    try:
        return [child for child in path.iterdir() if child.is_dir()]
    except FileNotFoundError:
        return []
