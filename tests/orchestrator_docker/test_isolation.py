"""What a run's container is allowed, seen from inside (probe.py's `observe`) and from the
Docker engine (`docker inspect`): the production profile of DESIGN.md §5, the mounts, the
environment contract, and the credential as a read-only file only."""

from __future__ import annotations

import json
import stat

import aiodocker

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from tests.orchestrator_docker.helpers import DockerOrchestrator, MiB, StartDockerOrchestrator

CREDENTIAL = "secret-credential-of-the-run"


async def test_the_engine_runs_confined(
    start_orchestrator: StartDockerOrchestrator, docker: aiodocker.Docker
) -> None:
    orch = await start_orchestrator(keep_workdirs=True)
    limits = pb.Limits(memory_bytes=128 * MiB, pids=64, open_files=256, cpu_millis=500)
    container = await orch.launch_probe(
        "observe",
        limits=limits,
        credential=CREDENTIAL,
        environment={"X_EXTRA": "yes", "PYTHONUNBUFFERED": "0"},
    )

    exited = await orch.exited(container.run)

    assert (exited.exit_cause, exited.exit_code) == (pb.EXIT_CAUSE_EXITED, 0), exited
    seen = orch.observations(container.run)
    # Non-root, no capability, no new privileges, docker-init as PID 1.
    assert (seen["uid"], seen["gid"]) == (10001, 10001)
    assert int(seen["cap_eff"], 16) == 0
    assert seen["no_new_privs"] == "1"
    assert seen["pid1"] == "/sbin/docker-init"
    # Read-only root, writable /tmp and output dir.
    assert seen["root_writable"] is False
    assert seen["tmp_writable"] is True
    assert seen["output_writable"] is True
    # /tmp, input and output: one file system of the run's own (bounded), nothing executable.
    mounts = seen["mounts"]
    assert set(mounts) == {"/tmp", "/mnt/input", "/mnt/output"}
    assert {fs for fs, _, _ in mounts.values()} == {"ext4"}
    assert len({device for _, device, _ in mounts.values()}) == 1
    for _, _, options in mounts.values():
        assert {"rw", "nosuid", "nodev", "noexec"} <= set(options.split(","))
    # No network but loopback; the control plane through the mounted unix socket.
    assert seen["interfaces"] == ["lo"]
    assert seen["net_dev"] == ["lo"]
    assert seen["control_plane"] == "pong"
    # cgroup limits as requested; no swap beyond the memory limit.
    assert seen["memory_limit"] == str(128 * MiB)
    assert seen["memsw_limit"] in ("", str(128 * MiB))
    assert seen["pids_limit"] == "64"
    assert seen["cpu_quota"] in ("50000", "50000 100000")
    assert seen["nofile"] == [256, 256]
    # The credential: a read-only 0400 file, nowhere in the environment or command lines.
    assert seen["credential"] == CREDENTIAL
    assert seen["credential_mode"] == "0o400"
    assert seen["credential_writable"] is False
    assert seen["credential_in_env"] is False
    assert seen["credential_in_cmdlines"] is False
    socket_name = orch.control_address.rsplit("/", 1)[1]
    assert seen["env"] == {
        "FLNET_RUN": container.run,
        "FLNET_CONTROL_ADDRESS": f"unix:///run/flnet/{socket_name}",
        "FLNET_CREDENTIAL_FILE": "/run/secrets/flnet-credential",
        "FLNET_TOOL_DIR": "/opt/tool",
        "FLNET_ENTRYPOINT": "probe.py:observe",
        "FLNET_INPUT_DIR": "/mnt/input",
        "FLNET_OUTPUT_DIR": "/mnt/output",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "0",  # a default the request may override
        "X_EXTRA": "yes",
    }

    # On the host: input/ and output/ belong to the engine's user, the credential is 0400.
    workdir = orch.workdir(container.run)
    for path in (workdir / "input", workdir / "output"):
        owned = path.stat()
        assert (owned.st_uid, owned.st_gid, stat.S_IMODE(owned.st_mode)) == (10001, 10001, 0o700)
    credential = (workdir / "credential").stat()
    assert (credential.st_uid, stat.S_IMODE(credential.st_mode)) == (10001, 0o400)

    # As the Docker engine has it (kept by keep_workdirs).
    info = await docker.containers.container(container.container_id).show()
    host = info["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert not host.get("Tmpfs")  # /tmp is on the run's file system
    assert (host["Memory"], host["MemorySwap"]) == (128 * MiB, 128 * MiB)
    assert (host["PidsLimit"], host["NanoCpus"]) == (64, 500_000_000)
    assert info["Config"]["User"] == "10001:10001"
    labels = info["Config"]["Labels"]
    assert labels["flnet.managed"] == "true"
    assert labels["flnet.run"] == container.run
    assert labels["flnet.tenant"] == "acme"
    mounts = {m["Destination"]: (m["Source"], m["RW"]) for m in info["Mounts"]}
    assert mounts == {
        "/run/flnet": (orch.control_address.removeprefix("unix://").rsplit("/", 1)[0], False),
        "/run/secrets/flnet-credential": (str(workdir / "credential"), False),
        "/mnt/input": (str(workdir / "input"), True),
        "/mnt/output": (str(workdir / "output"), True),
        "/tmp": (str(workdir / "disk" / "tmp"), True),
    }
    assert not list(info["NetworkSettings"]["Networks"].keys() - {"none"})
    exposed = repr([info["Config"], info["Args"], info["Path"], info["Name"]])
    assert CREDENTIAL not in exposed


async def test_a_tool_trying_to_leave_its_container_is_stopped_at_each_attempt(
    orch: DockerOrchestrator,
) -> None:
    """The network (the bridge's gateway, the Docker API port), the Docker and containerd
    sockets, the host's kernel settings, device nodes, root: each attempt fails with the
    error that names what stopped it, the run still ends normally, and the fixture finds the
    host as it was (no container, work dir or mount left)."""
    container = await orch.launch_probe("escape", limits=pb.Limits(pids=64))

    exited = await orch.exited(container.run)

    assert (exited.exit_cause, exited.exit_code) == (pb.EXIT_CAUSE_EXITED, 0), exited
    [line] = [x for x in exited.last_output_lines if x.startswith("attempts ")]
    attempts = json.loads(line.removeprefix("attempts "))
    assert attempts == {
        "tcp": "ENETUNREACH",  # no interface but loopback: no route anywhere
        "udp": "ENETUNREACH",
        "docker_api": "ENETUNREACH",
        "raw_socket": "EPERM",  # no CAP_NET_RAW
        "docker_socket": "ENOENT",  # never mounted
        "containerd_socket": "ENOENT",
        "host_proc_write": attempts["host_proc_write"],
        "mknod": "EPERM",  # no CAP_MKNOD
        "setuid_root": "EPERM",  # no CAP_SETUID, no new privileges
    }
    assert attempts["host_proc_write"] in ("EROFS", "EACCES")  # /proc/sys is read-only
