"""Fixtures of the image tests: a real Docker engine, the base image and the example tool's
image. Without Docker these tests skip, except in CI (CI=true), where they fail loudly."""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import dataclass

import pytest

from flnet import images
from flnet.toolspec import load_tool_spec
from tests.conftest import EXAMPLES
from tests.docker_env import docker, require_base_image, require_docker

CSV_STATS = EXAMPLES / "csv_stats"
#: Test images are tagged apart from the ones users build.
REPOSITORY = "flnet-test"


def run_in(image: str, *command: str) -> subprocess.CompletedProcess[str]:
    """Runs a command in a throwaway container with no network."""
    return docker("run", "--rm", "--network", "none", image, *command, check=False)


@pytest.fixture(scope="session")
def docker_engine() -> None:
    require_docker()


@pytest.fixture(scope="session")
def base_image(docker_engine: None) -> images.BuiltImage:
    return require_base_image()


@dataclass(frozen=True)
class Built:
    image: images.BuiltImage
    seconds: float


def build_csv_stats() -> Built:
    spec = load_tool_spec(CSV_STATS)
    assert spec.image_build is not None
    started = time.monotonic()
    image = asyncio.run(
        images.build_tool_image(
            spec.image_build.context,
            name=spec.name,
            version=spec.version.version,
            entrypoint=spec.entrypoint,
            repository=REPOSITORY,
        )
    )
    return Built(image, time.monotonic() - started)


@pytest.fixture(scope="session")
def csv_stats_image(base_image: images.BuiltImage) -> Built:
    return build_csv_stats()
