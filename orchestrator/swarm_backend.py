"""The swarm backend (DESIGN.md §7): each run's engine runs as the one task of a Docker Swarm
service, created through aiodocker on a manager's Docker socket. The service's spec and the
reading of its task: swarm_service.py (which also lists where the task's profile differs
from the docker backend's); what it shares with the docker backend: docker_engine.py.

A run's service is named after the run and the data dir (a relaunch finds it) and labelled
like the docker backend's containers: flnet.managed=true, flnet.run, flnet.tenant,
flnet.workdir (its work dir on the orchestrator's host, which says which orchestrator owns
it) and flnet.deadline; its task's container carries the same labels. The run credential is
a Swarm secret named like the service, labelled alike, mounted at
/run/secrets/flnet-credential; the work dir holds no credential.

Launch creates the secret and the service, then waits until the task runs (or already
ended): a task the swarm rejects fails the launch, NotFound (IMAGE_NOT_FOUND) when its node
lacks the image, LaunchFailed otherwise or when no node starts it within `start_timeout`.

Exit. The task is polled (GET /tasks); while its container runs on the orchestrator's own
node, ``docker wait`` on that container tells the end at once. An ended task is classified
by docker_state.py's rules from its container's inspect State when the container is on this
node (OOMKilled included), else from the task's exit code (swarm_service.py). Its last 50
lines come from the service's logs. After the EXITED event is published the service, its
secret, its container (which the swarm would remove a moment later) and the work dir are
removed; `keep_workdirs` keeps them all. A service removed behind the orchestrator's back
ends VANISHED with `SERVICE_VANISHED_LINE`, a container removed behind it with
docker_state.VANISHED_LINE.

StopRun and the deadline: SIGTERM, then SIGKILL after the grace, sent to the task's
container through this node's engine API, as the docker backend does. A task that has no
container on this node (it is not started yet, or runs on another node, whose engine the
orchestrator does not talk to) is ended by removing its service, its last lines read first:
the swarm then stops it with SIGTERM and SIGKILL after the service's stop grace period
(`kill_grace`, whatever StopRun's grace), and keeps the task until then, which is when its
exit is reported (the stop cause names it). While a task runs on this node its pids cgroup
is watched like the docker backend's (limit_watch.py).

Restart safety. Services belong to the swarm: a killed orchestrator leaves them running.
`start()` lists the services labelled flnet.managed=true and takes over those whose
flnet.workdir is one of its own work dirs:

- task running: re-attached: a RUNNING event, its exit watched and reported, its deadline
  re-armed from the flnet.deadline label (ended at once when already past);
- task ended, not yet reported: its EXITED event with the real cause and last lines, then
  removed;
- task ended and already reported (the previous process died before removing it, or kept
  it for keep_workdirs): removed without a second event, unless keep_workdirs;
- task not running yet, or rejected (the previous process died before its launch
  returned, so the launch failed): removed with its secret and work dir, without event.

Left alone (logged): services of other data dirs or with foreign labels, and ours whose
work dir is gone. Secrets of ours that no service uses any more are removed. Then the work
dirs no service claims, as the docker backend does: a run whose service was removed while
no orchestrator watched gets a VANISHED event; its work dir is removed.

At `close()` the running tasks are stopped like StopRun (STOPPED), unless it is told not to
end them: then they keep running and the next `start()` re-attaches them.

The orchestrator talks to a Swarm manager's engine (`docker_url`); it must be root (to give
the work dir to the engine's user). The work dir and the control plane's socket folder are
bind-mounted: on a swarm of several nodes, both paths must exist on every node a task may
run on (SWARM.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import aiodocker
import aiohttp

from .backend import Container, ContainerState, LaunchSpec, RunName
from .cgroups import pids_dir_of
from .docker_backend import DEFAULT_DOCKER_URL, docker_socket
from .docker_container import (
    ENGINE_GID,
    ENGINE_UID,
    LABEL_MANAGED,
    control_socket,
    image_of,
    labels,
    validate_limits,
)
from .docker_engine import check_launchable, engine_error, owned_run, sweep_workdirs
from .docker_state import VANISHED_LINE, deadline_of, exit_of, finished_at, started_at
from .errors import LaunchFailed, NotFound, Reason
from .events import EventLog
from .limit_watch import LimitWatch, stop_watching
from .output_tail import LAST_LINES, last_lines
from .supervisor import DEFAULT_KILL_GRACE, DEFAULT_MAX_EXITED, Supervisor, Tracked
from .swarm_service import (
    ENDED_STATES,
    REJECTED_STATE,
    RUNNING_STATE,
    SERVICE_VANISHED_LINE,
    STARTING_STATES,
    image_missing,
    latest_task,
    memory_limited,
    remote_exit_state,
    secret_id_of,
    service_name,
    service_spec,
    task_container,
    task_error,
    task_node,
    task_state,
    task_time,
)
from .workdir import WorkDir, runs_dir

log = logging.getLogger(__name__)

BACKEND_NAME = "swarm"
#: How long a launch waits for the swarm to start the run's task.
DEFAULT_START_TIMEOUT = 60.0
#: The first Engine API version that applies ContainerSpec.Privileges.NoNewPrivileges.
NO_NEW_PRIVILEGES_API = (1, 46)
# Task polls: while a launch waits for the start; after this node's container ended, until
# the swarm records the task's end; while the task runs on another node.
_POLL_START, _POLL_ENDING, _POLL_REMOTE = 0.1, 0.05, 1.0
# Retry delays while the engine is unreachable (dockerd restarting).
_RETRY_FIRST, _RETRY_MAX = 0.5, 10.0


class _ServiceGone(Exception):
    """The run's service does not exist (any more)."""


