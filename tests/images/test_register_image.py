"""`flnet tool register --image` and `flnet image ...`: building and registering an image
version against a real control plane and a real Docker engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from flnet import images
from flnet.client import FlnetClient
from flnet.control.app import ControlApp
from flnet.toolspec import ToolSpecError
from tests.conftest import FIXTURES
from tests.docker_env import docker
from tests.identity import IDENTITY
from tests.images.conftest import CSV_STATS, Built

pytestmark = pytest.mark.timeout(600)


async def test_register_with_image_pins_the_built_digest(
    control: ControlApp, csv_stats_image: Built
) -> None:
    async with FlnetClient(f"127.0.0.1:{control.port}", IDENTITY.token()) as c:
        res = await c.register_tool(CSV_STATS, image=True)
        version = res.tool_version
        assert res.created
        assert version.WhichOneof("artifact") == "image"
        assert version.image.reference == "flnet/csv-stats:1.0.0"
        inspected = json.loads(docker("image", "inspect", version.image.reference).stdout)[0]
        assert version.image.digest == inspected["Id"]
        # The same content as the test build: only the tag differs.
        assert version.image.digest == csv_stats_image.image.digest
        # A version pins one artifact: the same version from source is another contract.
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.register_tool(CSV_STATS)
        assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_register_with_image_needs_a_build_context(control: ControlApp) -> None:
    async with FlnetClient(f"127.0.0.1:{control.port}", IDENTITY.token()) as c:
        with pytest.raises(ToolSpecError, match="names no image build context"):
            await c.register_tool(FIXTURES / "tools" / "noop", image=True)


def flnet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flnet.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_builds_the_base_and_a_tool_image(csv_stats_image: Built) -> None:
    done = flnet("-o", "json", "image", "build-base")
    assert done.returncode == 0, done.stderr
    base = json.loads(done.stdout)
    assert base["reference"] == images.BASE_IMAGE
    assert (
        base["digest"] == json.loads(docker("image", "inspect", images.BASE_IMAGE).stdout)[0]["Id"]
    )

    done = flnet("image", "build", str(CSV_STATS), "-o", "json")
    assert done.returncode == 0, done.stderr
    built = json.loads(done.stdout)
    assert set(built) == {"reference", "digest", "sizeBytes"}
    assert built["reference"] == "flnet/csv-stats:1.0.0"
    assert built["digest"] == csv_stats_image.image.digest

    done = flnet("image", "build", str(CSV_STATS))  # text: progress on stderr
    assert done.returncode == 0, done.stderr
    assert "Step 1/" in done.stderr
    assert built["digest"] in done.stdout


def test_cli_names_a_tool_without_build_context(tmp_path: Path) -> None:
    done = flnet("image", "build", str(FIXTURES / "tools" / "noop"))
    assert done.returncode == 2
    assert "names no image build context" in done.stderr
