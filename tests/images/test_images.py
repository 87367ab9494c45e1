"""flnet.images against a real Docker engine: the base image, the image of the csv_stats
example, and what runs inside them with the network off."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import pytest

from flnet import images
from flnet.sources import source_sha256, tool_files
from tests.docker_env import docker
from tests.images.conftest import CSV_STATS, REPOSITORY, Built, build_csv_stats, run_in

# The first session on a machine may debootstrap the base image (about a minute).
pytestmark = pytest.mark.timeout(600)


def test_base_image_runs_python_without_network(base_image: images.BuiltImage) -> None:
    assert base_image.reference == images.BASE_IMAGE
    assert base_image.digest.startswith("sha256:")
    inspected = json.loads(docker("image", "inspect", images.BASE_IMAGE).stdout)[0]
    assert inspected["Id"] == base_image.digest
    done = run_in(images.BASE_IMAGE, "python3", "-c", "pass")
    assert done.returncode == 0, done.stderr
    done = run_in(
        images.BASE_IMAGE, "python3", "-c", "import venv, ssl; print(ssl.OPENSSL_VERSION)"
    )
    assert done.returncode == 0, done.stderr
    assert run_in(images.BASE_IMAGE, "ls", "/sys/class/net").stdout.split() == ["lo"]


def test_existing_base_is_kept_without_building(base_image: images.BuiltImage) -> None:
    again = asyncio.run(images.build_base())
    assert not again.built
    assert again.digest == base_image.digest


def test_cached_rootfs_gives_the_same_base_id(base_image: images.BuiltImage) -> None:
    """The image config is written from the cached tarball alone: loading it again (here
    under another tag, so the real one never goes missing) gives the very same id."""
    if not images.base_layer_path().is_file():
        pytest.skip("the base image was not built by flnet.images here (no cached rootfs)")
    tag = f"{REPOSITORY}/base:bookworm"
    try:
        again = asyncio.run(images.build_base(reference=tag, force=True))
        assert again.built
        assert again.digest == base_image.digest
    finally:
        docker("image", "rm", tag, check=False)


def test_tool_image_is_pinned_by_its_config_digest(csv_stats_image: Built) -> None:
    image = csv_stats_image.image
    assert image.reference == f"{REPOSITORY}/csv-stats:1.0.0"
    assert image.digest.startswith("sha256:") and len(image.digest) == 71
    inspected = json.loads(docker("image", "inspect", image.reference).stdout)[0]
    assert inspected["Id"] == image.digest
    # The id is the content digest of the image config, which names every layer.
    assert json.loads(docker("image", "inspect", image.digest).stdout)[0]["Id"] == image.digest
    config = inspected["Config"]
    labels = config["Labels"]
    assert labels["org.flnet.tool.name"] == "csv-stats"
    assert labels["org.flnet.tool.version"] == "1.0.0"
    assert labels["org.flnet.tool.entrypoint"] == "tool.py:main"
    # The same digest the control plane records for the tool's source.
    assert labels["org.flnet.tool.source-sha256"] == source_sha256(CSV_STATS)
    assert config["User"] == "10001:10001"
    assert config["Cmd"] == ["/opt/flnet/bin/python", "-m", "flnet.runtime"]
    assert "PYTHONDONTWRITEBYTECODE=1" in config["Env"]
    assert "FLNET_ENTRYPOINT=tool.py:main" in config["Env"]
    assert image.size_bytes == inspected["Size"]


def test_tool_image_runs_the_runtime_as_10001_without_network(csv_stats_image: Built) -> None:
    ref = csv_stats_image.image.digest
    assert run_in(ref, "id", "-u").stdout.strip() == "10001"
    done = run_in(ref, "/opt/flnet/bin/python", "-c", "import flnet.runtime, grpc")
    assert done.returncode == 0, done.stderr
    # Only the runtime's dependencies: no platform extras, no pip, no wheels left behind.
    probe = (
        "import importlib.util as u, os, sys; "
        "print(sorted(m for m in ('sqlalchemy', 'aiodocker', 'yaml', 'pip') if u.find_spec(m)));"
        "print(os.path.exists('/tmp/wheels'), sys.flags.dont_write_bytecode)"
    )
    done = run_in(ref, "/opt/flnet/bin/python", "-c", probe)
    assert done.stdout.split("\n")[:2] == ["[]", "False 1"], done.stderr
    # The default command is the engine, which asks for its settings.
    done = run_in(ref)
    assert done.returncode == 2
    assert "FLNET_RUN is not set" in done.stderr


def test_tool_files_are_at_opt_tool_and_not_writable(csv_stats_image: Built) -> None:
    probe = """