@dataclass(eq=False, kw_only=True)
class SwarmTracked(Tracked):
    """A run's service and what is known of its task."""

    service_id: str
    secret_id: str = ""
    task_id: str = ""
    node_id: str = ""
    memory_limit: bool = False
    # Read before the orchestrator removed the service to end the task (module doc).
    saved_lines: tuple[str, ...] | None = None


class SwarmBackend(Supervisor[SwarmTracked]):
    """Runs engines as Docker Swarm services. Create it anywhere; `start()`, use and
    `close()` it inside one event loop.

    `docker_url` is a Swarm manager's unix socket; `engine_command` replaces the image's CMD
    (tests); `constraints` are Swarm placement constraints of every run's task (e.g.
    "node.labels.flnet==true"); `start_timeout` bounds a launch's wait for its task.
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
        constraints: Sequence[str] = (),
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        super().__init__(BACKEND_NAME, events, kill_grace=kill_grace, max_exited=max_exited)
        self._runs_dir = runs_dir(data_dir)
        self._socket = docker_socket(docker_url)
        self._engine_command = tuple(engine_command) if engine_command else None
        self._keep_workdirs = keep_workdirs
        self._constraints = tuple(constraints)
        self._start_timeout = start_timeout
        self._client: aiodocker.Docker | None = None
        self._connector: aiohttp.UnixConnector | None = None
        self._host_cpus = os.cpu_count() or 1
        self._node_id = ""

    @property
    def runs_dir(self) -> Path:
        """Parent of the per-run work dirs."""
        return self._runs_dir

    @property
    def node_id(self) -> str:
        """The swarm node id of the engine at `docker_url` (known once started)."""
        return self._node_id

    @property
    def _docker(self) -> aiodocker.Docker:
        if self._client is None:
            raise RuntimeError("the swarm backend is not started")
        return self._client

    # -- Backend protocol ------------------------------------------------------------------

    async def start(self) -> None:
        """Connects to the manager's Docker engine (OSError when it is unreachable or not a
        Swarm manager), then takes over the services and work dirs an earlier orchestrator
        process left (module doc)."""
        # No connection limit: every task running on this node holds one for its wait.
        self._connector = aiohttp.UnixConnector(path=self._socket, limit=0)
        # With its own connector aiodocker needs the host name it gives unix sockets.
        self._client = aiodocker.Docker(url="unix://localhost", connector=self._connector)
        try:
            info = await self._client.system.info()
            swarm: Mapping[str, Any] = info.get("Swarm") or {}
            if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
                raise OSError(
                    f"the Docker engine at unix://{self._socket} is not a Swarm manager "
                    "(docker swarm init, or a manager's socket as docker_url)"
                )
            self._node_id = str(swarm.get("NodeID") or "")
            self._host_cpus = int(info.get("NCPU") or self._host_cpus)
            version = await self._client.version()
            api = str(version.get("ApiVersion") or "0.0")
            log.info(
                "Docker engine %s (API %s), swarm node %s, at unix://%s",
                version.get("Version"),
                api,
                self._node_id,
                self._socket,
            )
            if _api_tuple(api) < NO_NEW_PRIVILEGES_API:
                log.warning(
                    "Engine API %s < %d.%d: swarm tasks run without no-new-privileges",
                    api,
                    *NO_NEW_PRIVILEGES_API,
                )
            await self._reconcile()
        except (OSError, aiodocker.DockerError, aiohttp.ClientError) as exc:
            await self.close(0.0, end_engines=False)
            if isinstance(exc, OSError):
                raise
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
            name = service_name(workdir, spec.run)
            # A service of an earlier orchestrator process has a work dir (made before the
            # service); a fresh run has none, and skips the lookup.
            if await asyncio.to_thread(workdir.exists):
                found = await self._take_over_named(name, spec.run, workdir)
                if found is not None:
                    return found.container
            await check_launchable(self._docker, image, socket)
            return await self._create(spec, image, socket, workdir, name)

    async def close(self, grace: float, *, end_engines: bool = True) -> None:
        try:
            await super().close(grace, end_engines=end_engines)
        finally:
            await self._close_client()

    # -- launch ----------------------------------------------------------------------------

    async def _create(
        self, spec: LaunchSpec, image: str, socket: Path, workdir: WorkDir, name: str
    ) -> Container:
        deadline = datetime.now(UTC) + timedelta(seconds=spec.deadline) if spec.deadline else None
        secret_id = service_id = ""
        # Set while a create is under way: cancelled then, it may have happened nonetheless.
        creating = False
        try:
            await asyncio.to_thread(workdir.remove)  # a leftover first
            # The credential travels as the secret only: the work dir's file stays empty.
            await asyncio.to_thread(workdir.prepare, "", (ENGINE_UID, ENGINE_GID))
            await self._delete_secret(name)  # of a launch an earlier process did not finish
            creating = True
            secret = await self._docker.secrets.create(
                name, spec.credential, labels=labels(spec.run, workdir, deadline)
            )
            secret_id, creating = str(secret["ID"]), False
            body = service_spec(
                spec,
                name=name,
                image=image,
                workdir=workdir,
                socket=socket,
                deadline=deadline,
                host_cpus=self._host_cpus,
                stop_grace=self._kill_grace,
                secret_id=secret_id,
                constraints=self._constraints,
                command=self._engine_command,
            )
            started = datetime.now(UTC)
            creating = True
            service = await self._docker.services.create(
                body.task_template, name=body.name, labels=body.labels, mode=body.mode
            )
            service_id, creating = str(service["ID"]), False
            task = await self._wait_until_started(service_id)
        except BaseException as exc:
            # Cancelled (the caller went away) or failed: nothing of the run may stay behind
            # (the swarm removes the task's container, if it made one, with the service).
            if creating and not isinstance(exc, aiodocker.DockerError):
                await self._delete_unanswered(name, secret_id)
            await self._remove(service_id, secret_id, workdir)
            # aiohttp's connection errors are OSErrors too: the engine's errors first.
            if isinstance(exc, aiodocker.DockerError | aiohttp.ClientError):
                log.error("cannot start the service of %s: %s", spec.run, exc)
                raise engine_error(exc, "cannot start the run's service") from exc
            if isinstance(exc, OSError):
                log.error("cannot prepare the work dir of %s: %s", spec.run, exc)
                raise LaunchFailed(
                    f"cannot prepare the work dir: {exc.strerror or exc}", Reason.LAUNCH_FAILED
                ) from exc
            raise
        container_id, node_id = _where(task)
        tracked = SwarmTracked(
            container=Container.running(spec.run, container_id, BACKEND_NAME, started, deadline),
            workdir=workdir,
            service_id=service_id,
            secret_id=secret_id,
            task_id=str(task.get("ID") or ""),
            node_id=node_id,
            memory_limit=bool(spec.limits.memory_bytes),
        )
        log.info(
            "started %s as service %s (%s), task on node %s",
            spec.run,
            name,
            service_id[:12],
            node_id[:12],
        )
        self._track(tracked)
        return tracked.container

    async def _wait_until_started(self, service_id: str) -> Mapping[str, Any]:
        """The service's task once it runs (or already ended); raises when the swarm rejects
        it or does not start it within `start_timeout`."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._start_timeout
        while True:
            try:
                task = await self._task(service_id)
            except _ServiceGone:
                raise LaunchFailed(
                    "the run's service was removed while it started", Reason.LAUNCH_FAILED
                ) from None
            state = task_state(task) if task is not None else "new"
            if task is not None and image_missing(task):
                image = task["Spec"]["ContainerSpec"]["Image"]
                raise NotFound(
                    f"image {image} is not on the swarm node {task_node(task)}",
                    Reason.IMAGE_NOT_FOUND,
                    metadata={"image_digest": image},
                )
            if task is not None and state == REJECTED_STATE:
                raise LaunchFailed(
                    f"the swarm could not start the run: {task_error(task)}", Reason.LAUNCH_FAILED
                )
            if task is not None and (state == RUNNING_STATE or state in ENDED_STATES):
                return task
            if loop.time() >= give_up:
                why = task_error(task) if task is not None else "no task"
                raise LaunchFailed(
                    f"no swarm node started the run within {self._start_timeout:g} s "
                    f"({state}: {why})",
                    Reason.LAUNCH_FAILED,
                )
            await asyncio.sleep(_POLL_START)

    # -- taking over services of an earlier orchestrator process ---------------------------

    async def _reconcile(self) -> None:
        found = await self._docker.services.list(filters={"label": f"{LABEL_MANAGED}=true"})
        claimed: set[Path] = set()
        names: set[str] = set()
        for service in found:
            names.add(str(service["Spec"].get("Name", "")))
            owned = owned_run(service["Spec"].get("Labels") or {}, self._runs_dir)
            if owned is None:
                log.debug("service %s is not this orchestrator's: left alone", service["ID"][:12])
                continue
            run, workdir = owned
            claimed.add(workdir.path)
            await self._take_over(service, run, workdir)
        await self._delete_stray_secrets(names)
        vanished = await sweep_workdirs(
            self._runs_dir,
            claimed,
            keep_workdirs=self._keep_workdirs,
            tracked=lambda run: self._find(run) is not None,
        )
        for run, workdir in vanished:
            log.warning("the service of %s disappeared while no orchestrator watched", run)
            tracked = SwarmTracked(
                container=Container(
                    run=run, container_id="", backend=BACKEND_NAME, state=ContainerState.RUNNING
                ),
                workdir=workdir,
                service_id="",
            )
            self._track(tracked, running=False)
        log.info("reconciled: %d running task(s) re-attached", len(await self.list()))

    async def _take_over_named(
        self, name: str, run: RunName, workdir: WorkDir
    ) -> SwarmTracked | None:
        """At launch: the run's service left by an earlier orchestrator process, if any. An
        ended one is returned once its exit is reported."""
        try:
            service = await self._docker.services.inspect(name)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return None
            raise engine_error(exc, "cannot look for the run's service") from exc
        except aiohttp.ClientError as exc:
            raise engine_error(exc, "cannot look for the run's service") from exc
        if owned_run(service["Spec"].get("Labels") or {}, self._runs_dir) != (run, workdir):
            return None  # not ours: creating the run's service will fail
        taken = await self._take_over(service, run, workdir, relaunch=True)
        if taken is None:
            return None
        tracked, running = taken
        if not running:
            await tracked.exited.wait()
        return tracked

    async def _take_over(
        self,
        service: Mapping[str, Any],
        run: RunName,
        workdir: WorkDir,
        *,
        relaunch: bool = False,
    ) -> tuple[SwarmTracked, bool] | None:
        """Takes over one of our services (module doc); returns it when now tracked, and
        whether its task runs."""
        service_id = str(service["ID"])
        secret_id = secret_id_of(service)
        if not await asyncio.to_thread(workdir.exists):
            log.warning(
                "service %s of %s: its work dir %s is gone: left alone",
                service_id[:12],
                run,
                workdir.path,
            )
            return None
        try:
            task = await self._task(service_id)
        except _ServiceGone:
            return None  # removed meanwhile: its work dir is swept
        state = task_state(task) if task is not None else "new"
        container_id, node_id = ("", "") if task is None else _where(task)
        if state in STARTING_STATES or state == REJECTED_STATE:
            log.info("removing service %s of %s, never started", service_id[:12], run)
            await self._remove(service_id, secret_id, workdir, container_id, node_id)
            return None
        running = state == RUNNING_STATE
        if not running and await asyncio.to_thread(workdir.reported):
            # Reported by an earlier process, which died (or kept it) before removing it.
            if relaunch or not self._keep_workdirs:
                await self._remove(service_id, secret_id, workdir, container_id, node_id)
            return None
        assert task is not None  # a task that is neither starting nor missing
        tracked = SwarmTracked(
            container=Container.running(
                run,
                container_id,
                BACKEND_NAME,
                await self._started_at(task),
                deadline_of(service["Spec"].get("Labels") or {}),
            ),
            workdir=workdir,
            stop_cause=await asyncio.to_thread(workdir.stop_cause),
            service_id=service_id,
            secret_id=secret_id,
            task_id=str(task.get("ID") or ""),
            node_id=node_id,
            memory_limit=memory_limited(service),
        )
        log.info("taking over service %s of %s (task %s)", service_id[:12], run, state)
        # An ended one gets its EXITED event only: it is reported, not re-announced.
        self._track(tracked, running=running)
        return tracked, running

    async def _started_at(self, task: Mapping[str, Any]) -> datetime | None:
        """When the task's container started: its inspect State on this node, else when the
        task reached its state (running, for a running one)."""
        state = await self._container_state(task)
        return started_at(state) or task_time(task)

    async def _delete_stray_secrets(self, services: set[str]) -> None:
        """Removes our secrets whose service is gone (an orchestrator died between creating
        the secret and the service, or between removing the service and the secret)."""
        secrets = await self._docker.secrets.list(filters={"label": f"{LABEL_MANAGED}=true"})
        for secret in secrets:
            spec: Mapping[str, Any] = secret.get("Spec") or {}
            name = str(spec.get("Name", ""))
            if owned_run(spec.get("Labels") or {}, self._runs_dir) and name not in services:
                log.info("removing secret %s, of no service", name)
                await self._delete_secret(str(secret["ID"]))

    # -- watching and ending ---------------------------------------------------------------

    async def _signal(self, tracked: SwarmTracked, sig: signal.Signals) -> None:
        if not tracked.service_id:
            return
        try:
            task = await self._task(tracked.service_id)
        except _ServiceGone:
            return
        except (aiodocker.DockerError, aiohttp.ClientError) as exc:
            log.warning("cannot send %s to %s: %s", sig.name, tracked.container.run, exc)
            return
        if task is not None and task_state(task) in ENDED_STATES:
            return
        if task is not None:
            self._note(tracked, task)
        container_id, node_id = ("", "") if task is None else _where(task)
        if task is not None and task_state(task) == RUNNING_STATE and node_id == self._node_id:
            try:
                await self._docker.containers.container(container_id).kill(signal=sig.name)
                return
            except aiodocker.DockerError as exc:
                if exc.status == 404:
                    return  # gone: the task ends
                if exc.status != 409:  # 409: not running (yet, or any more): removed below
                    log.warning("cannot send %s to %s: %s", sig.name, tracked.container.run, exc)
                    return
            except aiohttp.ClientError as exc:
                log.warning("cannot send %s to %s: %s", sig.name, tracked.container.run, exc)
                return
        # No container of this node's: the swarm ends the task as it removes the service.
        log.info("%s: removing service %s to end its task", tracked.container.run, sig.name)
        tracked.saved_lines = await self._last_lines(tracked.service_id)
        await self._delete_service(tracked.service_id)

    async def _watch(self, tracked: SwarmTracked) -> None:
        limits = LimitWatch()
        watching = asyncio.create_task(self._watch_limits(tracked, limits))
        try:
            task = await self._wait_for_end(tracked) if tracked.service_id else None
        finally:
            await stop_watching(watching)
        self._ended(tracked)
        end_time = task_time(task) if task is not None else None
        state: Mapping[str, Any] | None
        lines: tuple[str, ...]
        if task is None:
            state = None
            lines = (SERVICE_VANISHED_LINE,)
        elif task_node(task) == self._node_id:
            state = await self._container_state(task)
            lines = (VANISHED_LINE,)  # when its container is gone
        else:
            state = remote_exit_state(
                task, memory_limit=tracked.memory_limit, stopping=tracked.stop_cause is not None
            )
            lines = (f"flnet: the swarm ended the task: {task_error(task)}",)
        if state is not None:
            lines = await self._last_lines(tracked.service_id)
            end_time = finished_at(state) or end_time
        if tracked.saved_lines is not None:
            lines = tracked.saved_lines
        cause, code = exit_of(state, tracked.stop_cause, pids_limit_hit=limits.pids_limit_hit)
        self._record_exit(tracked, cause, code, lines, end_time)
        await asyncio.to_thread(tracked.workdir.mark_reported)
        if not self._keep_workdirs:
            await self._remove(
                tracked.service_id,
                tracked.secret_id,
                tracked.workdir,
                tracked.container.container_id,
                tracked.node_id,
            )

    async def _watch_limits(self, tracked: SwarmTracked, limits: LimitWatch) -> None:
        """The pids cgroup of a task running on this node (none to watch elsewhere)."""
        container_id = tracked.container.container_id
        if container_id and tracked.node_id == self._node_id:
            try:
                info = await self._docker.containers.container(container_id).show()
                pid = int(info["State"].get("Pid") or 0)
            except (aiodocker.DockerError, aiohttp.ClientError) as exc:
                log.warning("cannot find the process of container %s: %s", container_id[:12], exc)
                pid = 0
            if pid:
                limits.pids_dir = await asyncio.to_thread(pids_dir_of, pid)
        await limits.run(self._fork_bomb_stopper(tracked))

    async def _wait_for_end(self, tracked: SwarmTracked) -> Mapping[str, Any] | None:
        """Waits until the service's task has ended and returns it; None when the service
        was removed behind the orchestrator's back, or when the task is gone too after the
        orchestrator removed the service to end it. Retries while the Docker engine is
        unreachable."""
        retry = _RETRY_FIRST
        while True:
            try:
                task = await self._ending_task(tracked)
            except _ServiceGone:
                return None
            except (aiodocker.DockerError, aiohttp.ClientError) as exc:
                log.warning("watching service %s: %s", tracked.service_id[:12], exc)
                await asyncio.sleep(retry)
                retry = min(2 * retry, _RETRY_MAX)
                continue
            retry = _RETRY_FIRST
            if task is None:
                await asyncio.sleep(_POLL_START)
                continue
            self._note(tracked, task)
            state = task_state(task)
            if state in ENDED_STATES:
                return task
            if state == RUNNING_STATE and tracked.node_id == self._node_id:
                await self._wait_container(tracked.container.container_id)
                await asyncio.sleep(_POLL_ENDING)
            elif state in STARTING_STATES or tracked.saved_lines is not None:
                # The swarm drops a removed service's task soon after it ended: look often.
                await asyncio.sleep(_POLL_START)
            else:
                await asyncio.sleep(_POLL_REMOTE)

    async def _ending_task(self, tracked: SwarmTracked) -> Mapping[str, Any] | None:
        """The service's task. Once the orchestrator removed the service to end it, the
        task itself: the swarm keeps it until it has stopped it (SIGTERM, SIGKILL after the
        stop grace period). Raises _ServiceGone when neither is to be found."""
        try:
            return await self._task(tracked.service_id)
        except _ServiceGone:
            if tracked.saved_lines is None or not tracked.task_id:
                raise
        try:
            task: Mapping[str, Any] = await self._docker.tasks.inspect(tracked.task_id)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                raise _ServiceGone(tracked.service_id) from exc
            raise
        return task

    def _note(self, tracked: SwarmTracked, task: Mapping[str, Any]) -> None:
        """Keeps where the task's container is (the swarm tells once the node made it)."""
        container_id, node_id = _where(task)
        tracked.task_id = str(task.get("ID") or tracked.task_id)
        tracked.node_id = node_id or tracked.node_id
        if container_id and container_id != tracked.container.container_id:
            tracked.container = replace(tracked.container, container_id=container_id)

    async def _wait_container(self, container_id: str) -> None:
        """Returns once this node's container does not run (or is gone)."""
        try:
            await self._docker.containers.container(container_id).wait()
        except (aiodocker.DockerError, aiohttp.ClientError) as exc:
            if not isinstance(exc, aiodocker.DockerError) or exc.status != 404:
                log.warning("waiting for container %s: %s", container_id[:12], exc)
                await asyncio.sleep(_POLL_REMOTE)

    async def _task(self, service_id: str) -> Mapping[str, Any] | None:
        """The service's task; None before the swarm made it. Raises _ServiceGone."""
        try:
            tasks = await self._docker.tasks.list(filters={"service": service_id})
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                raise _ServiceGone(service_id) from exc
            raise
        return latest_task(tasks)

    async def _container_state(self, task: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The inspect State of the task's container when it is on this node; None when it
        is elsewhere or gone."""
        container_id, node_id = _where(task)
        if not container_id or node_id != self._node_id:
            return None
        try:
            info = await self._docker.containers.container(container_id).show()
        except (aiodocker.DockerError, aiohttp.ClientError) as exc:
            if not isinstance(exc, aiodocker.DockerError) or exc.status != 404:
                log.warning("cannot inspect container %s: %s", container_id[:12], exc)
            return None
        state: Mapping[str, Any] = info["State"]
        return state

    async def _last_lines(self, service_id: str) -> tuple[str, ...]:
        try:
            # Without `follow`, aiodocker returns a coroutine of the lines' chunks.
            chunks = await cast(
                Awaitable[list[str]],
                self._docker.services.logs(
                    service_id, stdout=True, stderr=True, tail=str(LAST_LINES)
                ),
            )
        except (aiodocker.DockerError, aiohttp.ClientError) as exc:
            log.warning("cannot read the output of service %s: %s", service_id[:12], exc)
            return ()
        return last_lines("".join(chunks))

    async def _remove(
        self,
        service_id: str,
        secret_id: str,
        workdir: WorkDir,
        container_id: str = "",
        node_id: str = "",
    ) -> None:
        """Removes what a run left: service, secret, its container (on this node: the
        swarm would only remove it a moment later) and work dir."""
        if service_id:
            await self._delete_service(service_id)
        if secret_id:
            await self._delete_secret(secret_id)
        if container_id and node_id == self._node_id:
            await self._delete_container(container_id)
        await asyncio.to_thread(workdir.remove)

    async def _delete_unanswered(self, name: str, secret_id: str) -> None:
        """After a create of the secret (`secret_id` "") or of the service `name` whose answer
        never came: removes what it made (a service is ours when it uses our secret)."""
        if not secret_id:
            await self._delete_secret(name)
            return
        try:
            service = await self._docker.services.inspect(name)
        except (aiodocker.DockerError, aiohttp.ClientError) as exc:
            if not isinstance(exc, aiodocker.DockerError) or exc.status != 404:
                log.warning("cannot look for service %s: %s", name, exc)
            return
        if secret_id_of(service) == secret_id:
            await self._delete_service(str(service["ID"]))

    async def _delete_service(self, service_id: str) -> None:
        try:
            await self._docker.services.delete(service_id)
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                log.warning("cannot remove service %s: %s", service_id[:12], exc)
        except aiohttp.ClientError as exc:
            log.warning("cannot remove service %s: %s", service_id[:12], exc)

    async def _delete_secret(self, secret: str) -> None:
        """Removes a secret by id or name; one that does not exist is fine."""
        try:
            await self._docker.secrets.delete(secret)
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                log.warning("cannot remove secret %s: %s", secret[:12], exc)
        except aiohttp.ClientError as exc:
            log.warning("cannot remove secret %s: %s", secret[:12], exc)

    async def _delete_container(self, container_id: str) -> None:
        try:
            await self._docker.containers.container(container_id).delete(force=True)
        except aiodocker.DockerError as exc:
            if exc.status not in (404, 409):  # gone, or the swarm is removing it
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


def _where(task: Mapping[str, Any]) -> tuple[str, str]:
    """The task's container id and node id ("" while unknown)."""
    return task_container(task), task_node(task)


def _api_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)
