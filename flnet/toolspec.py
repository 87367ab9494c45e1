"""tool.yaml: the contract a tool author writes, turned into a ToolVersion message.

A tool runs from its source (the process backend) or from a container image (the docker
backend). tool.yaml always describes the source, the files of its directory, which are
uploaded as an archive (`spec.with_source(archive)` once it is); `image: {build: "."}` adds
that the tool can be built into an image, from that build context (relative to the tool
directory). Loading is pure: it reads files and never talks to Docker or the platform.
Whoever registers the tool decides which of the two to register (`flnet tool register
--image` builds the image with flnet.images and registers `spec.with_image(reference,
digest)`), because a tool version pins exactly one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flnet.api.common.v1 import io_pb2
from flnet.api.control.v1 import tool_pb2 as tp


class ToolSpecError(ValueError):
    pass


@dataclass(frozen=True)
class ImageBuild:
    """tool.yaml `image: {build: DIR}`: how the tool's image is built."""

    #: Absolute build context: the directory whose files become /opt/tool in the image.
    context: Path


@dataclass(frozen=True)
class ToolSpec:
    name: str
    #: The version as source (process backend), with the whole contract; its source names
    #: no archive until one is uploaded.
    version: tp.ToolVersion
    #: The tool directory: the files its source archive holds.
    directory: Path
    #: Set when tool.yaml names an image build context.
    image_build: ImageBuild | None = None

    @property
    def entrypoint(self) -> str:
        """The entrypoint "file.py:function", relative to the tool directory (and to the build
        context)."""
        return self.version.source.entrypoint

    def with_source(self, archive: str) -> tp.ToolVersion:
        """The version running the uploaded source archive `archive` (an artifact name)."""
        version = tp.ToolVersion()
        version.CopyFrom(self.version)
        version.source.archive = archive
        return version

    def with_image(self, reference: str, digest: str) -> tp.ToolVersion:
        """The same contract pinned to a container image instead of local source (the
        entrypoint is the same, relative to /opt/tool, where the build context goes)."""
        version = tp.ToolVersion()
        version.CopyFrom(self.version)
        version.image.CopyFrom(
            tp.ContainerImage(reference=reference, digest=digest, entrypoint=self.entrypoint)
        )
        return version


_TIMEOUTS = {
    "deadline_seconds": "deadline",
    "inactivity_seconds": "inactivity",
    "connect_seconds": "connect",
    "cancel_grace_seconds": "cancel_grace",
}


def _io(items: Any, where: str) -> list[io_pb2.IoSpec]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise ToolSpecError(f"{where} must be a list")
    return [
        io_pb2.IoSpec(
            name=str(i["name"]),
            media_type=str(i.get("media_type", "application/octet-stream")),
            required=bool(i.get("required", False)),
            max_size_bytes=int(i.get("max_size_bytes", 0)),
            description=str(i.get("description", "")),
        )
        for i in items
    ]


def _image_build(image: Any, tool_dir: Path, entrypoint: str, where: Path) -> ImageBuild:
    hint = "'image' must be a mapping {build: DIR}, DIR relative to the tool directory"
    if not isinstance(image, dict) or set(image) != {"build"}:
        raise ToolSpecError(f"{where}: {hint}")
    build = image["build"]
    if not isinstance(build, str) or not build.strip():
        raise ToolSpecError(f"{where}: {hint}")
    context = (tool_dir / build).resolve()
    if not context.is_dir():
        raise ToolSpecError(f"{where}: image.build {build!r} is not a directory")
    if not (context / entrypoint.partition(":")[0]).is_file():
        raise ToolSpecError(
            f"{where}: the entrypoint {entrypoint!r} is not in the image build context {build!r}"
        )
    return ImageBuild(context=context)


def load_tool_spec(path: Path) -> ToolSpec:
    """Reads `path` (a tool.yaml, or a directory holding one) into a ToolVersion that runs
    from source (the process backend), and the image build context if it names one."""
    path = path.resolve()
    if path.is_dir():
        path = path / "tool.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ToolSpecError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise ToolSpecError(f"{path} must hold a mapping")
    # config_schema may be left out: `flnet tool register` derives it from the tool's Config.
    for key in ("name", "version", "entrypoint"):
        if key not in data:
            raise ToolSpecError(f"{path}: '{key}' is required")
    version = tp.ToolVersion(
        version=str(data["version"]),
        kind=str(data.get("kind", "")),
        description=str(data.get("description", "")).strip(),
        source=tp.SourceArchive(entrypoint=str(data["entrypoint"])),
        inputs=_io(data.get("inputs"), "inputs"),
        outputs=_io(data.get("outputs"), "outputs"),
    )
    if data.get("config_schema") is not None:
        if not isinstance(data["config_schema"], dict):
            raise ToolSpecError(f"{path}: 'config_schema' must be a mapping")
        version.config_schema.update(data["config_schema"])
    res = data.get("resources") or {}
    version.resources.CopyFrom(
        tp.Resources(
            cpu_millis=int(res.get("cpu_millis", 0)),
            memory_bytes=int(res.get("memory_bytes", 0)),
            pids=int(res.get("pids", 0)),
            scratch_bytes=int(res.get("scratch_bytes", 0)),
            required_labels=[str(label) for label in res.get("required_labels") or ()],
        )
    )
    for key, field in _TIMEOUTS.items():
        value = (data.get("timeouts") or {}).get(key)
        if value is not None:
            getattr(version.timeouts, field).FromNanoseconds(int(float(value) * 1e9))
    image = data.get("image")
    image_build = (
        None if image is None else _image_build(image, path.parent, str(data["entrypoint"]), path)
    )
    return ToolSpec(
        name=str(data["name"]), version=version, directory=path.parent, image_build=image_build
    )
