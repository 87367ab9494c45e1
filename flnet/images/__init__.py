"""Images for production mode: the Debian base image, one image per tool version, and the
gateway's.

Platform side (it needs aiodocker, from `flnet[platform]`). Everything goes through the Docker
Engine HTTP API with aiodocker, the client the docker backend of the orchestrator uses too: one
library and one socket setting (DOCKER_HOST), no docker CLI needed, structured progress and
errors. aiodocker's `images.build` has no network-mode parameter, so the one build request is
sent with `Docker._query` and `networkmode=none`: no build step ever has a network.

Images (see DESIGN §9; nothing is ever pulled):

- `flnet/base:bookworm` (`build_base`): Debian bookworm `debootstrap --variant=minbase` with
  python3, python3-venv and ca-certificates, without apt lists, .debs, logs, man pages, locales
  and docs (copyright files stay). The tree is packed once into a reproducible tarball (sorted
  names, numeric owners, clamped mtimes) in the cache and loaded with `docker load` as a
  one-layer image whose config this module writes itself, with `created` = the time of the
  debootstrap (or SOURCE_DATE_EPOCH). So the same cached tarball always gives the same image
  id, and a rebuild after `docker rmi` takes seconds.
- `flnet/<tool>:<version>` (`build_tool_image`): FROM the base, a venv at /opt/flnet holding
  the flnet wheel built from this repository (installed without extras: the runtime, i.e.
  grpcio and protobuf) from wheels vendored into the build context, the tool's files at
  /opt/tool (root-owned, read-only for the tool's user), USER 10001, and labels naming the
  tool, its version, entrypoint and source sha256. Built by the legacy builder with the
  network off.

Digests: there is no registry here, so an image has no registry (manifest) digest. The digest
FLNet pins is the local image id `sha256:<hex>`: the sha256 of the image's config JSON, which
names the sha256 of every layer (`rootfs.diff_ids`) - a content digest of the whole image.
`docker run sha256:<hex>` runs exactly that content. Rebuilding an unchanged tool is answered
from the layer cache and gives the same id (and takes under a second). "Unchanged" covers the
flnet wheel too: it is built from the repository's sources (all of flnet, as `pip wheel` makes
it), so editing any of them makes a new wheel, a new venv layer and a new id. After the tool
image and its cache are gone (`docker rmi`, `docker image prune`), a rebuild gives a new id:
the legacy builder stamps creation times into the config of each step, and pip's files carry
install-time mtimes. Runs stay pinned to the id registered with their tool version.

Cache (`cache_dir()`: $FLNET_IMAGE_CACHE, else /var/cache/flnet when writable, else
$XDG_CACHE_HOME/flnet or ~/.cache/flnet):

    base/debian-<suite>-<arch>.tar    the base image's single layer (uncompressed rootfs)
    base/debian-<suite>-<arch>.json   its digest, creation time, python version, command
    base/debootstrap.log              output of the last debootstrap
    wheels/flnet/<source-hash>/       the flnet wheel of one state of the sources
    wheels/cp<XY>-<machine>/          grpcio, protobuf and their dependencies for the image

The package, by concern: `engine` (the Docker engine: cache, socket, dockerd, inspect, one
network-off build), `base` (the base image), `wheels` (what a tool image installs), `tool` (a
tool version's image) and `gateway` (the gateway's image).
"""

from __future__ import annotations

from .base import BASE_IMAGE, DEBIAN_MIRROR, DEBIAN_SUITE, base_layer_path, build_base
from .engine import (
    LABEL,
    BuiltImage,
    DockerUnavailable,
    ImageError,
    Progress,
    build_context,
    cache_dir,
    docker_available,
    docker_client,
    docker_url,
    ensure_dockerd,
    image_info,
)
from .gateway import (
    GATEWAY_CONFIG,
    GATEWAY_REPOSITORY,
    GATEWAY_UID,
    build_gateway_image,
    gateway_dockerfile,
)
from .tool import TOOL_ROOT, TOOL_UID, VENV, build_tool_image, image_tag, tool_dockerfile
from .wheels import flnet_wheel_path, runtime_requirements, source_root, vendor_wheels

__all__ = [
    "BASE_IMAGE",
    "DEBIAN_MIRROR",
    "DEBIAN_SUITE",
    "GATEWAY_CONFIG",
    "GATEWAY_REPOSITORY",
    "GATEWAY_UID",
    "LABEL",
    "TOOL_ROOT",
    "TOOL_UID",
    "VENV",
    "BuiltImage",
    "DockerUnavailable",
    "ImageError",
    "Progress",
    "base_layer_path",
    "build_base",
    "build_context",
    "build_gateway_image",
    "build_tool_image",
    "cache_dir",
    "docker_available",
    "docker_client",
    "docker_url",
    "ensure_dockerd",
    "flnet_wheel_path",
    "gateway_dockerfile",
    "image_info",
    "image_tag",
    "runtime_requirements",
    "source_root",
    "tool_dockerfile",
    "vendor_wheels",
]
