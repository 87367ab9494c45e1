"""Production mode end to end: control plane + orchestrator with the docker backend + a real
tool image, on the real Docker engine. Each way a containerized run can end, as provenance
records it, and what the tool can see of its isolation."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flnet import images, lifecycle
from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.api.orchestrator.v1 import orchestrator_pb2 as op
from flnet.orchestrator.docker_container import ENGINE_GID
from flnet.toolspec import load_tool_spec
from tests.auth.issuer import Issuer
from tests.conftest import TENANT, attach_orchestrator, clients_for, control_app, control_settings
from tests.docker_env import require_base_image
from tests.identity import IDENTITY, orchestrator_client_env
from tests.integration.conftest import BEHAVE, Stack
from tests.integration.test_end_to_end import container_of

S = lc.RunState
MiB = 1024 * 1024


@pytest.fixture(scope="session")
def behave_image() -> images.BuiltImage:
    """The behave tool's image (and the base image under it), built once per session."""

    require_base_image()

    async def prepare() -> images.BuiltImage:
        spec = load_tool_spec(BEHAVE)
        assert spec.image_build is not None
        return await images.build_tool_image(
            spec.image_build.context,
            name=spec.name,
            version=spec.version.version,
            entrypoint=spec.entrypoint,
        )

    return asyncio.run(prepare())


def image_version(image: images.BuiltImage, **resources: int) -> tp.ToolVersion:
    version = load_tool_spec(BEHAVE).with_image(image.reference, image.digest)
    for field, value in resources.items():
        setattr(version.resources, field, value)
    return version


class DockerStack(Stack):
    async def register_image(
        self, image: images.BuiltImage, name: str = "behave", deadline: float = 0, **resources: int
    ) -> tp.ToolVersion:
        version = image_version(image, **resources)
        if deadline:
            version.timeouts.deadline.FromNanoseconds(int(deadline * 1e9))
        res = await self.api.tools.CreateToolVersion(
            ts.CreateToolVersionRequest(parent=f"{TENANT}/tools/{name}", tool_version=version)
        )
        return res.tool_version


async def containers_of(run: str) -> list[Any]:
    async with images.docker_client() as docker:
        return list(await docker.containers.list(all=True, filters={"label": [f"flnet.run={run}"]}))


async def no_container_left(run: str) -> None:
    for _ in range(100):
        if not await containers_of(run):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"a container of {run} is left")


@pytest.fixture
async def docker_stack(
    tmp_path: Path, behave_image: images.BuiltImage
) -> AsyncIterator[DockerStack]:
    # The engine socket admits the containers' group: FLNET_ENGINE_GID, as `flnet up` sets it.
    control = control_app(control_settings(tmp_path, engine_gid=ENGINE_GID))
    await control.start("127.0.0.1:0")
    address = f"127.0.0.1:{control.port}"
    orchestrator = await attach_orchestrator(address, tmp_path / "orchestrator", backend="docker")
    api = clients_for(address)
    yield DockerStack(api, control, orchestrator)
    await api.channel.close()
    await orchestrator.stop()
    await control.stop(0.5)


async def output_json(stack: Stack, run: str) -> dict[str, Any]:
    done = await stack.get(run)
    [output] = done.outputs
    data = b""
    async for msg in stack.api.artifacts.DownloadArtifact(
        asv.DownloadArtifactRequest(name=output.name)
    ):
        data += msg.data
    result: dict[str, Any] = json.loads(data)
    return result


@pytest.mark.timeout(120)
async def test_run_finishes_in_an_isolated_container(
    docker_stack: DockerStack, behave_image: images.BuiltImage
) -> None:
    version = await docker_stack.register_image(behave_image, memory_bytes=256 * MiB)
    run = await docker_stack.submit(version.name, mode="inspect", lines=10)
    done = await docker_stack.wait_state(run.name)
    assert done.state == S.RUN_STATE_FINISHED, done.error
    assert done.artifact_digest == behave_image.digest
    seen = await output_json(docker_stack, run.name)
    assert seen["uid"] != 0
    assert int(seen["cap_eff"], 16) == 0  # no capabilities
    assert seen["no_new_privs"] == "1"
    assert seen["root_writable"] is False
    assert seen["tmp_writable"] is True
    assert seen["interfaces"] == ["lo"]
    assert int(seen["memory_limit"]) == 256 * MiB
    assert seen["credential_in_env"] is False
    await no_container_left(run.name)


