"""A run's Docker Swarm service as the Engine API's create body, and reading what the swarm
reports of its task. Pure functions; the swarm backend does the I/O.

The service runs one task, never restarted: mode Replicated with one replica and
RestartPolicy "none". Not ReplicatedJob, which Docker 20.10 (API 1.41) runs as well: a job
service's tasks, and their containers, stay behind for good once the service is removed
(moby/moby#42789, #44312), and the orchestrator removes one service per run.

The task's container follows docker_container.py: the same user 10001:10001, labels, image
(by id), environment, control-plane socket folder (/run/flnet, read-only), /mnt/input and
/mnt/output (the work dir's input/ and output/), read-only root file system, no capability,
pids, open-files, memory and CPU limits, docker-init as PID 1 and bounded json-file logs.
It differs where Swarm differs (SWARM.md):

- network: the host's. Swarm attaches a task to the predefined "host" or "bridge" networks
  or to swarm networks, never to "none" (moby/moby#44403); no network at all is the
  default bridge. Host networking is the one without bridges or overlays.
- /run/secrets/flnet-credential: the run credential as a Swarm secret (0400, owned by the
  engine's user, in memory), not a file of the work dir.
- /tmp: a tmpfs of Limits.disk_bytes (DEFAULT_SCRATCH_BYTES when 0), nosuid, nodev,
  noexec, counted against the memory limit. /mnt/input and /mnt/output lie on the work dir's
  file system: no file system of its own bounds them (docker_disk.py needs the loop mount on
  the node the task runs on).
- no-new-privileges: requested (ContainerSpec.Privileges.NoNewPrivileges), which engines
  before API 1.46 ignore.
- no swap limit: Swarm sets no MemorySwap, so a node with swap lets a task swap as much as
  its memory limit.
- Reservations equal the limits: Swarm places a task on a node with that much CPU and
  memory unreserved.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from .backend import LaunchSpec, RunName
from .docker_container import (
    CONTROL_DIR,
    CREDENTIAL_PATH,
    DEFAULT_OPEN_FILES,
    DEFAULT_PIDS,
    ENGINE_GID,
    ENGINE_PATHS,
    ENGINE_UID,
    LOG_CONFIG,
    SCRATCH_PATH,
    bind_mount,
    container_environment,
    cpu_nanos,
    labels,
)
from .workdir import WorkDir

#: /tmp of a run whose launch names no disk limit (Limits.disk_bytes 0).
DEFAULT_SCRATCH_BYTES = 1024**3
#: Swarm's longest service (and secret) name.
MAX_NAME = 63

#: Task states (swarmkit's TaskState) before the task's container runs.
STARTING_STATES = frozenset(
    {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
)
RUNNING_STATE = "running"
#: Task states after which it never runs (again).
ENDED_STATES = frozenset({"complete", "failed", "shutdown", "rejected", "orphaned", "remove"})
#: A task the swarm could not start (image missing on its node, a mount source missing...).
REJECTED_STATE = "rejected"

#: The last output line of a run whose service was removed behind the orchestrator's back.
SERVICE_VANISHED_LINE = (
    "flnet: the run's swarm service was removed by someone else before the orchestrator saw "
    "it end; its exit code and output are lost"
)
_SIGKILL_CODE = 128 + 9
_NANOS = 1_000_000_000


@dataclass(frozen=True)
class ServiceSpec:
    """What `docker.services.create` takes."""

    name: str
    labels: dict[str, str]
    task_template: dict[str, Any]
    mode: dict[str, Any]


def service_name(workdir: WorkDir, run: RunName) -> str:
    """Deterministic per run and data dir (a relaunch finds the run's service; orchestrators
    with different data dirs on one swarm do not collide), at most MAX_NAME characters: the
    run's ids as far as they fit, then a digest of its work dir's path."""
    digest = hashlib.sha256(str(workdir.path).encode()).hexdigest()[:16]
    readable = f"flnet-{run.tenant}-{run.run_id}"[: MAX_NAME - len(digest) - 1].rstrip("-")
    return f"{readable}-{digest}"


def service_spec(
    spec: LaunchSpec,
    *,
    name: str,
    image: str,
    workdir: WorkDir,
    socket: Path,
    deadline: datetime | None,
    host_cpus: int,
    stop_grace: float,
    secret_id: str,
    constraints: Sequence[str] = (),
    command: tuple[str, ...] | None = None,
) -> ServiceSpec:
    """The service of the run: `secret_id` is its credential's secret (named `name` too),
    `stop_grace` how long the swarm waits after SIGTERM before SIGKILL when it stops the task,
    `constraints` Swarm placement constraints, `command` replaces the image's CMD."""
    limits = spec.limits
    open_files = limits.open_files or DEFAULT_OPEN_FILES
    run_labels = labels(spec.run, workdir, deadline)
    container: dict[str, Any] = {
        "Image": image,
        "Labels": run_labels,
        "User": f"{ENGINE_UID}:{ENGINE_GID}",
        # aiodocker turns the mapping into the API's "NAME=value" list.
        "Env": container_environment(spec, socket),
        "ReadOnly": True,
        "Init": True,
        "CapabilityDrop": ["ALL"],
        "Privileges": {"NoNewPrivileges": True},
        "Ulimits": [{"Name": "nofile", "Soft": open_files, "Hard": open_files}],
        "StopGracePeriod": int(stop_grace * _NANOS),
        "Mounts": [
            bind_mount(socket.parent, CONTROL_DIR, read_only=True),
            bind_mount(workdir.input, PurePosixPath(ENGINE_PATHS.input_dir), read_only=False),
            bind_mount(workdir.output, PurePosixPath(ENGINE_PATHS.output_dir), read_only=False),
            {
                "Type": "tmpfs",
                "Target": str(SCRATCH_PATH),
                "TmpfsOptions": {
                    "SizeBytes": limits.disk_bytes or DEFAULT_SCRATCH_BYTES,
                    "Mode": 0o1777,
                },
            },
        ],
        "Secrets": [
            {
                "SecretID": secret_id,
                "SecretName": name,
                "File": {
                    "Name": CREDENTIAL_PATH.name,
                    "UID": str(ENGINE_UID),
                    "GID": str(ENGINE_GID),
                    "Mode": 0o400,
                },
            }
        ],
    }
    if command:
        container["Args"] = list(command)  # "Command" would replace the ENTRYPOINT
    resource_limits: dict[str, int] = {"Pids": limits.pids or DEFAULT_PIDS}
    reservations: dict[str, int] = {}
    if limits.memory_bytes:
        resource_limits["MemoryBytes"] = reservations["MemoryBytes"] = limits.memory_bytes
    if limits.cpu_millis:
        nanos = cpu_nanos(limits.cpu_millis, host_cpus)
        resource_limits["NanoCPUs"] = reservations["NanoCPUs"] = nanos
    task_template: dict[str, Any] = {
        "ContainerSpec": container,
        "Resources": {"Limits": resource_limits, "Reservations": reservations},
        "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
        "Networks": [{"Target": "host"}],
        "LogDriver": {"Name": LOG_CONFIG["Type"], "Options": LOG_CONFIG["Config"]},
    }
    if constraints:
        task_template["Placement"] = {"Constraints": list(constraints)}
    return ServiceSpec(
        name=name,
        labels=run_labels,
        task_template=task_template,
        mode={"Replicated": {"Replicas": 1}},
    )


