"""The limits a container meets and how its end names them, against the real Docker engine:
its writable space (input, output and /tmp together) is a file system of its own, so a
tool writing past its limit meets ENOSPC instead of filling the host's disk; a fork bomb
meets its pids limit. Either, followed by an abnormal end, is the exit cause."""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
import pytest

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.orchestrator.app import OrchestratorApp
from flnet.orchestrator.docker_disk import DEFAULT_DISK_BYTES, RunDisk, margin
from flnet.orchestrator.limit_watch import FORK_BOMB_SECONDS
from flnet.orchestrator.mounts import mounts_under
from flnet.orchestrator.workdir import WorkDir
from tests.identity import orchestrator_token
from tests.orchestrator.hand_control import HandControl
from tests.orchestrator.helpers import ORCHESTRATOR_IDENTITY, CommandFailed, Stopwatch, wait_for
from tests.orchestrator_docker.helpers import DockerOrchestrator, MiB, StartDockerOrchestrator

LIMIT = 8 * MiB


async def test_a_tool_writing_past_its_disk_limit_is_stopped_and_named(
    orch: DockerOrchestrator, tmp_path: Path
) -> None:
    container = await orch.launch_probe("fill_disk", limits=pb.Limits(disk_bytes=LIMIT))

    exited = await orch.exited(container.run)

    assert (exited.exit_cause, exited.exit_code) == (pb.EXIT_CAUSE_DISK_LIMIT_EXCEEDED, 1)
    # (Docker copies stdout and stderr apart: their order in the log is not certain.)
    assert "OSError: [Errno 28] No space left on device" in exited.last_output_lines
    wrote = next(line for line in exited.last_output_lines if line.startswith("wrote "))
    # Past the limit, but not past the file system's margin: the host's disk is safe.
    assert LIMIT <= int(wrote.split()[1]) * MiB <= LIMIT + margin(LIMIT)
    # Its file system goes with the work dir, just after the exit is reported.
    await wait_for(lambda: not mounts_under(tmp_path))


async def test_a_tool_may_write_up_to_its_disk_limit_in_output_and_tmp(
    orch: DockerOrchestrator,
) -> None:
    container = await orch.launch_probe(
        "write_bytes", limits=pb.Limits(disk_bytes=LIMIT), environment={"X_BYTES": str(LIMIT)}
    )

    exited = await orch.exited(container.run)

    assert (exited.exit_cause, exited.exit_code) == (pb.EXIT_CAUSE_EXITED, 0)
    assert list(exited.last_output_lines) == [f"wrote {LIMIT} bytes"]


async def test_without_a_disk_limit_a_run_gets_the_default(
    start_orchestrator: StartDockerOrchestrator,
) -> None:
    orch = await start_orchestrator(keep_workdirs=True)
    container = await orch.launch_probe("observe")
    await orch.exited(container.run)

    available = orch.observations(container.run)["disk_available"]
    assert DEFAULT_DISK_BYTES <= available <= DEFAULT_DISK_BYTES + margin(DEFAULT_DISK_BYTES)
    # Sparse: the host's disk holds what was written, not the limit.
    image = RunDisk(WorkDir(orch.workdir(container.run))).image
    assert image.stat().st_blocks * 512 < 64 * MiB


async def test_a_fork_bomb_is_named_for_its_pids_limit(orch: DockerOrchestrator) -> None:
    container = await orch.launch_probe("fork_bomb", limits=pb.Limits(pids=32))

    exited = await orch.exited(container.run)

    assert (exited.exit_cause, exited.exit_code) == (
        pb.EXIT_CAUSE_PIDS_LIMIT_EXCEEDED,
        -signal.SIGABRT,
    )
    assert any("then no more" in line for line in exited.last_output_lines)


async def test_a_fork_bomb_that_keeps_trying_is_ended_at_once(orch: DockerOrchestrator) -> None:
    """Nothing, not even the engine's threads, can start in it: it is killed, named."""
    watch = Stopwatch()
    container = await orch.launch_probe("fork_forever", limits=pb.Limits(pids=32))

    exited = await orch.exited(container.run)

    assert exited.exit_cause == pb.EXIT_CAUSE_PIDS_LIMIT_EXCEEDED
    assert exited.exit_code in (-signal.SIGTERM, -signal.SIGKILL)  # both, without grace
    assert watch.elapsed < FORK_BOMB_SECONDS + 20


async def test_an_abort_without_a_limit_reached_is_signaled(orch: DockerOrchestrator) -> None:
    container = await orch.launch_probe("abort", limits=pb.Limits(pids=32))

    exited = await orch.exited(container.run)

    assert (exited.exit_cause, exited.exit_code) == (pb.EXIT_CAUSE_SIGNALED, -signal.SIGABRT)


async def test_a_disk_limit_the_host_cannot_hold_fails_the_launch(
    orch: DockerOrchestrator, tmp_path: Path
) -> None:
    with pytest.raises(CommandFailed) as info:
        await orch.launch_probe("observe", limits=pb.Limits(disk_bytes=2**62))

    assert info.value.code == grpc.StatusCode.INTERNAL
    assert info.value.details == ("LAUNCH_FAILED", [])
    assert info.value.message.startswith("cannot prepare the work dir: ")
    # Nothing of the attempt is left (the fixture checks containers and work dirs).
    assert not mounts_under(tmp_path)


async def test_without_mkfs_the_docker_backend_does_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hand_control: HandControl
) -> None:
    """Rather than runs that could fill the host's disk."""
    monkeypatch.setenv("PATH", str(tmp_path))  # neither mkfs.ext4 nor mount on it
    app = OrchestratorApp(
        tmp_path / "data",
        backend="docker",
        control_address=hand_control.address,
        token=orchestrator_token,
        identity=ORCHESTRATOR_IDENTITY,
    )

    with pytest.raises(OSError, match=r"needs mkfs\.ext4 and mount on PATH"):
        await app.start()
    await app.stop()
    assert not hand_control.registrations  # it never attached
