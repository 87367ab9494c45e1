"""The process backend's limits where the machine allows a cgroup per run (root here):
memory bounds what a run keeps resident, not the address space it maps; a fork bomb meets
its pids limit and is named for it; the run's cgroup is gone once the run has ended."""

from __future__ import annotations

import json
import os
import resource
import signal
from pathlib import Path

import grpc
import pytest

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.orchestrator.backend import RunName
from flnet.orchestrator.limit_watch import FORK_BOMB_SECONDS
from flnet.orchestrator.process_backend import ProcessBackend
from tests.orchestrator.helpers import CommandFailed, Orchestrator, StartOrchestrator

MiB = 1024 * 1024

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cgroups need root here")

# What the run sees of its cgroup (v1 files first, then v2's), and whether it can map more
# address space than its memory limit (it touches none of it).
OBSERVE = """
    import json, mmap, os, pathlib, resource

    def cgroup_file(controller, *names):
        for line in pathlib.Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(",") or not controllers:
                for base in (f"/sys/fs/cgroup/{controller}", "/sys/fs/cgroup"):
                    for name in names:
                        file = pathlib.Path(base + path, name)
                        if file.exists():
                            return file.read_text().strip()
        return ""

    seen = {
        "as": resource.getrlimit(resource.RLIMIT_AS),
        "memory_limit": cgroup_file("memory", "memory.limit_in_bytes", "memory.max"),
        "pids_limit": cgroup_file("pids", "pids.max"),
    }
    mmap.mmap(-1, 2048 * 1024 * 1024).close()
    seen["mapped_2_gib"] = True
    out = pathlib.Path(os.environ["FLNET_OUTPUT_DIR"], "observations.json")
    out.write_text(json.dumps(seen))
"""


@pytest.fixture
async def orch(start_orchestrator: StartOrchestrator) -> Orchestrator:
    orch = await start_orchestrator(keep_workdirs=True)
    assert backend(orch).cgroups is not None, "root without a usable cgroup"
    return orch


def backend(orch: Orchestrator) -> ProcessBackend:
    assert isinstance(orch.app.backend, ProcessBackend)
    return orch.app.backend


def cgroup_dirs(orch: Orchestrator, run: str) -> tuple[Path, ...]:
    cgroups = backend(orch).cgroups
    assert cgroups is not None
    return cgroups.of(RunName.parse(run)).join_dirs


def observations(orch: Orchestrator, run: str) -> dict[str, object]:
    return json.loads((orch.workdir(run) / "output" / "observations.json").read_text())  # type: ignore[no-any-return]


async def test_memory_limits_what_is_resident_not_what_is_mapped(orch: Orchestrator) -> None:
    limits = pb.Limits(memory_bytes=128 * MiB, pids=64)
    container = await orch.launch(
        OBSERVE + "\n    bytearray(512 * 1024 * 1024)  # written: resident\n", limits=limits
    )

    exited = await orch.exited(container.run)

    seen = observations(orch, container.run)
    assert seen["as"] == list(resource.getrlimit(resource.RLIMIT_AS))  # no cap of its own
    assert seen["memory_limit"] == str(128 * MiB)
    assert seen["pids_limit"] == "64"
    assert seen["mapped_2_gib"] is True
    # Resident memory past the limit: the kernel's OOM killer, named as such.
    assert (exited.exit_cause, exited.exit_code) == (pb.EXIT_CAUSE_OOM_KILLED, -signal.SIGKILL)
    assert not any(path.exists() for path in cgroup_dirs(orch, container.run))


async def test_a_run_within_its_memory_limit_exits_normally(orch: Orchestrator) -> None:
    container = await orch.launch(OBSERVE, limits=pb.Limits(memory_bytes=128 * MiB))

    exited = await orch.exited(container.run)

    assert (exited.exit_cause, exited.exit_code) == (pb.EXIT_CAUSE_EXITED, 0)
    assert observations(orch, container.run)["pids_limit"] == "max"  # 0: none


# Forks until the pids limit refuses, then aborts, as an engine that cannot start a thread
# does; the children wait to be killed with the run.
FORK_BOMB = """
    import os, signal, time
    children = 0
    while True:
        try:
            pid = os.fork()
        except BlockingIOError:
            break
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        children += 1
    print(f"forked {children} children, then no more")
    {end}
"""


async def test_a_fork_bomb_is_named_for_its_pids_limit(orch: Orchestrator) -> None:
    container = await orch.launch(
        FORK_BOMB.replace("{end}", "os.abort()"), limits=pb.Limits(pids=16)
    )

    exited = await orch.exited(container.run)

    assert (exited.exit_cause, exited.exit_code) == (
        pb.EXIT_CAUSE_PIDS_LIMIT_EXCEEDED,
        -signal.SIGABRT,
    )
    assert "then no more" in exited.last_output_lines[0]
    # Its children died with it, and its cgroup is gone.
    assert not any(path.exists() for path in cgroup_dirs(orch, container.run))


async def test_a_fork_bomb_that_keeps_trying_is_ended_at_once(orch: Orchestrator) -> None:
    container = await orch.launch(FORK_BOMB.replace("break", "continue"), limits=pb.Limits(pids=16))

    exited = await orch.exited(container.run)

    assert exited.exit_cause == pb.EXIT_CAUSE_PIDS_LIMIT_EXCEEDED
    assert exited.exit_code in (-signal.SIGTERM, -signal.SIGKILL)  # both, without grace
    assert not any(path.exists() for path in cgroup_dirs(orch, container.run))


async def test_a_run_that_copes_with_its_pids_limit_is_not_blamed(orch: Orchestrator) -> None:
    # At its limit for longer than a fork bomb may ask, but asking no more: a full pool.
    end = f"time.sleep({FORK_BOMB_SECONDS + 1})"
    container = await orch.launch(FORK_BOMB.replace("{end}", end), limits=pb.Limits(pids=16))

    exited = await orch.exited(container.run)

    assert (exited.exit_cause, exited.exit_code) == (pb.EXIT_CAUSE_EXITED, 0)


async def test_a_cgroup_the_kernel_refuses_fails_the_launch(orch: Orchestrator) -> None:
    cgroups = backend(orch).cgroups
    assert cgroups is not None
    for parent in cgroups.parents.values():
        parent.rmdir()  # as if someone removed it: the run's cgroup cannot be made

    with pytest.raises(CommandFailed) as info:
        await orch.launch("pass", limits=pb.Limits(memory_bytes=128 * MiB))

    assert info.value.code == grpc.StatusCode.INTERNAL
    assert info.value.details == ("LAUNCH_FAILED", [])
    assert info.value.message.startswith("cannot start the engine: ")
    assert not list(backend(orch).runs_dir.iterdir())  # no work dir left