def memory_limited(service: Mapping[str, Any]) -> bool:
    """Whether a service (inspect output) has a memory limit."""
    resources = service.get("Spec", {}).get("TaskTemplate", {}).get("Resources") or {}
    return bool((resources.get("Limits") or {}).get("MemoryBytes"))


def secret_id_of(service: Mapping[str, Any]) -> str:
    """The id of the run's credential secret in a service (inspect output); "" when none."""
    container = service.get("Spec", {}).get("TaskTemplate", {}).get("ContainerSpec") or {}
    for secret in container.get("Secrets") or ():
        if (secret.get("File") or {}).get("Name") == CREDENTIAL_PATH.name:
            return str(secret.get("SecretID", ""))
    return ""


# -- tasks (GET /tasks output) -------------------------------------------------------------


def latest_task(tasks: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest of a service's tasks (one replica, never restarted: there is one)."""
    return max(tasks, key=lambda task: str(task.get("CreatedAt") or ""), default=None)


def task_state(task: Mapping[str, Any]) -> str:
    return str((task.get("Status") or {}).get("State", ""))


def task_node(task: Mapping[str, Any]) -> str:
    return str(task.get("NodeID") or "")


def task_container(task: Mapping[str, Any]) -> str:
    """The id of the task's container on its node; "" before the node created it."""
    status = (task.get("Status") or {}).get("ContainerStatus") or {}
    return str(status.get("ContainerID") or "")


def task_error(task: Mapping[str, Any]) -> str:
    """Why the swarm ended or could not start the task; else its status message."""
    status = task.get("Status") or {}
    return str(status.get("Err") or status.get("Message") or "")


def task_time(task: Mapping[str, Any]) -> datetime | None:
    """When the task reached its current state."""
    value = (task.get("Status") or {}).get("Timestamp")
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value)
    return None


def image_missing(task: Mapping[str, Any]) -> bool:
    """The task was rejected because its node lacks the image."""
    return task_state(task) == REJECTED_STATE and "No such image" in task_error(task)


def remote_exit_state(
    task: Mapping[str, Any], *, memory_limit: bool, stopping: bool
) -> dict[str, Any] | None:
    """An ended task on a node other than the orchestrator's, as a container's inspect State
    for docker_state.exit_of (its container there cannot be inspected); None when it never
    ran. Without the container's OOMKilled flag, a SIGKILL of a task with a memory limit that
    the orchestrator was not `stopping` is taken for the OOM killer's."""
    status = (task.get("Status") or {}).get("ContainerStatus") or {}
    if task_state(task) in (REJECTED_STATE, "orphaned", "remove") or "ExitCode" not in status:
        return None
    code = int(status.get("ExitCode") or 0)
    timestamp = (task.get("Status") or {}).get("Timestamp")
    return {
        "Status": "exited",
        "ExitCode": code,
        "OOMKilled": memory_limit and not stopping and code == _SIGKILL_CODE,
        "FinishedAt": timestamp,
    }
