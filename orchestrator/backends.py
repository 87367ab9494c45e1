"""The registry of backends: each name with the factory that makes it. The one list of what
an orchestrator can run engines on (its settings, OrchestratorApp and `flnet up` read it).
Factories import their backend when called, so that reading the names costs nothing (no
Docker client, no gRPC)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backend import Backend
    from .events import EventLog


@dataclass(frozen=True)
class BackendOptions:
    """What OrchestratorApp gives the backend it makes (a backend ignores what it has no use
    for: the process backend, the Docker socket)."""

    data_dir: str | os.PathLike[str]
    engine_command: Sequence[str] | None
    kill_grace: float
    keep_workdirs: bool
    docker_url: str
    # Process backend: a cgroup per run where the machine allows it.
    cgroups: bool = True
    # Swarm backend: placement constraints of every run's task ("node.labels.flnet==true").
    swarm_constraints: tuple[str, ...] = ()
    # Docker backend: standby containers for the next launches (docker_pool.py).
    warm_pool: int = 0


def _process(events: EventLog, options: BackendOptions) -> Backend:
    from .process_backend import ProcessBackend  # noqa: PLC0415 (see the module doc)

    return ProcessBackend(
        options.data_dir,
        events,
        engine_command=options.engine_command,
        kill_grace=options.kill_grace,
        keep_workdirs=options.keep_workdirs,
        cgroups=options.cgroups,
    )


def _docker(events: EventLog, options: BackendOptions) -> Backend:
    from .docker_backend import DockerBackend  # noqa: PLC0415 (see the module doc)

    return DockerBackend(
        options.data_dir,
        events,
        docker_url=options.docker_url,
        engine_command=options.engine_command,
        kill_grace=options.kill_grace,
        keep_workdirs=options.keep_workdirs,
        warm_pool=options.warm_pool,
    )


def _swarm(events: EventLog, options: BackendOptions) -> Backend:
    from .swarm_backend import SwarmBackend  # noqa: PLC0415 (see the module doc)

    return SwarmBackend(
        options.data_dir,
        events,
        docker_url=options.docker_url,
        engine_command=options.engine_command,
        kill_grace=options.kill_grace,
        keep_workdirs=options.keep_workdirs,
        constraints=options.swarm_constraints,
    )


BackendFactory = Callable[["EventLog", BackendOptions], "Backend"]

#: Backend name → factory; the first is the default.
BACKENDS: dict[str, BackendFactory] = {"process": _process, "docker": _docker, "swarm": _swarm}
DEFAULT_BACKEND = next(iter(BACKENDS))


def make_backend(name: str, events: EventLog, options: BackendOptions) -> Backend:
    """The backend `name` (raises ValueError naming the known ones)."""
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}") from None
    return factory(events, options)