import os, pathlib, stat
root = pathlib.Path("/opt/tool")
files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
print(files)
for p in [root, *root.rglob("*")]:
    st = p.stat()
    assert st.st_uid == 0 and st.st_gid == 0, p
    assert not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH), p
    assert not os.access(p, os.W_OK), p
try:
    open(root / "tool.py", "a")
except PermissionError:
    print("read-only")
try:
    (root / "new").write_text("x")
except PermissionError:
    print("no new files")
"""
    done = run_in(csv_stats_image.image.digest, "/opt/flnet/bin/python", "-c", probe)
    assert done.returncode == 0, done.stderr
    expected = sorted(str(p) for p in tool_files(CSV_STATS))
    assert done.stdout.splitlines() == [str(expected), "read-only", "no new files"]


def test_rebuilding_an_unchanged_tool_is_quick_and_gives_the_same_digest(
    csv_stats_image: Built,
) -> None:
    again = build_csv_stats()
    assert again.image.digest == csv_stats_image.image.digest
    assert again.seconds < 20, f"a cached rebuild took {again.seconds:.1f} s"


def test_builds_have_no_network(base_image: images.BuiltImage) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        (context / "Dockerfile").write_text(
            f"FROM {images.BASE_IMAGE}\n"
            'RUN test "$(ls /sys/class/net)" = lo && echo only-loopback\n'
        )
        lines: list[str] = []
        built = asyncio.run(
            images.build_context(
                context, f"{REPOSITORY}/no-network:test", nocache=True, progress=lines.append
            )
        )
    try:
        assert "only-loopback" in lines
        assert built.digest.startswith("sha256:")
    finally:
        docker("image", "rm", built.digest, check=False)


def test_a_failing_build_says_why(base_image: images.BuiltImage) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        (context / "Dockerfile").write_text(
            f"FROM {images.BASE_IMAGE}\nRUN echo about to fail && false\n"
        )
        with pytest.raises(images.ImageError) as e:
            asyncio.run(images.build_context(context, f"{REPOSITORY}/fails:test", nocache=True))
    assert "returned a non-zero code: 1" in str(e.value)
    assert "about to fail" in str(e.value)


def test_a_missing_base_is_named(docker_engine: None) -> None:
    with pytest.raises(images.ImageError, match="flnet image build-base"):
        asyncio.run(
            images.build_tool_image(
                CSV_STATS,
                name="csv-stats",
                version="1.0.0",
                entrypoint="tool.py:main",
                base=f"{REPOSITORY}/no-such-base:none",
            )
        )


def test_the_tool_loads_under_the_production_container_profile(csv_stats_image: Built) -> None:
    """Read-only root, no capabilities, no new privileges, noexec tmpfs /tmp (DESIGN §5):
    the engine finds the tool through the image's ENV and loads its entrypoint."""
    probe = (
        "import os; from pathlib import Path; "
        "from flnet.runtime.loader import load_entrypoint; "
        "f = load_entrypoint(Path(os.environ['FLNET_TOOL_DIR']), os.environ['FLNET_ENTRYPOINT']); "
        "print(f.__name__, os.environ['HOME'], os.getcwd())"
    )
    done = docker(
        "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp:rw,noexec,nosuid",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        csv_stats_image.image.digest, "/opt/flnet/bin/python", "-c", probe,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["main", "/tmp", "/tmp"]
