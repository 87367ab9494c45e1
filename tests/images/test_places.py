"""Where flnet.images keeps its cache and finds Docker (no Docker needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flnet import images


def test_the_cache_dir_can_be_chosen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLNET_IMAGE_CACHE", str(tmp_path / "cache"))
    assert images.cache_dir() == tmp_path / "cache"
    assert images.base_layer_path(cache=tmp_path).parent == tmp_path / "base"


def test_a_missing_socket_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'docker.sock'}")
    assert images.docker_url() == f"unix://{tmp_path / 'docker.sock'}"
    assert asyncio.run(images.docker_available()) is False
    with pytest.raises(images.DockerUnavailable, match=r"docker\.sock is missing"):
        asyncio.run(images.image_info("flnet/base:bookworm"))


def test_tags_cannot_hold_a_plus() -> None:
    assert images.image_tag("csv-stats", "1.0.0+local.2") == "flnet/csv-stats:1.0.0_local.2"


def test_the_runtime_requirements_are_the_wheel_s_without_extras(tmp_path: Path) -> None:
    import zipfile

    wheel = tmp_path / "flnet-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(
            "flnet-0.1.0.dist-info/METADATA",
            "Name: flnet\nRequires-Dist: grpcio==1.85.1\nRequires-Dist: protobuf>=7.35.1\n"
            'Requires-Dist: aiodocker>=0.24; extra == "platform"\n',
        )
    assert images.runtime_requirements(wheel) == ["grpcio==1.85.1", "protobuf>=7.35.1"]
