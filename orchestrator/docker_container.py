"""A run's Docker container as the Engine API's create body: the production security
profile of DESIGN.md §5 and the engine's file and environment contract inside the
container. Pure functions; the docker backend does the I/O.

Inside the container::

    /run/flnet/                     directory of the control plane's unix socket (read-only;
                                    a directory, so that a restarted control plane's new
                                    socket is seen), open to group 10001 only
    /run/secrets/flnet-credential   the run credential (read-only, 0400, owned by 10001)
    /mnt/input, /mnt/output         the work dir's input/ and output/ (owned by 10001)
    /opt/tool                       the tool, as the image installs it
    /tmp                            scratch space (1777)

/mnt/input, /mnt/output and /tmp lie on the run's own file system (docker_disk.py): what
the run writes there together is bounded by Limits.disk_bytes, and none of it is executable.

The engine runs as 10001:10001 with no capability, no network (NetworkMode "none"), a
read-only root file system, no-new-privileges, pids/memory/CPU/open-files limits, and
docker-init as PID 1 (so that SIGTERM reaches it and zombies are reaped).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from .backend import LaunchSpec, Limits, LocalSource, RunName
from .engine_env import (
    CONTAINER_DEFAULTS,
    FLNET_ASSIGNMENT,
    FLNET_RUN,
    EnginePaths,
    engine_environment,
)
from .errors import InvalidArgument, Reason
from .workdir import WorkDir

#: The engine's user and group inside the container (owner of input/, output/, credential).
ENGINE_UID = 10001
ENGINE_GID = 10001

LABEL_MANAGED = "flnet.managed"  # "true" on every container of ours
LABEL_RUN = "flnet.run"  # "tenants/{tenant}/runs/{run}"
LABEL_TENANT = "flnet.tenant"
LABEL_WORKDIR = "flnet.workdir"  # the host work dir: which orchestrator (data dir) owns it
LABEL_DEADLINE = "flnet.deadline"  # absolute deadline, ISO 8601 UTC, re-armed after a restart
LABEL_POOL = "flnet.pool"  # a warm pool's standby container: the shape it waits for

CONTROL_DIR = PurePosixPath("/run/flnet")
CREDENTIAL_PATH = PurePosixPath("/run/secrets/flnet-credential")
ASSIGNMENT_PATH = PurePosixPath("/run/flnet-assignment")  # a standby's FIFO (docker_pool.py)
SCRATCH_PATH = PurePosixPath("/tmp")
ENGINE_PATHS = EnginePaths(
    tool_dir="/opt/tool",
    credential_file=str(CREDENTIAL_PATH),
    input_dir="/mnt/input",
    output_dir="/mnt/output",
)

DEFAULT_PIDS = 256
DEFAULT_OPEN_FILES = 4096
#: Docker refuses smaller memory limits.
MIN_MEMORY_BYTES = 6 * 1024 * 1024
#: Docker accepts 0.01 CPU at the least.
MIN_CPU_MILLIS = 10
# Bounded so that a chatty engine cannot fill the disk; enough for the last lines.
LOG_CONFIG = {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "1"}}

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def image_of(spec: LaunchSpec) -> str:
    """The image id "sha256:<64 hex>" to run; InvalidArgument for anything else."""
    if isinstance(spec.artifact, LocalSource):
        raise InvalidArgument.field(
            "source_path", "docker backend runs images only", Reason.SOURCE_NOT_SUPPORTED
        )
    if not _DIGEST.fullmatch(spec.artifact.digest):
        raise InvalidArgument.field(
            "image_digest",
            f"{spec.artifact.digest!r} is not an image id 'sha256:<64 hex digits>'",
            Reason.IMAGE_DIGEST_INVALID,
        )
    return spec.artifact.digest


def control_socket(address: str) -> Path:
    """The host path of a "unix:///abs/path" (or "unix:/abs/path") control address;
    InvalidArgument otherwise: containers have no network."""
    path = ""
    if address.startswith("unix://"):
        path = address.removeprefix("unix://")
    elif address.startswith("unix:"):
        path = address.removeprefix("unix:")
    if not path.startswith("/") or path.endswith("/"):
        raise InvalidArgument.field(
            "control_address",
            f"{address!r} is not 'unix:///absolute/path/to/socket': containers reach the "
            "control plane through a unix socket only",
            Reason.CONTROL_ADDRESS_INVALID,
        )
    return Path(path)


def socket_access_problem(
    folder: os.stat_result, socket: os.stat_result | None, name: Path
) -> str | None:
    """Why the engine's user could not connect to the control plane's socket `name` (which
    may be missing while the control plane restarts), given the stat of its folder and of
    the socket; None when it can. It needs to search the folder and write to the socket:
    the control plane gives both to its engine group, FLNET_ENGINE_GID."""
    who = f"the engine's user ({ENGINE_UID}:{ENGINE_GID})"
    fix = f"start the control plane with FLNET_ENGINE_GID={ENGINE_GID}"
    if not _permits(folder, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
        return f"{who} may not enter the socket's folder {str(name.parent)!r}: {fix}"
    if socket is not None and not _permits(socket, stat.S_IWUSR, stat.S_IWGRP, stat.S_IWOTH):
        return f"{who} may not connect to the socket {str(name)!r}: {fix}"
    return None


def _permits(st: os.stat_result, owner: int, group: int, other: int) -> bool:
    # The owner's bits apply to the owner, else the group's to the group, else the others'.
    if st.st_uid == ENGINE_UID:
        return bool(st.st_mode & owner)
    if st.st_gid == ENGINE_GID:
        return bool(st.st_mode & group)
    return bool(st.st_mode & other)


def validate_limits(limits: Limits) -> None:
    """InvalidArgument for limits Docker refuses."""
    if 0 < limits.memory_bytes < MIN_MEMORY_BYTES:
        raise InvalidArgument.field(
            "limits.memory_bytes",
            f"must be 0 (unlimited) or at least {MIN_MEMORY_BYTES} bytes",
            Reason.LIMITS_INVALID,
        )


def container_name(workdir: WorkDir, run: RunName) -> str:
    """Deterministic per run and data dir, so that a relaunch finds the run's container
    and orchestrators with different data dirs on one engine do not collide."""
    owner = hashlib.sha256(str(workdir.path.parent).encode()).hexdigest()[:8]
    return f"flnet-{run.tenant}_{run.run_id}-{owner}"


def labels(run: RunName, workdir: WorkDir, deadline: datetime | None) -> dict[str, str]:
    values = {
        LABEL_MANAGED: "true",
        LABEL_RUN: str(run),
        LABEL_TENANT: run.tenant,
        LABEL_WORKDIR: str(workdir.path),
    }
    if deadline is not None:
        values[LABEL_DEADLINE] = deadline.isoformat()
    return values


def cpu_nanos(cpu_millis: int, host_cpus: int) -> int:
    """Limits.cpu_millis as Docker's NanoCPUs: more than the host has is all of it; less than
    Docker's minimum is its minimum."""
    millis = min(max(cpu_millis, MIN_CPU_MILLIS), 1000 * max(host_cpus, 1))
    return millis * 1_000_000


