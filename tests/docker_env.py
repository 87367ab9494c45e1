"""The Docker engine and base image that production-mode tests need. Without them those
tests skip, except in CI (CI=true), where they fail loudly."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from typing import NoReturn

import pytest

from flnet import images


def docker(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The docker CLI, a client independent of the code under test (classic builder: there
    is no buildx here)."""
    return subprocess.run(
        ["docker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs Docker: {reason}", pytrace=False)
    pytest.skip(f"no Docker: {reason}")


def require_docker() -> None:
    """An engine answers (started here when root and missing), and the docker CLI exists."""
    try:
        asyncio.run(images.ensure_dockerd())
    except images.DockerUnavailable as e:
        unavailable(str(e))
    if shutil.which("docker") is None:
        unavailable("the docker CLI is missing (apt-get install docker.io)")


def require_base_image() -> images.BuiltImage:
    """flnet/base:bookworm: kept, loaded from the cache, or debootstrapped (root only)."""
    require_docker()
    try:
        return asyncio.run(images.build_base())
    except images.ImageError as e:
        unavailable(f"no base image: {e}")