@pytest.mark.timeout(120)
async def test_oom_kill(docker_stack: DockerStack, behave_image: images.BuiltImage) -> None:
    version = await docker_stack.register_image(behave_image, memory_bytes=96 * MiB)
    run = await docker_stack.submit(version.name, mode="allocate", megabytes=512)
    done = await docker_stack.wait_state(run.name)
    assert done.state == S.RUN_STATE_ERROR
    assert done.error.reason == lc.ERROR_REASON_OOM_KILLED
    await no_container_left(run.name)


@pytest.mark.timeout(120)
async def test_exit_code(docker_stack: DockerStack, behave_image: images.BuiltImage) -> None:
    version = await docker_stack.register_image(behave_image)
    run = await docker_stack.submit(version.name, mode="exit", exit_code=3)
    done = await docker_stack.wait_state(run.name)
    assert done.state == S.RUN_STATE_ERROR
    assert done.error.reason == lc.ERROR_REASON_EXIT_NONZERO
    assert done.error.context["exit_code"] == "3"


@pytest.mark.timeout(120)
async def test_deadline(docker_stack: DockerStack, behave_image: images.BuiltImage) -> None:
    version = await docker_stack.register_image(behave_image, name="slow", deadline=3.0)
    run = await docker_stack.submit(version.name, mode="sleep", seconds=60, ignore_cancel=True)
    done = await docker_stack.wait_state(run.name, within=60)
    assert done.state == S.RUN_STATE_ERROR
    assert done.error.reason == lc.ERROR_REASON_DEADLINE_EXCEEDED
    await no_container_left(run.name)


@pytest.mark.timeout(120)
async def test_cancel_while_running(
    docker_stack: DockerStack, behave_image: images.BuiltImage
) -> None:
    version = await docker_stack.register_image(behave_image)
    run = await docker_stack.submit(version.name, mode="sleep", seconds=60)
    await docker_stack.wait_state(run.name, S.RUN_STATE_RUNNING)
    await docker_stack.api.runs.CancelRun(rs.CancelRunRequest(name=run.name, reason="stop"))
    done = await docker_stack.wait_state(run.name, within=60)
    assert done.state == S.RUN_STATE_CANCELLED
    assert done.cancellation.HasField("teardown")
    await no_container_left(run.name)


@pytest.mark.timeout(120)
async def test_container_removed_behind_our_back(
    docker_stack: DockerStack, behave_image: images.BuiltImage
) -> None:
    version = await docker_stack.register_image(behave_image)
    run = await docker_stack.submit(version.name, mode="sleep", seconds=60)
    await docker_stack.wait_state(run.name, S.RUN_STATE_RUNNING)
    async with images.docker_client() as docker:  # like `docker rm -f` by someone else
        [container] = await docker.containers.list(
            all=True, filters={"label": [f"flnet.run={run.name}"]}
        )
        await container.delete(force=True)
    done = await docker_stack.wait_state(run.name, within=60)
    assert done.state == S.RUN_STATE_ERROR
    assert done.error.reason == lc.ERROR_REASON_LOST
    assert "removed outside the platform" in done.error.message


@pytest.mark.timeout(240)
async def test_twenty_concurrent_containers(
    docker_stack: DockerStack, behave_image: images.BuiltImage
) -> None:
    version = await docker_stack.register_image(behave_image)
    runs = [await docker_stack.submit(version.name, mode="finish", lines=50) for _ in range(20)]
    done = await asyncio.gather(*(docker_stack.wait_state(r.name, within=200) for r in runs))
    assert [d.state for d in done] == [S.RUN_STATE_FINISHED] * 20, [d.error for d in done]
    for r in runs:
        await no_container_left(r.name)


