"""OrchestratorApp: the orchestrator's server, assembled (DESIGN.md §1, §7).

Interceptor chain, outermost first: the error mapping, then the authorization interceptor
given to the app (`auth`: every call needs the control plane's service token, audience
flnet-orchestrator, scope orchestrator; health and reflection need nothing).

Start (`start()`): the backend starts first (the docker backend connects to the Docker
engine and re-attaches the containers an earlier process left), then the server serves.

Graceful stop (`stop()`): the event log is closed first, so that open WatchContainers
streams end at once with UNAVAILABLE (watchers resume elsewhere with after_sequence)
instead of holding the server for the whole grace; then the server stops (health
NOT_SERVING, no new calls, in-flight calls get `stop_grace` seconds); then the engines
still running are terminated: SIGTERM, SIGKILL after `kill_grace` seconds (with the docker
backend and `detach_on_stop`, containers keep running instead, for the next start to
re-attach). Their exits are recorded but no longer streamed: after a restart the control
plane reconciles with ListRunContainers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from flnet.server.auth import AuthInterceptor
from flnet.server.interceptors import ErrorMapper
from flnet.server.serving import Server

from .backend import Backend
from .backends import BACKENDS, DEFAULT_BACKEND, BackendOptions, make_backend
from .docker_backend import DEFAULT_DOCKER_URL, docker_socket
from .errors import DOMAIN
from .events import DEFAULT_CAPACITY, EventLog
from .service import SERVICE_NAME, OrchestratorService
from .supervisor import DEFAULT_KILL_GRACE

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:50052"
DEFAULT_STOP_GRACE = 5.0


class OrchestratorApp:
    """The orchestrator server with its backend. Construct anywhere; `start()` and `stop()`
    inside the event loop that serves.

    - `data_dir`: root of the platform's data; work dirs go under `orchestrator/runs/`.
    - `backend`: a name of backends.BACKENDS: "process" (local subprocesses, development)
      or "docker" (containers).
    - `engine_command`: the engine's argv (process default ``[sys.executable, "-m",
      "flnet.runtime"]``; docker default: the image's CMD, which it replaces).
    - `kill_grace`: seconds between SIGTERM and SIGKILL at a deadline, at shutdown, and for
      StopRun without grace_period.
    - `keep_workdirs`: keep exited runs' work dirs, and with docker their containers
      (debugging).
    - `docker_url`: the Docker engine's unix socket (docker backend).
    - `detach_on_stop`: docker backend: `stop()` leaves running containers running; the
      next start re-attaches them.
    - `cgroups`: process backend: give each run a cgroup (resident memory and pids limits)
      where the machine allows it; False: rlimits only.
    - `auth`: the authorization interceptor (flnet.server.auth); closed at `stop()`.
    - `stop_grace`: seconds in-flight calls get at `stop()`.
    - `event_capacity`: events the WatchContainers log retains.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        backend: str = DEFAULT_BACKEND,
        engine_command: Sequence[str] | None = None,
        kill_grace: float = DEFAULT_KILL_GRACE,
        keep_workdirs: bool = False,
        docker_url: str = DEFAULT_DOCKER_URL,
        detach_on_stop: bool = False,
        cgroups: bool = True,
        auth: AuthInterceptor,
        stop_grace: float = DEFAULT_STOP_GRACE,
        event_capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
        if detach_on_stop and backend != "docker":
            raise ValueError("detach_on_stop needs the docker backend (dockerd keeps containers)")
        if backend == "docker":
            docker_socket(docker_url)  # ValueError now rather than at start
        self._data_dir = data_dir
        self._backend_name = backend
        self._engine_command = list(engine_command) if engine_command else None
        self._kill_grace = kill_grace
        self._keep_workdirs = keep_workdirs
        self._docker_url = docker_url
        self._detach_on_stop = detach_on_stop
        self._cgroups = cgroups
        self._auth = auth
        self._stop_grace = stop_grace
        self._event_capacity = event_capacity
        self._events: EventLog | None = None
        self._backend: Backend | None = None
        self._server: Server | None = None

    @property
    def port(self) -> int:
        """The bound port once started (useful with port 0)."""
        return self._server.port if self._server is not None else 0

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise RuntimeError("the app is not started")
        return self._backend

    @property
    def events(self) -> EventLog:
        if self._events is None:
            raise RuntimeError("the app is not started")
        return self._events

    def _make_backend(self, events: EventLog) -> Backend:
        options = BackendOptions(
            data_dir=self._data_dir,
            engine_command=self._engine_command,
            kill_grace=self._kill_grace,
            keep_workdirs=self._keep_workdirs,
            docker_url=self._docker_url,
            cgroups=self._cgroups,
        )
        return make_backend(self._backend_name, events, options)

    async def start(self, listen: str = DEFAULT_LISTEN) -> int:
        """Starts serving on `listen` ("host:port"; port 0 picks one) and returns the port."""
        if self._server is not None:
            raise RuntimeError("already started")
        events = EventLog(self._event_capacity)
        backend = self._make_backend(events)
        await backend.start()
        service = OrchestratorService(backend)
        server = Server(
            [SERVICE_NAME],
            service.register,
            interceptors=[ErrorMapper(DOMAIN), self._auth],
        )
        try:
            port = await server.start(listen)
        except BaseException:
            # Re-attached containers outlive a failed start; the next start takes them.
            await backend.close(self._kill_grace, end_engines=False)
            raise
        self._events, self._backend, self._server = events, backend, server
        log.info(
            "orchestrator (%s backend) listening on %s, port %d", self._backend.name, listen, port
        )
        return port

    async def stop(self) -> None:
        """Graceful stop; see the module docstring. Safe to call twice."""
        server, self._server = self._server, None
        if self._events is not None:
            self._events.close()
        if server is not None:
            await server.stop(self._stop_grace)
        if self._backend is not None:
            await self._backend.close(self._kill_grace, end_engines=not self._detach_on_stop)
        await self._auth.close()
        log.info("orchestrator stopped")
