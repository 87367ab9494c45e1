"""The image of one tool version: FROM the base, the flnet runtime in a venv, the tool's files
read-only for its non-root user (see flnet.images)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from flnet.sources import source_sha256, tool_files

from .base import BASE_IMAGE
from .engine import (
    IMAGE_PATH,
    LABEL,
    MACHINE,
    BuiltImage,
    ImageError,
    Progress,
    build_image,
    cache_dir,
    docker_client,
    dockerfile_quote,
    inspect_image,
    quiet,
    sha256_file,
    write_context,
)
from .wheels import flnet_wheel_path, runtime_requirements, vendor_wheels

VENV = "/opt/flnet"
TOOL_ROOT = "/opt/tool"
TOOL_UID = 10001
DEFAULT_CMD = (f"{VENV}/bin/python", "-m", "flnet.runtime")
_TOOL_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_VERSION = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,62}$")
_ENTRYPOINT = re.compile(r"^[A-Za-z0-9_./-]+\.py:[A-Za-z_][A-Za-z0-9_]*$")
_REPOSITORY = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$")


def image_tag(name: str, version: str, repository: str = "flnet") -> str:
    """The tag "flnet/<name>:<version>"; a '+' of the version becomes '_' (tags cannot
    hold '+')."""
    return f"{repository}/{name}:{version.replace('+', '_')}"


async def build_tool_image(
    tool_dir: Path,
    *,
    name: str,
    version: str,
    entrypoint: str,
    base: str = BASE_IMAGE,
    repository: str = "flnet",
    cache: Path | None = None,
    source: Path | None = None,
    flnet_wheel: Path | None = None,
    nocache: bool = False,
    progress: Progress | None = None,
) -> BuiltImage:
    """Builds the image of one tool version from `tool_dir` (its build context, copied to
    /opt/tool; `entrypoint` is relative to it) and returns its tag and id.

    The flnet wheel comes from `flnet_wheel`, else is built from `source` (default: the
    repository this module was imported from), and is cached by the digest of its sources;
    its runtime dependencies are downloaded once for the base image's Python and machine into
    the cache. The build itself never has a network. Raises ImageError (DockerUnavailable
    when there is no engine)."""
    say = progress or quiet
    tool_dir = await asyncio.to_thread(_checked_tool, tool_dir, name, version, entrypoint)
    if not _REPOSITORY.match(repository):
        raise ImageError(f"repository {repository!r} is not a valid image repository")
    reference = image_tag(name, version, repository)
    root = cache or cache_dir()
    async with docker_client() as docker:
        base_info = await inspect_image(docker, base)
        if base_info is None:
            raise ImageError(f"the base image {base} is missing: run `flnet image build-base`")
        base_labels = base_info.get("Config", {}).get("Labels") or {}
        python = str(base_labels.get(f"{LABEL}.base.python", "3.11"))
        machine = MACHINE.get(str(base_info.get("Architecture", "")), os.uname().machine)
        wheel = flnet_wheel or await flnet_wheel_path(root, source)
        with tempfile.TemporaryDirectory(prefix="flnet-image-") as tmp:
            wheels = Path(tmp) / "wheels"
            await vendor_wheels(root, runtime_requirements(wheel), python, machine, wheels)
            await asyncio.to_thread(shutil.copy2, wheel, wheels / wheel.name)
            files = await asyncio.to_thread(tool_files, tool_dir)
            labels = {
                f"{LABEL}.tool.name": name,
                f"{LABEL}.tool.version": version,
                f"{LABEL}.tool.entrypoint": entrypoint,
                f"{LABEL}.tool.source-sha256": await asyncio.to_thread(
                    source_sha256, tool_dir, files
                ),
                f"{LABEL}.runtime.wheel-sha256": await asyncio.to_thread(sha256_file, wheel),
                f"{LABEL}.base.id": str(base_info["Id"]),
                "org.opencontainers.image.title": name,
                "org.opencontainers.image.version": version,
            }
            dockerfile = tool_dockerfile(base, wheel.name, entrypoint, labels)
            context = Path(tmp) / "context.tar"
            await asyncio.to_thread(
                write_context,
                context,
                [("Dockerfile", dockerfile.encode())]
                + [(f"wheels/{w.name}", w) for w in sorted(wheels.iterdir())]
                + [(f"tool/{f}", tool_dir / f) for f in files],
            )
            say(f"building {reference} (network off)")
            digest = await build_image(docker, context, reference, nocache=nocache, say=say)
        info = await inspect_image(docker, digest)
        if info is None:
            raise ImageError(f"{reference} vanished right after it was built")
        return BuiltImage(reference, digest, int(info.get("Size", 0)))


def _checked_tool(tool_dir: Path, name: str, version: str, entrypoint: str) -> Path:
    tool_dir = tool_dir.resolve()
    if not tool_dir.is_dir():
        raise ImageError(f"{tool_dir} is not a directory")
    if not _TOOL_NAME.match(name):
        raise ImageError(f"tool name {name!r} must match [a-z0-9]([a-z0-9-]*[a-z0-9])?")
    if not _VERSION.match(version):
        raise ImageError(f"version {version!r} must match [a-z0-9][a-z0-9.+-]{{0,62}}")
    if not _ENTRYPOINT.match(entrypoint):
        raise ImageError(f"entrypoint {entrypoint!r} must be 'file.py:function'")
    if not (tool_dir / entrypoint.partition(":")[0]).is_file():
        raise ImageError(f"entrypoint {entrypoint!r}: file not found in {tool_dir}")
    return tool_dir


def tool_dockerfile(base: str, wheel: str, entrypoint: str, labels: dict[str, str]) -> str:
    """The Dockerfile of a tool image. Its build context holds `wheels/` (the flnet wheel and
    its runtime dependencies) and `tool/` (the tool's files, root-owned, 0644/0755). The venv
    is made in a first stage, so the wheels never reach the image; the steps that change
    least come first, for the layer cache. The first stage's image stays behind untagged
    (labelled org.flnet.build-stage=venv): it is the cache of the venv, shared by every tool
    built with the same wheels, and may be pruned (the next build makes it again)."""
    py = f"{VENV}/bin/python"
    label_lines = " \\\n      ".join(
        f"{dockerfile_quote(k)}={dockerfile_quote(v)}" for k, v in sorted(labels.items())
    )
    return f"""\
# Generated by flnet.images: the image of one tool version.
FROM {base} AS venv
COPY wheels/ /tmp/wheels/
RUN python3 -m venv {VENV} \\
 && {py} -m pip install --no-index --no-cache-dir --no-compile --disable-pip-version-check \\
      --find-links /tmp/wheels /tmp/wheels/{wheel} \\
 && {py} -m pip uninstall --yes --quiet --disable-pip-version-check pip setuptools \\
 && {py} -m compileall -q -j 0 --invalidation-mode unchecked-hash {VENV}/lib
LABEL {dockerfile_quote(LABEL + ".build-stage")}="venv"

FROM {base}
RUN echo 'flnet:x:{TOOL_UID}:{TOOL_UID}:FLNet tool:/tmp:/usr/sbin/nologin' >> /etc/passwd \\
 && echo 'flnet:x:{TOOL_UID}:' >> /etc/group
COPY --from=venv {VENV} {VENV}
ENV PATH={VENV}/bin:{IMAGE_PATH} VIRTUAL_ENV={VENV} LANG=C.UTF-8 HOME=/tmp \\
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY tool/ {TOOL_ROOT}/
ENV FLNET_TOOL_DIR={TOOL_ROOT} FLNET_ENTRYPOINT={dockerfile_quote(entrypoint)}
LABEL {label_lines}
USER {TOOL_UID}:{TOOL_UID}
WORKDIR /tmp
CMD {json.dumps(list(DEFAULT_CMD))}
"""
