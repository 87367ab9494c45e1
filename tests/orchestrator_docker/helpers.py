"""Helpers of the docker backend tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiodocker
from aiodocker.containers import DockerContainer

from flnet.api.orchestrator.v1 import orchestrator_pb2 as pb
from flnet.orchestrator.docker_container import LABEL_MANAGED, LABEL_WORKDIR
from tests.orchestrator.helpers import Orchestrator, wait_for

BASE_IMAGE = "flnet/base:bookworm"
TEST_IMAGE = "flnet/test-probe:latest"
DOCKER_SOCKET = "/var/run/docker.sock"
MiB = 1024 * 1024


@dataclass
class DockerOrchestrator(Orchestrator):
    """An orchestrator with the docker backend; runs execute probe.py's functions."""

    image: str = ""
    # The engines' control-plane stand-in (a unix socket), given in launches.
    control_address: str = ""

    async def launch_probe(
        self, function: str, run: str | None = None, **fields: Any
    ) -> pb.RunContainer:
        """Launches the test image as a run executing probe.py's `function`; `fields` go to
        LaunchRunRequest."""
        fields.setdefault("control_address", self.control_address)
        fields.setdefault("credential", "secret-credential-of-the-run")
        fields.setdefault("image_digest", self.image)
        return await self.launch(None, run, entrypoint=f"probe.py:{function}", **fields)

    def ready(self, run: str) -> bool:
        return (self.workdir(run) / "output" / "ready").exists()

    async def until_ready(self, run: str) -> None:
        await wait_for(lambda: self.ready(run))

    def observations(self, run: str) -> dict[str, Any]:
        return self.observations_in(self.workdir(run))

    @staticmethod
    def observations_in(workdir: Path) -> dict[str, Any]:
        """What `observe` saw, in the work dir of its container (a standby's: docker_pool)."""
        return json.loads((workdir / "output" / "observations.json").read_text())  # type: ignore[no-any-return]


class StartDockerOrchestrator(Protocol):
    """The `start_orchestrator` fixture: OrchestratorApp keyword arguments in."""

    async def __call__(self, data_dir: Path | None = None, **kwargs: Any) -> DockerOrchestrator: ...


async def leftovers(
    docker: aiodocker.Docker, root: Path
) -> tuple[list[DockerContainer], list[Path]]:
    """Containers of ours whose work dir lies below `root`, and work dirs below it."""
    found = await docker.containers.list(
        all=True, filters=json.dumps({"label": [f"{LABEL_MANAGED}=true"]})
    )
    prefix = str(root.resolve()) + "/"
    containers = [c for c in found if (c["Labels"] or {}).get(LABEL_WORKDIR, "").startswith(prefix)]
    workdirs = sorted(root.glob("*/orchestrator/runs/*"))
    return containers, workdirs
