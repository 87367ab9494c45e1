"""The security profile of a swarm task, as its container is inspected on this node and as
a hostile tool inside it finds it."""

from __future__ import annotations

import json
from typing import Any

import aiodocker

from flnet.orchestrator.backend import Limits
from flnet.orchestrator.docker_container import DEFAULT_PIDS
from flnet.orchestrator.swarm_service import service_name
from tests.orchestrator_swarm.helpers import CREDENTIAL, MiB, SwarmRuns


async def exec_in(docker: aiodocker.Docker, container_id: str, *argv: str) -> str:
    """Runs `argv` in the container as its user; its output."""
    execution = await docker.containers.container(container_id).exec(list(argv))
    async with execution.start(detach=False) as stream:
        chunks: list[bytes] = []
        while (message := await stream.read_out()) is not None:
            chunks.append(message.data)
    return b"".join(chunks).decode()


async def test_task_container_profile(runs: SwarmRuns, docker: aiodocker.Docker) -> None:
    container = await runs.launch("sleep")
    run = container.run
    await runs.until_ready(run)

    info: dict[str, Any] = await docker.containers.container(container.container_id).show()

    config, host = info["Config"], info["HostConfig"]
    assert config["User"] == "10001:10001"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["NetworkMode"] == "host"  # Swarm cannot attach "none" (SWARM.md)
    assert host["Init"] is True
    assert host["PidsLimit"] == DEFAULT_PIDS
    assert [u["Name"] for u in host["Ulimits"]] == ["nofile"]
    assert config["Labels"]["flnet.managed"] == "true"
    assert config["Labels"]["flnet.run"] == str(run)
    assert config["Labels"]["flnet.tenant"] == run.tenant
    assert config["Labels"]["flnet.workdir"] == str(runs.workdir(run).path)
    assert not any(CREDENTIAL in variable for variable in config["Env"])
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/run/flnet"]["RW"] is False
    assert mounts["/mnt/output"]["Source"] == str(runs.workdir(run).output)
    assert host["Mounts"][-1]["Type"] == "tmpfs"  # /tmp
    # The credential: a Swarm secret only, readable by the engine's user alone.
    assert runs.workdir(run).credential.read_text() == ""
    secret = "/run/secrets/flnet-credential"
    assert await exec_in(docker, container.container_id, "cat", secret) == CREDENTIAL
    assert await exec_in(docker, container.container_id, "stat", "-c", "%a %u", secret) == (
        "400 10001\n"
    )
    # The engine reaches the control plane through the mounted socket folder.
    ping = (
        "import os, socket; s = socket.socket(socket.AF_UNIX); "
        "s.connect(os.environ['FLNET_CONTROL_ADDRESS'].removeprefix('unix://')); "
        "s.sendall(b'ping\\n'); print(s.recv(64).decode().strip())"
    )
    assert await exec_in(docker, container.container_id, "python3", "-c", ping) == "pong\n"


async def test_limits_reach_the_task_container(runs: SwarmRuns, docker: aiodocker.Docker) -> None:
    limits = Limits(cpu_millis=500, memory_bytes=96 * MiB, pids=64, open_files=512)
    container = await runs.launch("sleep", limits=limits)
    await runs.until_ready(container.run)

    host = (await docker.containers.container(container.container_id).show())["HostConfig"]
    service = await docker.services.inspect(
        service_name(runs.workdir(container.run), container.run)
    )

    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 96 * MiB
    assert host["PidsLimit"] == 64
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 512, "Hard": 512}]
    reservations = service["Spec"]["TaskTemplate"]["Resources"]["Reservations"]
    assert reservations == {"NanoCPUs": 500_000_000, "MemoryBytes": 96 * MiB}


async def test_what_a_hostile_tool_meets(runs: SwarmRuns) -> None:
    container = await runs.launch("escape")

    exited = await runs.exited(container.run)

    attempts = json.loads(exited.last_output_lines[-1].removeprefix("attempts "))
    # Without capabilities, on a read-only root and without the engine's sockets. The
    # network attempts are not asserted: the task shares the host's network (SWARM.md).
    assert attempts["raw_socket"] == "EPERM"
    assert attempts["mknod"] == "EPERM"
    assert attempts["setuid_root"] == "EPERM"
    assert attempts["docker_socket"] == "ENOENT"
    assert attempts["containerd_socket"] == "ENOENT"
    assert attempts["host_proc_write"] in ("EROFS", "EACCES")
