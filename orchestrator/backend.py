"""Domain types of the orchestrator and the `Backend` protocol every backend (process,
docker, ...) implements. The servicer only talks to a `Backend`; adding a backend never
touches it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Protocol

from flnet import resource_names

from .engine_env import validate_extra_environment
from .errors import FieldViolation, InvalidArgument, Reason


@dataclass(frozen=True, order=True)
class RunName:
    """A run's resource name "tenants/{tenant}/runs/{run}", in the grammar of the contracts
    (flnet.resource_names). Both ids are safe as path parts (no "/", no dot names), and the
    tenant's has no "_", so that the work dir "<tenant>_<run>" names one run only."""

    tenant: str
    run_id: str

    @classmethod
    def parse(cls, name: str, field_path: str = "run") -> RunName:
        """Parses a run name; InvalidArgument names `field_path` when it is malformed."""
        ids = resource_names.RUN.parse(name)
        if ids is None:
            raise InvalidArgument.field(
                field_path,
                f"{name!r} is not a run name '{resource_names.RUN.pattern}'",
                Reason.RUN_NAME_INVALID,
            )
        tenant, run_id = ids
        return cls(tenant, run_id)

    def __str__(self) -> str:
        return resource_names.RUN.format(self.tenant, self.run_id)


class ContainerState(Enum):
    """Where a run's container is (mirrors `ContainerState` of the contract)."""

    UNSPECIFIED = 0
    CREATED = 1
    RUNNING = 2
    EXITED = 3


class ExitCause(Enum):
    """Why a container ended (mirrors `ExitCause` of the contract)."""

    UNSPECIFIED = 0
    EXITED = 1
    SIGNALED = 2
    OOM_KILLED = 3
    DEADLINE_EXCEEDED = 4
    STOPPED = 5
    VANISHED = 6
    PIDS_LIMIT_EXCEEDED = 7
    DISK_LIMIT_EXCEEDED = 8


@dataclass(frozen=True)
class Limits:
    """Resource limits; 0 means unlimited (open files, pids, disk: the backend default).
    Memory is what the run keeps resident, disk what it may write (input, output and
    scratch together); see the contract's `Limits` for how each backend enforces them."""

    cpu_millis: int = 0
    memory_bytes: int = 0
    pids: int = 0
    open_files: int = 0
    disk_bytes: int = 0

    def __post_init__(self) -> None:
        bad = [
            FieldViolation(f"limits.{name}", "must not be negative")
            for name in ("cpu_millis", "memory_bytes", "pids", "open_files", "disk_bytes")
            if getattr(self, name) < 0
        ]
        if bad:
            raise InvalidArgument(
                "limits must not be negative", Reason.LIMITS_INVALID, violations=bad
            )


@dataclass(frozen=True)
class LocalSource:
    """A tool source directory on the orchestrator's host (process backend)."""

    path: Path


@dataclass(frozen=True)
class Image:
    """A container image pinned by digest "sha256:..." (container backends)."""

    digest: str


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a backend needs to start a run's engine. The credential is kept out of
    `repr` so that it never reaches a log line."""

    run: RunName
    artifact: LocalSource | Image
    entrypoint: str = ""
    control_address: str = ""
    credential: str = field(default="", repr=False)
    limits: Limits = field(default_factory=Limits)
    # Absolute deadline in seconds from the start; None means none.
    deadline: float | None = None
    # Extra environment for the engine; may not override the FLNET_* contract.
    environment: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.deadline is not None and self.deadline <= 0:
            raise InvalidArgument.field(
                "deadline", "must be positive (or unset for none)", Reason.DEADLINE_INVALID
            )
        validate_extra_environment(self.environment)


@dataclass(frozen=True)
class Container:
    """A snapshot of the process or container that executes one run."""

    run: RunName
    container_id: str
    backend: str
    state: ContainerState
    exit_cause: ExitCause = ExitCause.UNSPECIFIED
    # Once EXITED; negative: killed by signal -exit_code.
    exit_code: int = 0
    start_time: datetime | None = None
    end_time: datetime | None = None
    deadline_time: datetime | None = None
    # Last lines it printed (stdout and stderr), once EXITED.
    last_output_lines: tuple[str, ...] = ()

    @classmethod
    def running(
        cls,
        run: RunName,
        container_id: str,
        backend: str,
        start_time: datetime | None,
        deadline_time: datetime | None,
    ) -> Container:
        """One started (or taken over) and not known to have exited."""
        return cls(
            run=run,
            container_id=container_id,
            backend=backend,
            state=ContainerState.RUNNING,
            start_time=start_time,
            deadline_time=deadline_time,
        )


@dataclass(frozen=True)
class ContainerEvent:
    """A container state change with its orchestrator-wide, increasing sequence."""

    sequence: int
    container: Container


class Backend(Protocol):
    """What runs engines. Implementations raise the domain errors of errors.py."""

    @property
    def name(self) -> str:
        """ "process", "docker", ..."""
        ...

    async def start(self) -> None:
        """Prepares the backend before the server serves: the docker backend connects to
        the Docker engine and takes over the containers an earlier orchestrator process
        left (restart safety); the process backend has nothing to do."""
        ...

    async def launch(self, spec: LaunchSpec) -> Container:
        """Starts the run's engine and returns its container (RUNNING). Idempotent per run:
        a run that already has a container gets that container back, whatever the spec."""
        ...

    async def stop(self, run: RunName, grace: float | None = None) -> Container:
        """SIGTERM (or the backend's equivalent), SIGKILL after `grace` seconds (None: the
        backend's default); returns the EXITED container. An exited container is returned
        as it is. Raises NotFound for a run without container."""
        ...

    async def get(self, run: RunName) -> Container:
        """The run's container; raises NotFound."""
        ...

    async def list(self, *, include_exited: bool = False) -> Sequence[Container]:
        """Containers the backend knows, oldest first; exited ones only when asked."""
        ...

    def events(self, after_sequence: int = 0) -> AsyncGenerator[ContainerEvent, None]:
        """Every event with sequence > after_sequence still retained, then live ones, until
        the event log closes (then Unavailable is raised)."""
        ...

    async def close(self, grace: float, *, end_engines: bool = True) -> None:
        """Refuses further launches and terminates the containers still running (SIGTERM,
        then SIGKILL after `grace` seconds). Without `end_engines` they keep running (the
        docker backend re-attaches them at its next start) and are no longer watched."""
        ...
