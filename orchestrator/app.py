"""OrchestratorApp: the orchestrator process, assembled (DESIGN.md §1, §7): a backend that
runs engines, and the control link that attaches it to the control plane. The orchestrator
serves nothing: it dials the control plane, which places runs on it.

Start (`start()`): the backend starts first (the docker backend connects to the Docker
engine and re-attaches the containers an earlier process left), then the link dials the
control plane, registering with the containers the backend has.

Graceful stop (`stop()`): the link closes first (the control plane sees the orchestrator
detach: its runs carry on within its lease, and none is placed on it), then the engines
still running are terminated: SIGTERM, SIGKILL after `kill_grace` seconds (with the docker
backend and `detach_on_stop`, containers keep running instead, for the next start to
re-attach and report)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from flnet.channels import TokenSource

from .backend import Backend
from .backends import BACKENDS, DEFAULT_BACKEND, BackendOptions, make_backend
from .docker_backend import DEFAULT_DOCKER_URL, docker_socket
from .events import DEFAULT_CAPACITY, EventLog
from .link import ControlLink, Identity
from .supervisor import DEFAULT_KILL_GRACE

log = logging.getLogger(__name__)

# Backends whose containers belong to a Docker engine (they outlive the orchestrator).
DOCKER_BACKENDS = ("docker", "swarm")


class OrchestratorApp:
    """The orchestrator with its backend. Construct anywhere; `start()` and `stop()` inside
    the event loop that runs it.

    - `data_dir`: root of the platform's data; work dirs go under `orchestrator/runs/`.
    - `control_address`: the control plane to attach to; `token`: the orchestrator's
      client-credentials token (scope orchestrator); `identity`: its name, capacity and
      labels; `engine_address`: where its engines reach the control plane, when not where
      the control plane says (another host's view of it).
    - `backend`: a name of backends.BACKENDS.
    - `engine_command`: the engine's argv (process default ``[sys.executable, "-m",
      "flnet.runtime"]``; docker default: the image's CMD, which it replaces).
    - `kill_grace`: seconds between SIGTERM and SIGKILL at a deadline, at shutdown, and for
      a stop without grace period.
    - `keep_workdirs`: keep exited runs' work dirs, and with docker their containers.
    - `docker_url`: the Docker engine's unix socket (docker, swarm).
    - `detach_on_stop`: docker backends: `stop()` leaves running containers running; the
      next start re-attaches them.
    - `cgroups`: process backend: give each run a cgroup where the machine allows it.
    - `swarm_constraints`: swarm backend: placement constraints of every run's service.
    - `warm_pool`: docker backend: standby containers for the next launches (docker_pool.py).
    - `event_capacity`: container events the backend's log retains.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        control_address: str,
        token: TokenSource,
        identity: Identity,
        engine_address: str = "",
        backend: str = DEFAULT_BACKEND,
        engine_command: Sequence[str] | None = None,
        kill_grace: float = DEFAULT_KILL_GRACE,
        keep_workdirs: bool = False,
        docker_url: str = DEFAULT_DOCKER_URL,
        detach_on_stop: bool = False,
        cgroups: bool = True,
        swarm_constraints: Sequence[str] = (),
        warm_pool: int = 0,
        event_capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
        if detach_on_stop and backend not in DOCKER_BACKENDS:
            raise ValueError("detach_on_stop needs a Docker backend (dockerd keeps containers)")
        if backend in DOCKER_BACKENDS:
            docker_socket(docker_url)  # ValueError now rather than at start
        self._data_dir = data_dir
        self._control_address = control_address
        self._token = token
        self._identity = identity
        self._engine_address = engine_address
        self._backend_name = backend
        self._engine_command = list(engine_command) if engine_command else None
        self._kill_grace = kill_grace
        self._keep_workdirs = keep_workdirs
        self._docker_url = docker_url
        self._detach_on_stop = detach_on_stop
        self._cgroups = cgroups
        self._swarm_constraints = tuple(swarm_constraints)
        self._warm_pool = warm_pool
        self._event_capacity = event_capacity
        self._events: EventLog | None = None
        self._backend: Backend | None = None
        self._link: ControlLink | None = None

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise RuntimeError("the app is not started")
        return self._backend

    @property
    def link(self) -> ControlLink:
        if self._link is None:
            raise RuntimeError("the app is not started")
        return self._link

    @property
    def events(self) -> EventLog:
        if self._events is None:
            raise RuntimeError("the app is not started")
        return self._events

    async def start(self) -> None:
        if self._backend is not None:
            raise RuntimeError("already started")
        events = EventLog(self._event_capacity)
        options = BackendOptions(
            data_dir=self._data_dir,
            engine_command=self._engine_command,
            kill_grace=self._kill_grace,
            keep_workdirs=self._keep_workdirs,
            docker_url=self._docker_url,
            cgroups=self._cgroups,
            swarm_constraints=self._swarm_constraints,
            warm_pool=self._warm_pool,
        )
        backend = make_backend(self._backend_name, events, options)
        await backend.start()
        link = ControlLink(
            backend,
            self._identity,
            self._control_address,
            self._token,
            engine_address=self._engine_address,
        )
        link.start()
        self._events, self._backend, self._link = events, backend, link
        log.info(
            "orchestrator %s (%s backend) attaching to %s",
            self._identity.name,
            backend.name,
            self._control_address,
        )

    async def stop(self) -> None:
        """Graceful stop; see the module docstring. Safe to call twice."""
        link, self._link = self._link, None
        if link is not None:
            await link.close()
        if self._events is not None and not self._events.closed:
            self._events.close()
            if self._backend is not None:
                await self._backend.close(self._kill_grace, end_engines=not self._detach_on_stop)
            log.info("orchestrator stopped")
