"""The docker backend (production mode on one host, DESIGN.md §5, §7): each run's engine
runs in a Docker container, driven through aiodocker over the Docker socket. The container's
profile and mounts: docker_container.py; its exit classification: docker_state.py; what it
shares with the swarm backend: docker_engine.py.

A run's container is named after the run and the data dir (a relaunch finds it) and
labelled flnet.managed=true, flnet.run, flnet.tenant, flnet.workdir (its host work dir, which
says which orchestrator owns it) and flnet.deadline. Its exit is observed with
``docker wait`` then ``docker inspect``; its last 50 lines come from ``docker logs``. After
the EXITED event is published, the container and the work dir are removed; `keep_workdirs`
keeps both (debugging). A container removed behind the orchestrator's back ends VANISHED
with `VANISHED_LINE` as its last output line.

StopRun and the deadline send SIGTERM, then SIGKILL after the grace (``docker stop -t``,
with sub-second graces), through the engine API's kill.

Each run writes to a file system of its own, of its Limits.disk_bytes (DEFAULT_DISK_BYTES
when 0; docker_disk.py): a tool cannot fill the host's disk. While a container runs, its
pids cgroup and its disk usage are watched (limit_watch.py), so that one that ended
abnormally after reaching either limit is reported as PIDS_ or DISK_LIMIT_EXCEEDED, and a
fork bomb is ended at once (no grace) as PIDS_LIMIT_EXCEEDED.

Restart safety. Containers belong to dockerd, not to the orchestrator process: a killed
orchestrator leaves them running. `start()` lists the containers labelled
flnet.managed=true and takes over those whose flnet.workdir is one of its own work dirs:

- running (or paused): re-attached: a RUNNING event, its exit watched and reported, its
  deadline re-armed from the flnet.deadline label (ended at once when already past);
- exited, not yet reported: its EXITED event with the real cause (OOMKilled, exit code,
  the stop cause recorded in its work dir) and last lines, then removed;
- exited and already reported (by a previous process that died before removing it, or
  kept it for keep_workdirs): removed without a second event, unless keep_workdirs;
- created but never started (the previous process died mid-launch, so that LaunchRun
  failed): removed with its work dir, without event.

Left alone (logged): containers of other data dirs or with foreign labels, ours whose work
dir is gone, and containers someone is removing. Then the work dirs no container claims:
a run whose container was removed while no orchestrator watched gets a VANISHED event, and
its work dir is removed (one already reported is only removed, or kept with keep_workdirs).

At `close()` the running containers are stopped like StopRun (STOPPED), unless it is told
not to end them: then they keep running and the next `start()` re-attaches them.

The orchestrator must be root (to give the work dir to the engine's user, and to mount
the runs' file systems), in the Docker engine's mount namespace, with mkfs.ext4 and mount.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Coroutine, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
from aiodocker.containers import DockerContainer

from .backend import Container, ContainerState, LaunchSpec, RunName
from .cgroups import pids_dir_of
from .docker_container import (
    ENGINE_GID,
    ENGINE_UID,
    LABEL_DEADLINE,
    LABEL_MANAGED,
    LABEL_POOL,
    LABEL_RUN,
    LABEL_TENANT,
    LABEL_WORKDIR,
    container_config,
    container_name,
    control_socket,
    image_of,
    validate_limits,
)
from .docker_disk import DEFAULT_DISK_BYTES, RunDisk, missing_tools
from .docker_engine import check_launchable, engine_error, owned_run, sweep_workdirs
from .docker_pool import (
    HAND_OVER_WAIT,
    Standby,
    WarmPool,
    assigned,
    fifo_of,
    hand_over,
    is_pool_dir,
    pool_dirs,
    pool_workdir,
    resend,
    shape_of,
    standby_name,
)
from .docker_pool import prepare as prepare_standby
from .docker_state import (
    VANISHED_LINE,
    deadline_of,
    exit_of,
    finished_at,
    is_removing,
    is_running,
    started_at,
)
from .errors import LaunchFailed, Reason
from .events import EventLog
from .limit_watch import LimitWatch, stop_watching
from .output_tail import LAST_LINES, last_lines
from .supervisor import DEFAULT_KILL_GRACE, DEFAULT_MAX_EXITED, Supervisor, Tracked
from .workdir import WorkDir, runs_dir

log = logging.getLogger(__name__)

BACKEND_NAME = "docker"
DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"
# Retry delays of a wait interrupted by the engine (dockerd restarting).
_RETRY_FIRST, _RETRY_MAX = 0.5, 10.0


def docker_socket(url: str) -> str:
    """The path of a "unix:///path/to/docker.sock" URL; ValueError for anything else."""
    if not url.startswith("unix:///"):
        raise ValueError(f"docker_url {url!r} is not 'unix:///path/to/docker.sock'")
    return url.removeprefix("unix://")


class DockerBackend(Supervisor[Tracked]):
    """Runs engines in Docker containers. Create it anywhere; `start()`, use and `close()`
    it inside one event loop.

    `engine_command` replaces the image's CMD (tests); by default the image's own command
    runs the engine. `docker_url` is the engine's unix socket. `warm_pool` is how many
    standby containers may wait for the next launch of recently launched shapes of run
    (docker_pool.py; 0: none, every run starts its container).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        events: EventLog,
        *,
        docker_url: str = DEFAULT_DOCKER_URL,
        engine_command: Sequence[str] | None = None,
        kill_grace: float = DEFAULT_KILL_GRACE,
        keep_workdirs: bool = False,
        max_exited: int = DEFAULT_MAX_EXITED,
        warm_pool: int = 0,
    ) -> None:
        super().__init__(BACKEND_NAME, events, kill_grace=kill_grace, max_exited=max_exited)
        self._runs_dir = runs_dir(data_dir)
        self._pool = WarmPool(warm_pool)
        self._filling: set[asyncio.Task[None]] = set()
        self._socket = docker_socket(docker_url)
        self._engine_command = tuple(engine_command) if engine_command else None
        self._keep_workdirs = keep_workdirs
        self._client: aiodocker.Docker | None = None
        self._connector: aiohttp.UnixConnector | None = None
        self._host_cpus = os.cpu_count() or 1

    @property
    def runs_dir(self) -> Path:
        """Parent of the per-run work dirs."""
        return self._runs_dir

    @property
    def _docker(self) -> aiodocker.Docker:
        if self._client is None:
            raise RuntimeError("the docker backend is not started")
        return self._client

    # -- Backend protocol ------------------------------------------------------------------

    async def start(self) -> None:
        """Connects to the Docker engine (OSError when it is unreachable), then takes over
        the containers and work dirs an earlier orchestrator process left (module doc)."""
        missing = await asyncio.to_thread(missing_tools)
        if missing:
            raise OSError(
                f"the docker backend needs {' and '.join(missing)} on PATH: each run's writable "
                "space is a file system of its own (e2fsprogs, util-linux)"
            )
        # No connection limit: every running container holds one for its wait.
        self._connector = aiohttp.UnixConnector(path=self._socket, limit=0)
        # With its own connector aiodocker needs the host name it gives unix sockets.
        self._client = aiodocker.Docker(url="unix://localhost", connector=self._connector)
        try:
            info = await self._client.system.info()
            self._host_cpus = int(info.get("NCPU") or self._host_cpus)
            log.info("Docker engine %s at unix://%s", info.get("ServerVersion"), self._socket)
            await self._reconcile()
        except (aiodocker.DockerError, aiohttp.ClientError) as exc:
            await self.close(0.0, end_engines=False)
            raise OSError(
                f"cannot reach the Docker engine at unix://{self._socket}: {exc}"
            ) from exc

    async def launch(self, spec: LaunchSpec) -> Container:
        async with self._launching(spec.run) as existing:
            if existing is not None:
                log.info("%s already has container %s", spec.run, existing.container.container_id)
                return existing.container
            image = image_of(spec)
            socket = control_socket(spec.control_address)
            validate_limits(spec.limits)
            workdir = WorkDir.of(self._runs_dir, spec.run)
            name = container_name(workdir, spec.run)
            # A container of an earlier orchestrator process has a work dir (made before the
            # container); a fresh run has none, and skips the lookup.
            if await asyncio.to_thread(workdir.exists):
                found = await self._take_over_named(name, spec.run, workdir)
                if found is not None:
                    return found.container
            await check_launchable(self._docker, image, socket)
            shape = shape_of(spec, image, socket) if self._pool.size else ""
            try:
                if shape and (warm := await self._from_pool(spec, shape)) is not None:
                    return warm
                return await self._create(spec, image, socket, workdir, name)
            finally:
                if shape:
                    self._refill(spec, image, socket, shape)

    async def close(self, grace: float, *, end_engines: bool = True) -> None:
        try:
            for task in list(self._filling):
                task.cancel()
            await asyncio.gather(*self._filling, return_exceptions=True)
            for standby in self._pool.drain():  # they hold no run: never left running
                await self._remove(standby.container_id, standby.workdir)
            await super().close(grace, end_engines=end_engines)
        finally:
            await self._close_client()

    # -- the warm pool ---------------------------------------------------------------------

    async def _from_pool(self, spec: LaunchSpec, shape: str) -> Container | None:
        """The run in the standby container of its shape, if one waits (docker_pool.py)."""
        standby = self._pool.take(shape)
        if standby is None:
            return None
        deadline = _deadline(spec)
        started = datetime.now(UTC)
        try:
            handed = await asyncio.to_thread(
                hand_over, standby.workdir, spec.run, spec.credential, deadline, HAND_OVER_WAIT
            )
        except OSError as exc:
            log.warning("cannot hand %s to a standby container: %s", spec.run, exc)
            handed = False
        if not handed:
            log.info("standby container %s does not wait: not used", standby.container_id[:12])
            await self._remove(standby.container_id, standby.workdir)
            return None
        tracked = _started(spec, standby.container_id, standby.workdir, started, deadline)
        log.info("started %s in standby container %s", spec.run, standby.container_id[:12])
        self._track(tracked)
        return tracked.container

    def _refill(self, spec: LaunchSpec, image: str, socket: Path, shape: str) -> None:
        """Starts a standby of `shape` for its next launch, unless one waits or starts."""
        for stale in self._pool.expired():
            self._background(self._remove(stale.container_id, stale.workdir))
        if self._closed or not self._pool.wants(shape):
            return
        self._pool.filling(shape)
        self._background(self._start_standby(spec, image, socket, shape))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._filling.add(task)
        task.add_done_callback(self._filling.discard)

    async def _start_standby(self, spec: LaunchSpec, image: str, socket: Path, shape: str) -> None:
        workdir = pool_workdir(self._runs_dir)
        disk = RunDisk(workdir)
        config = self._config(spec, image, socket, workdir, None, standby=(shape, fifo_of(workdir)))
        owner = (ENGINE_UID, ENGINE_GID)
        container: DockerContainer | None = None
        try:
            await asyncio.to_thread(prepare_standby, workdir, owner)
            await asyncio.to_thread(
                disk.create, spec.limits.disk_bytes or DEFAULT_DISK_BYTES, owner
            )
            container = await self._docker.containers.create(config, name=standby_name(workdir))
            await container.start()
        except (OSError, aiodocker.DockerError, aiohttp.ClientError) as exc:
            self._pool.failed(shape)
            log.warning("cannot start a standby container: %s", exc)
            await self._remove(container.id if container is not None else "", workdir)
            return
        except asyncio.CancelledError:
            self._pool.failed(shape)
            await asyncio.shield(self._remove(container.id if container else "", workdir))
            raise
        for evicted in self._pool.add(Standby(shape, container.id, workdir)):
            await self._remove(evicted.container_id, evicted.workdir)

    # -- launch ----------------------------------------------------------------------------

    def _config(
        self,
        spec: LaunchSpec,
        image: str,
        socket: Path,
        workdir: WorkDir,
        deadline: datetime | None,
        standby: tuple[str, Path] | None = None,
    ) -> dict[str, Any]:
        """The create body of a run's container, or of a standby (docker_container.py)."""
        return container_config(
            spec,
            image=image,
            workdir=workdir,
            socket=socket,
            deadline=deadline,
            host_cpus=self._host_cpus,
            scratch=RunDisk(workdir).scratch,
            command=self._engine_command,
            standby=standby,
        )

    async def _create(
        self, spec: LaunchSpec, image: str, socket: Path, workdir: WorkDir, name: str
    ) -> Container:
        deadline = _deadline(spec)
        disk = RunDisk(workdir)
        config = self._config(spec, image, socket, workdir, deadline)
        container: DockerContainer | None = None
        owner = (ENGINE_UID, ENGINE_GID)
        try:
            await asyncio.to_thread(workdir.remove)  # a leftover, with its mounts, first
            await asyncio.to_thread(workdir.prepare, spec.credential, owner)
            size = spec.limits.disk_bytes or DEFAULT_DISK_BYTES
            await asyncio.to_thread(disk.create, size, owner)
            container = await self._docker.containers.create(config, name=name)
            # Before the start: a short engine may be gone (FinishedAt) by the time it returns.
            started = datetime.now(UTC)
            await container.start()
        except (OSError, aiodocker.DockerError, aiohttp.ClientError) as exc:
            if container is not None:
                await self._remove_container(container.id)
            await asyncio.to_thread(workdir.remove)
            log.error("cannot start the container of %s: %s", spec.run, exc)
            if isinstance(exc, OSError):
                raise LaunchFailed(
                    f"cannot prepare the work dir: {exc.strerror or exc}", Reason.LAUNCH_FAILED
                ) from exc
            raise engine_error(exc, "cannot start the container") from exc
        tracked = _started(spec, container.id, workdir, started, deadline)
        log.info("started %s as container %s (%s)", spec.run, name, container.id[:12])
        self._track(tracked)
        return tracked.container

    # -- taking over containers of an earlier orchestrator process -------------------------

    async def _reconcile(self) -> None:
        found = await self._docker.containers.list(
            all=True, filters=json.dumps({"label": [f"{LABEL_MANAGED}=true"]})
        )
        claimed: set[Path] = set()
        for summary in found:
            labels: Mapping[str, str] = summary["Labels"] or {}
            if LABEL_POOL in labels:
                await self._take_over_standby(summary, labels, claimed)
                continue
            owned = self._owned(labels)
            if owned is None:
                log.debug("container %s is not this orchestrator's: left alone", summary.id[:12])
                continue
            run, workdir = owned
            try:
                info = await summary.show()
            except aiodocker.DockerError:
                continue  # removed meanwhile: its work dir is swept below
            claimed.add(workdir.path)
            await self._take_over(info, run, workdir)
        await self._sweep_workdirs(claimed)
        log.info("reconciled: %d running container(s) re-attached", len(await self.list()))

    async def _take_over_standby(
        self, summary: Any, labels: Mapping[str, str], claimed: set[Path]
    ) -> None:
        """A standby container of an earlier process: one never assigned is removed; an
        assigned one is its run's container (its record says whose), told its run again if
        it still waits for it."""
        path = Path(labels.get(LABEL_WORKDIR, ""))
        if path.parent != self._runs_dir or not is_pool_dir(path):
            return  # another orchestrator's
        workdir = WorkDir(path)
        claimed.add(path)
        record = await asyncio.to_thread(assigned, workdir)
        if record is None:
            await self._remove(summary.id, workdir)
            return
        run, deadline = record
        try:
            info = await summary.show()
        except aiodocker.DockerError:
            return
        info["Config"]["Labels"] = {
            **labels,
            LABEL_RUN: str(run),
            LABEL_TENANT: run.tenant,
            **({LABEL_DEADLINE: deadline} if deadline else {}),
        }
        tracked = await self._take_over(info, run, workdir)
        if tracked is not None and is_running(info["State"]):
            await asyncio.to_thread(resend, workdir, run)

    def _owned(self, labels: Mapping[str, str]) -> tuple[RunName, WorkDir] | None:
        """The run and work dir of a container of this orchestrator (docker_engine.py)."""
        return owned_run(labels, self._runs_dir)

    async def _take_over_named(self, name: str, run: RunName, workdir: WorkDir) -> Tracked | None:
        """At launch: the run's container left by an earlier orchestrator process, if any.
        An exited one is returned once its exit is reported."""
        try:
            info = await self._docker.containers.container(name).show()
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return None
            raise engine_error(exc, "cannot look for the run's container") from exc
        except aiohttp.ClientError as exc:
            raise engine_error(exc, "cannot look for the run's container") from exc
        if self._owned(info["Config"].get("Labels") or {}) != (run, workdir):
            return None  # not ours: creating the run's container will fail
        tracked = await self._take_over(info, run, workdir, relaunch=True)
        if tracked is not None and not is_running(info["State"]):
            await tracked.exited.wait()
        return tracked

    async def _take_over(
        self, info: Mapping[str, Any], run: RunName, workdir: WorkDir, *, relaunch: bool = False
    ) -> Tracked | None:
        """Takes over one of our containers (module doc); returns it when now tracked."""
        container_id: str = info["Id"]
        state: Mapping[str, Any] = info["State"]
        if is_removing(state):
            log.info("container %s of %s is being removed: left alone", container_id[:12], run)
            return None
        if not await asyncio.to_thread(workdir.exists):
            log.warning(
                "container %s of %s: its work dir %s is gone: left alone",
                container_id[:12],
                run,
                workdir.path,
            )
            return None
        if state.get("Status") == "created":
            log.info("removing container %s of %s, never started", container_id[:12], run)
            await self._remove(container_id, workdir)
            return None
        running = is_running(state)
        if not running and await asyncio.to_thread(workdir.reported):
            # Reported by an earlier process, which died (or kept it) before removing it.
            if relaunch or not self._keep_workdirs:
                await self._remove(container_id, workdir)
            return None
        tracked = Tracked(
            container=Container.running(
                run,
                container_id,
                BACKEND_NAME,
                started_at(state),
                deadline_of(info["Config"].get("Labels") or {}),
            ),
            workdir=workdir,
            stop_cause=await asyncio.to_thread(workdir.stop_cause),
        )
        log.info("taking over container %s of %s (%s)", container_id[:12], run, state.get("Status"))
        # An exited one gets its EXITED event only: it is reported, not re-announced.
        self._track(tracked, running=running)
        return tracked

    async def _sweep_workdirs(self, claimed: set[Path]) -> None:
        """Work dirs no container claims (module doc)."""
        vanished = await sweep_workdirs(
            self._runs_dir,
            claimed,
            keep_workdirs=self._keep_workdirs,
            tracked=lambda run: self._find(run) is not None,
        )
        for workdir in await asyncio.to_thread(pool_dirs, self._runs_dir, claimed):
            record = await asyncio.to_thread(assigned, workdir)
            reported = await asyncio.to_thread(workdir.reported)
            if record is None or reported or self._find(record[0]) is not None:
                if not (reported and self._keep_workdirs):
                    await asyncio.to_thread(workdir.remove)
                continue
            vanished.append((record[0], workdir))
        for run, workdir in vanished:
            log.warning("the container of %s disappeared while no orchestrator watched", run)
            tracked = Tracked(
                container=Container(
                    run=run, container_id="", backend=BACKEND_NAME, state=ContainerState.RUNNING
                ),
                workdir=workdir,
            )
            self._track(tracked, running=False)

    # -- watching and ending ---------------------------------------------------------------

    async def _signal(self, tracked: Tracked, sig: signal.Signals) -> None:
        if not tracked.container.container_id:
            return
        container = self._docker.containers.container(tracked.container.container_id)
        try:
            await container.kill(signal=sig.name)
        except aiodocker.DockerError as exc:
            if exc.status not in (404, 409):  # gone, or not running any more
                log.warning("cannot send %s to %s: %s", sig.name, tracked.container.run, exc)
        except aiohttp.ClientError as exc:
            log.warning("cannot send %s to %s: %s", sig.name, tracked.container.run, exc)

    async def _watch(self, tracked: Tracked) -> None:
        container_id = tracked.container.container_id
        limits = LimitWatch(disk=RunDisk(tracked.workdir))
        watching = asyncio.create_task(self._watch_limits(tracked, limits))
        try:
            state = await self._wait_for_end(container_id) if container_id else None
        finally:
            await stop_watching(watching)
        self._ended(tracked)
        await asyncio.to_thread(limits.check)  # the disk once more: the tool may have cleaned up
        cause, code = exit_of(
            state,
            tracked.stop_cause,
            pids_limit_hit=limits.pids_limit_hit,
            disk_limit_hit=limits.disk_limit_hit,
        )
        if state is None or is_removing(state):
            lines: tuple[str, ...] = (VANISHED_LINE,)
        else:
            lines = await self._last_lines(container_id)
        self._record_exit(tracked, cause, code, lines, finished_at(state))
        await asyncio.to_thread(tracked.workdir.mark_reported)
        if not self._keep_workdirs:
            await self._remove(container_id, tracked.workdir)

    async def _watch_limits(self, tracked: Tracked, limits: LimitWatch) -> None:
        container_id = tracked.container.container_id
        pid = 0
        if container_id:
            try:
                info = await self._docker.containers.container(container_id).show()
                pid = int(info["State"].get("Pid") or 0)
            except (aiodocker.DockerError, aiohttp.ClientError) as exc:
                log.warning("cannot find the process of container %s: %s", container_id[:12], exc)
        if pid:
            limits.pids_dir = await asyncio.to_thread(pids_dir_of, pid)
            # One that ended already has no cgroup any more: nothing to watch.
            if limits.pids_dir is None and await asyncio.to_thread(Path(f"/proc/{pid}").exists):
                log.warning("no pids cgroup found for %s: its pids limit is not watched", pid)
        await limits.run(self._fork_bomb_stopper(tracked))

    async def _wait_for_end(self, container_id: str) -> Mapping[str, Any] | None:
        """Waits until the container does not run; returns its inspect State, or None when
        it was removed. Retries while the Docker engine is unreachable."""
        container = self._docker.containers.container(container_id)
        retry = _RETRY_FIRST
        while True:
            try:
                await container.wait()
                state: Mapping[str, Any] = (await container.show())["State"]
            except aiodocker.DockerError as exc:
                if exc.status == 404:
                    return None
                log.warning("waiting for container %s: %s", container_id[:12], exc)
            except aiohttp.ClientError as exc:
                log.warning("waiting for container %s: %s", container_id[:12], exc)
            else:
                if not is_running(state):
                    return state
            await asyncio.sleep(retry)
            retry = min(2 * retry, _RETRY_MAX)

    async def _last_lines(self, container_id: str) -> tuple[str, ...]:
        container = self._docker.containers.container(container_id)
        try:
            chunks = await container.log(stdout=True, stderr=True, tail=LAST_LINES)
        except (aiodocker.DockerError, aiohttp.ClientError) as exc:
            log.warning("cannot read the output of container %s: %s", container_id[:12], exc)
            return ()
        return last_lines("".join(chunks))

    async def _remove(self, container_id: str, workdir: WorkDir) -> None:
        if container_id:
            await self._remove_container(container_id)
        await asyncio.to_thread(workdir.remove)

    async def _remove_container(self, container_id: str) -> None:
        container = self._docker.containers.container(container_id)
        try:
            await container.delete(force=True)
        except aiodocker.DockerError as exc:
            if exc.status not in (404, 409):  # gone, or someone else is removing it
                log.warning("cannot remove container %s: %s", container_id[:12], exc)
        except aiohttp.ClientError as exc:
            log.warning("cannot remove container %s: %s", container_id[:12], exc)

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        connector, self._connector = self._connector, None
        if client is not None:
            await client.close()
        if connector is not None:
            await connector.close()


def _deadline(spec: LaunchSpec) -> datetime | None:
    """The run's absolute deadline, counted from now (its container's start)."""
    return datetime.now(UTC) + timedelta(seconds=spec.deadline) if spec.deadline else None


def _started(
    spec: LaunchSpec,
    container_id: str,
    workdir: WorkDir,
    started: datetime,
    deadline: datetime | None,
) -> Tracked:
    """A run's container just started, cold or from the warm pool."""
    return Tracked(
        container=Container.running(spec.run, container_id, BACKEND_NAME, started, deadline),
        workdir=workdir,
    )