def container_config(
    spec: LaunchSpec,
    *,
    image: str,
    workdir: WorkDir,
    socket: Path,
    deadline: datetime | None,
    host_cpus: int,
    scratch: Path,
    command: tuple[str, ...] | None = None,
    standby: tuple[str, Path] | None = None,
) -> dict[str, Any]:
    """The create body of the run's container. `scratch` is the host directory mounted as
    /tmp; `command` replaces the image's CMD. A `standby` (shape, FIFO) container of the
    warm pool (docker_pool.py) is the same but for its run: no name of one in its
    environment or labels, and the FIFO its engine learns it from."""
    env = container_environment(spec, socket)
    labelled = labels(spec.run, workdir, deadline)
    mounts = []
    if standby is not None:
        shape, fifo = standby
        env[FLNET_RUN] = ""
        env[FLNET_ASSIGNMENT] = str(ASSIGNMENT_PATH)
        labelled = {
            LABEL_MANAGED: "true",
            LABEL_WORKDIR: str(workdir.path),
            LABEL_POOL: shape,
        }
        mounts.append(bind_mount(fifo, ASSIGNMENT_PATH, read_only=True))
    limits = spec.limits
    open_files = limits.open_files or DEFAULT_OPEN_FILES
    host_config: dict[str, Any] = {
        "NetworkMode": "none",
        "Init": True,
        "ReadonlyRootfs": True,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "PidsLimit": limits.pids or DEFAULT_PIDS,
        "Ulimits": [{"Name": "nofile", "Soft": open_files, "Hard": open_files}],
        "Mounts": [
            bind_mount(socket.parent, CONTROL_DIR, read_only=True),
            bind_mount(workdir.credential, CREDENTIAL_PATH, read_only=True),
            bind_mount(workdir.input, PurePosixPath(ENGINE_PATHS.input_dir), read_only=False),
            bind_mount(workdir.output, PurePosixPath(ENGINE_PATHS.output_dir), read_only=False),
            bind_mount(scratch, SCRATCH_PATH, read_only=False),
            *mounts,
        ],
        "RestartPolicy": {"Name": "no"},
        "LogConfig": LOG_CONFIG,
    }
    if limits.memory_bytes:
        host_config["Memory"] = limits.memory_bytes
        host_config["MemorySwap"] = limits.memory_bytes  # the same: no swap
    if limits.cpu_millis:
        host_config["NanoCpus"] = cpu_nanos(limits.cpu_millis, host_cpus)
    config: dict[str, Any] = {
        "Image": image,
        "User": f"{ENGINE_UID}:{ENGINE_GID}",
        "Env": [f"{name}={value}" for name, value in env.items()],
        "Labels": labelled,
        "HostConfig": host_config,
    }
    if command:
        config["Cmd"] = list(command)
    return config


def container_environment(spec: LaunchSpec, socket: Path) -> dict[str, str]:
    """The engine's environment in a container whose control plane's `socket` is mounted in
    CONTROL_DIR."""
    return engine_environment(
        run=str(spec.run),
        control_address=f"unix://{CONTROL_DIR / socket.name}",
        entrypoint=spec.entrypoint,
        paths=ENGINE_PATHS,
        extra=spec.environment,
        base={},  # nothing of the orchestrator's host: the image's ENV stays
        defaults=CONTAINER_DEFAULTS,
    )


def bind_mount(source: Path, target: PurePosixPath, *, read_only: bool) -> dict[str, Any]:
    """A bind mount of the Engine API (containers' HostConfig.Mounts, services' Mounts)."""
    return {"Type": "bind", "Source": str(source), "Target": str(target), "ReadOnly": read_only}
