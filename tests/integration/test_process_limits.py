"""Resource limits of the process backend as the examples meet them: a memory limit bounds
what a run keeps resident (a cgroup, where the machine allows one), not the address space a
Python process maps (the logreg example keeps about 43 MB resident while mapping over
500 MB); without a cgroup the address-space cap leaves headroom. Either way the examples
finish on every configuration their schema allows."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flnet.api.common.v1 import lifecycle_pb2 as lc
from flnet.api.control.v1 import run_pb2 as rp
from flnet.api.control.v1 import run_service_pb2 as rs
from flnet.api.control.v1 import tool_service_pb2 as ts
from flnet.orchestrator.process_backend import ProcessBackend
from flnet.structs import dict_to_struct
from flnet.toolspec import load_tool_spec
from tests.conftest import (
    EXAMPLES,
    TENANT,
    attach_orchestrator,
    clients_for,
    control_app,
    control_settings,
    request_id,
)
from tests.integration.conftest import Stack

S = lc.RunState
LOGREG = EXAMPLES / "logreg"
MiB = 1024 * 1024

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(params=[True, False], ids=["cgroup", "rlimits"])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    """The in-process stack, its orchestrator with a cgroup per run or rlimits only."""
    cgroups: bool = request.param
    if cgroups and os.geteuid() != 0:
        pytest.skip("cgroups need root here")
    control = control_app(control_settings(tmp_path))
    await control.start("127.0.0.1:0")
    address = f"127.0.0.1:{control.port}"
    orchestrator = await attach_orchestrator(address, tmp_path / "orchestrator", cgroups=cgroups)
    backend = orchestrator.backend
    assert isinstance(backend, ProcessBackend)
    assert (backend.cgroups is not None) == cgroups
    api = clients_for(address)
    yield Stack(api, control, orchestrator)
    await api.channel.close()
    await orchestrator.stop()
    await control.stop(0.5)


@pytest.mark.parametrize("memory_bytes", [0, 128 * MiB], ids=["as-shipped", "128MiB"])
async def test_logreg_with_8000_epochs_finishes(stack: Stack, memory_bytes: int) -> None:
    spec = load_tool_spec(LOGREG)
    if memory_bytes:
        spec.version.resources.memory_bytes = memory_bytes
    created = await stack.api.tools.CreateToolVersion(
        ts.CreateToolVersionRequest(
            parent=f"{TENANT}/tools/logreg-{memory_bytes}",
            tool_version=await stack.api.with_source(spec),
        )
    )
    data = await stack.api.upload((LOGREG / "sample.csv").read_bytes())
    request = rs.CreateRunRequest(
        parent=TENANT,
        request_id=request_id(),
        run=rp.Run(
            tool_version=created.tool_version.name,
            config=dict_to_struct({"epochs": 8000}),
            inputs=[rp.RunInput(name="data", artifact=data)],
        ),
    )
    run = (await stack.api.runs.CreateRun(request)).run

    done = await stack.wait_state(run.name, within=240)

    assert done.state == S.RUN_STATE_FINISHED, done.error
