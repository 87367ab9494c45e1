"""Where tasks run: placement constraints, a run no node takes, a launch given up while the
swarm still places it, and tasks on a node other than the orchestrator's (this one-node
swarm's node taken for another: the orchestrator then reaches the task only through the
swarm)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiodocker
import pytest
from aiodocker.secrets import DockerSecrets
from aiodocker.services import DockerServices

from flnet import timeouts
from flnet.errors import NotFound
from flnet.orchestrator.backend import ContainerState, ExitCause, Limits
from flnet.orchestrator.errors import LaunchFailed
from flnet.orchestrator.swarm_service import service_name
from tests.orchestrator_swarm.helpers import (
    TIMEOUT,
    MiB,
    StartSwarmBackend,
    Stopwatch,
    SwarmRuns,
)

NOWHERE = "node.labels.flnet-test-nowhere==true"


def elsewhere(runs: SwarmRuns, monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes the backend take its tasks for another node's."""
    monkeypatch.setattr(runs.backend, "_node_id", "another-node")


async def test_constraints_reach_the_service(
    start_backend: StartSwarmBackend, docker: aiodocker.Docker, swarm: str
) -> None:
    runs = await start_backend(constraints=[f"node.id=={swarm}"])
    container = await runs.launch("sleep")
    run = container.run

    service = await docker.services.inspect(service_name(runs.workdir(run), run))

    placement = service["Spec"]["TaskTemplate"]["Placement"]
    assert placement["Constraints"] == [f"node.id=={swarm}"]
    assert (await runs.backend.stop(run)).exit_cause is ExitCause.STOPPED


async def test_a_run_no_node_takes_fails_after_the_start_timeout(
    start_backend: StartSwarmBackend,
) -> None:
    runs = await start_backend(constraints=[NOWHERE], start_timeout=2.0)
    run = runs.run_name()

    watch = Stopwatch()
    with pytest.raises(LaunchFailed) as failed:
        await runs.launch("exit3", run)

    assert failed.value.reason == "LAUNCH_FAILED"
    assert "no swarm node started the run within 2 s" in failed.value.message
    assert 2.0 <= watch.elapsed < 20
    with pytest.raises(NotFound):
        await runs.backend.get(run)


async def test_a_cancelled_launch_leaves_nothing(
    start_backend: StartSwarmBackend, docker: aiodocker.Docker
) -> None:
    runs = await start_backend(constraints=[NOWHERE])
    run = runs.run_name()
    name = service_name(runs.workdir(run), run)
    launching = asyncio.create_task(runs.launch("exit3", run))
    watch = Stopwatch()
    while not await docker.services.list(filters={"name": name}):
        assert watch.elapsed < TIMEOUT
        await asyncio.sleep(0.05)

    launching.cancel()

    with pytest.raises(asyncio.CancelledError):
        await launching
    assert not await docker.services.list(filters={"name": name})
    assert not await docker.secrets.list(filters={"name": name})
    assert not runs.workdir(run).exists()


@pytest.mark.parametrize("api", [DockerSecrets, DockerServices])
async def test_a_launch_cancelled_before_the_engine_answered_a_create_leaves_nothing(
    runs: SwarmRuns,
    docker: aiodocker.Docker,
    monkeypatch: pytest.MonkeyPatch,
    api: type[DockerSecrets | DockerServices],
) -> None:
    # The engine makes the object; its answer never reaches the backend.
    made = asyncio.Event()
    create = api.create

    async def unanswered(self: Any, *args: Any, **kwargs: Any) -> Any:
        await create(self, *args, **kwargs)
        made.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(api, "create", unanswered)
    run = runs.run_name()
    name = service_name(runs.workdir(run), run)
    launching = asyncio.create_task(runs.launch("exit3", run))
    await timeouts.wait_for(made.wait(), TIMEOUT)

    launching.cancel()

    with pytest.raises(asyncio.CancelledError):
        await launching
    assert not await docker.services.list(filters={"name": name})
    assert not await docker.secrets.list(filters={"name": name})
    assert not runs.workdir(run).exists()


async def test_on_another_node_the_exit_code_comes_from_the_task(
    runs: SwarmRuns, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere(runs, monkeypatch)
    container = await runs.launch("exit3")

    exited = await runs.exited(container.run)

    assert exited.exit_cause is ExitCause.EXITED
    assert exited.exit_code == 3
    assert list(exited.last_output_lines) == ["bye"]


async def test_on_another_node_a_sigkill_under_a_memory_limit_is_taken_for_oom(
    runs: SwarmRuns, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere(runs, monkeypatch)
    container = await runs.launch("oom", limits=Limits(memory_bytes=64 * MiB))

    exited = await runs.exited(container.run)

    assert exited.exit_cause is ExitCause.OOM_KILLED
    assert exited.exit_code == -signal.SIGKILL


async def test_on_another_node_stop_removes_the_service_and_waits_for_the_task(
    runs: SwarmRuns, monkeypatch: pytest.MonkeyPatch, docker: aiodocker.Docker
) -> None:
    elsewhere(runs, monkeypatch)
    container = await runs.launch("sleep")
    run = container.run
    await runs.until_ready(run)

    watch = Stopwatch()
    stopped = await runs.backend.stop(run, grace=30.0)

    # The swarm sent SIGTERM as it removed the service (a few seconds later); the task ended
    # of it. Its exit code is lost (0) when the swarm dropped the task between two looks.
    assert watch.elapsed < 20
    assert stopped.state is ContainerState.EXITED
    assert stopped.exit_cause is ExitCause.STOPPED
    assert stopped.exit_code in (-signal.SIGTERM, 0)
    assert not await docker.services.list(filters={"name": service_name(runs.workdir(run), run)})