@pytest.mark.timeout(180)
async def test_a_run_in_a_standby_container_is_the_same_run(
    tmp_path: Path, behave_image: images.BuiltImage
) -> None:
    """With a warm pool, the second run of a version starts in the standby container the
    first left waiting: the real engine, imported ahead, gets its run and credential at
    assignment and runs it as a cold one would (same confinement, its outputs), then the
    container goes with its run."""
    control = control_app(control_settings(tmp_path, engine_gid=ENGINE_GID))
    await control.start("127.0.0.1:0")
    address = f"127.0.0.1:{control.port}"
    orchestrator = await attach_orchestrator(
        address, tmp_path / "orchestrator", backend="docker", warm_pool=1
    )
    api = clients_for(address)
    stack = DockerStack(api, control, orchestrator)
    try:
        version = await stack.register_image(behave_image, memory_bytes=256 * MiB)
        seen: list[tuple[str, dict[str, Any]]] = []
        for _ in range(2):
            async with images.docker_client() as docker:
                for _ in range(100):  # the standby of the first run's shape, once started
                    pooled = await docker.containers.list(filters={"label": ["flnet.pool"]})
                    if pooled or not seen:
                        break
                    await asyncio.sleep(0.1)
            run = await stack.submit(version.name, mode="inspect", lines=10)
            done = await stack.wait_state(run.name)
            assert done.state == S.RUN_STATE_FINISHED, done.error
            [container] = [
                c for c in await orchestrator.backend.list(include_exited=True)
                if str(c.run) == run.name
            ]  # fmt: skip
            seen.append((container.container_id, await output_json(stack, run.name)))
        (cold_id, cold), (warm_id, warm) = seen
        assert [c.id for c in pooled] == [warm_id] != [cold_id]
        for key in ("uid", "cap_eff", "no_new_privs", "root_writable", "tmp_writable",
                    "interfaces", "memory_limit", "credential_in_env"):  # fmt: skip
            assert warm[key] == cold[key], key
        async with images.docker_client() as docker:
            for _ in range(100):
                if warm_id not in [c.id for c in await docker.containers.list(all=True)]:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the standby container outlived its run")
    finally:
        await api.channel.close()
        await orchestrator.stop()
        await control.stop(0.5)


def start_orchestrator(data: Path, control: str, issuer: Issuer) -> subprocess.Popen[bytes]:
    log = (data / "orchestrator.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "flnet.orchestrator", "--control", control, "--name", "docker",
         "--data-dir", str(data), "--backend", "docker"],
        stdout=log, stderr=log, env={**os.environ, **orchestrator_client_env(issuer)},
    )  # fmt: skip


@pytest.mark.timeout(180)
async def test_orchestrator_killed_mid_run(
    tmp_path: Path, behave_image: images.BuiltImage, http_issuer: Issuer
) -> None:
    """SIGKILL of the orchestrator while a container runs: the container goes on (dockerd
    owns it), the restarted orchestrator re-attaches, and the run finishes, recorded once."""
    data = tmp_path / "orchestrator"
    data.mkdir()
    settings = control_settings(
        tmp_path, auth=IDENTITY.settings(issuer=http_issuer.url), engine_gid=ENGINE_GID
    )
    control = control_app(settings)
    await control.start("127.0.0.1:0")
    address = f"127.0.0.1:{control.port}"
    orchestrator = start_orchestrator(data, address, http_issuer)
    try:
        api = clients_for(f"127.0.0.1:{control.port}", IDENTITY.token(issuer=http_issuer.url))
        stack = DockerStack(api, control, None)  # type: ignore[arg-type]
        version = await stack.register_image(behave_image)
        run = await stack.submit(version.name, mode="sleep", seconds=6)
        await stack.wait_state(run.name, S.RUN_STATE_RUNNING)
        os.kill(orchestrator.pid, signal.SIGKILL)
        orchestrator.wait()
        assert [c for c in await containers_of(run.name)], "the container died with it"
        orchestrator = start_orchestrator(data, address, http_issuer)
        done = await stack.wait_state(run.name, within=90)
        assert done.state == S.RUN_STATE_FINISHED, done.error
        events = (await api.runs.ListRunEvents(rs.ListRunEventsRequest(parent=run.name))).events
        finished = [
            e
            for e in events
            if e.HasField("state_change") and lifecycle.is_terminal(e.state_change.to_state)
        ]
        assert len(finished) == 1
        await no_container_left(run.name)
        await api.channel.close()
    finally:
        await control.stop(0.5)
        orchestrator.send_signal(signal.SIGTERM)
        orchestrator.wait(timeout=30)


@pytest.mark.timeout(180)
async def test_a_fork_bomb_ends_named_for_its_pids_limit(
    docker_stack: DockerStack, behave_image: images.BuiltImage
) -> None:
    """The engine cannot start threads in it any more: the orchestrator ends it before the
    engine's silence runs out its lease, and the run's error is that exit, named."""
    version = await docker_stack.register_image(behave_image, deadline=60, pids=64)
    run = await docker_stack.submit(version.name, mode="fork_bomb")

    done = await docker_stack.wait_state(run.name, within=120)

    assert done.state == S.RUN_STATE_ERROR
    container = await container_of(docker_stack, run.name)
    assert container.exit_cause == op.EXIT_CAUSE_PIDS_LIMIT_EXCEEDED
    assert done.error.context["exit_cause"] == "EXIT_CAUSE_PIDS_LIMIT_EXCEEDED"
    await no_container_left(run.name)
