"""Tool images for production mode: the Debian base image and one image per tool version.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp

from flnet.sources import source_sha256, tool_files

BASE_IMAGE = "flnet/base:bookworm"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
VENV = "/opt/flnet"
TOOL_ROOT = "/opt/tool"
TOOL_UID = 10001
DEFAULT_CMD = (f"{VENV}/bin/python", "-m", "flnet.runtime")
DEFAULT_SOCKET = "/var/run/docker.sock"
LABEL = "org.flnet"
#: mtime of every file put into a build context (1980-01-01, the zip epoch), unless
#: SOURCE_DATE_EPOCH says otherwise.
CONTEXT_EPOCH = 315532800

_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
_MACHINE = {v: k for k, v in _DEBIAN_ARCH.items()}
_TOOL_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_VERSION = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,62}$")
_ENTRYPOINT = re.compile(r"^[A-Za-z0-9_./-]+\.py:[A-Za-z_][A-Za-z0-9_]*$")
_REPOSITORY = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
_BUILD_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30)

Progress = Callable[[str], None]
#: dockerd processes started by ensure_dockerd (kept so that they are never reaped early).
_DAEMONS: list[subprocess.Popen[bytes]] = []


class ImageError(RuntimeError):
    """An image could not be built; the message says why and what to do."""


class DockerUnavailable(ImageError):
    """The Docker engine cannot be reached (and could not be started)."""


@dataclass(frozen=True)
class BuiltImage:
    """An image in the local Docker engine."""

    #: Tag, e.g. "flnet/csv-stats:1.0.0".
    reference: str
    #: Local image id "sha256:<hex>": the digest of the image config (see the module doc).
    digest: str
    #: Uncompressed size of all its layers.
    size_bytes: int
    #: False when an existing image was kept without building (build_base without force).
    built: bool = True


# --------------------------------------------------------------------------------- places


def cache_dir() -> Path:
    """$FLNET_IMAGE_CACHE, else /var/cache/flnet when writable, else ~/.cache/flnet."""
    configured = os.environ.get("FLNET_IMAGE_CACHE", "").strip()
    if configured:
        return Path(configured).expanduser()
    system = Path("/var/cache/flnet")
    if _writable(system):
        return system
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "flnet"


def _writable(path: Path) -> bool:
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def docker_url() -> str:
    """The engine's address: $DOCKER_HOST, else the unix socket /var/run/docker.sock."""
    return os.environ.get("DOCKER_HOST", "").strip() or f"unix://{DEFAULT_SOCKET}"


def _socket_path() -> Path | None:
    url = docker_url()
    return Path(url.removeprefix("unix://")) if url.startswith("unix://") else None


@contextlib.asynccontextmanager
async def docker_client() -> AsyncIterator[aiodocker.Docker]:
    """An aiodocker client of `docker_url()`. Failures of the engine inside the block become
    ImageError, and DockerUnavailable when the engine cannot be reached at all."""
    socket = _socket_path()
    if socket is not None and not socket.is_socket():
        raise DockerUnavailable(
            f"no Docker engine: {socket} is missing (start dockerd, or set DOCKER_HOST)"
        )
    docker = aiodocker.Docker(url=docker_url())
    try:
        yield docker
    except aiohttp.ClientConnectionError as e:
        raise DockerUnavailable(f"cannot reach the Docker engine at {docker_url()}: {e}") from e
    except aiodocker.DockerError as e:
        raise ImageError(f"the Docker engine answered {e.status}: {e.message}") from e
    finally:
        await docker.close()


async def docker_available(within: float = 5.0) -> bool:
    """True when the Docker engine answers within `within` seconds."""
    try:
        async with asyncio.timeout(within), docker_client() as docker:
            await docker.version()
    except (TimeoutError, OSError, ImageError, aiodocker.DockerError, aiohttp.ClientError):
        return False
    return True


async def ensure_dockerd(within: float = 60.0, log_path: Path | None = None) -> None:
    """Makes sure a Docker engine answers, starting `dockerd` in the background when it is
    missing and we are root (for tests and CI; it keeps running after this process). Raises
    DockerUnavailable when that is not possible or the engine does not come up in time."""
    if await docker_available():
        return
    socket = _socket_path()
    if socket is None:
        raise DockerUnavailable(f"the Docker engine at {docker_url()} does not answer")
    dockerd = shutil.which("dockerd")
    if os.geteuid() != 0 or dockerd is None:
        raise DockerUnavailable(
            f"no Docker engine at {socket}, and it cannot be started here "
            + ("(not root)" if os.geteuid() != 0 else "(apt-get install docker.io)")
        )
    process: subprocess.Popen[bytes] | None = None
    log = log_path or Path(tempfile.gettempdir()) / "dockerd.log"
    if not _dockerd_running():
        args = [dockerd]
        if socket != Path(DEFAULT_SOCKET):
            args += ["--host", f"unix://{socket}"]
        process = await asyncio.to_thread(_start_daemon, args, log)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await docker_available(within=2.0):
            return
        if process is not None and process.poll() is not None:
            raise DockerUnavailable(f"dockerd exited with {process.returncode}: {_tail(log)}")
        await asyncio.sleep(0.2)
    raise DockerUnavailable(f"dockerd did not answer within {within:.0f} s: {_tail(log)}")


def _start_daemon(args: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """Starts a daemon in a session of its own: it outlives us, and our signals are not its."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    _DAEMONS.append(process)
    return process


def _dockerd_running() -> bool:
    """True when /var/run/docker.pid names a live process (a dockerd still starting)."""
    try:
        pid = int(Path("/var/run/docker.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


async def image_info(reference: str) -> dict[str, Any] | None:
    """`docker image inspect` of a tag or id, or None when there is no such image."""
    async with docker_client() as docker:
        return await _inspect(docker, reference)


async def _inspect(docker: aiodocker.Docker, reference: str) -> dict[str, Any] | None:
    try:
        return await docker.images.inspect(reference)
    except aiodocker.DockerError as e:
        if e.status == 404:
            return None
        raise


# ------------------------------------------------------------------------------ base image


async def build_base(
    *,
    reference: str = BASE_IMAGE,
    suite: str = DEBIAN_SUITE,
    mirror: str = DEBIAN_MIRROR,
    cache: Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> BuiltImage:
    """Makes `reference` (default flnet/base:bookworm) exist. Does nothing when it does
    (unless `force`); loads it from the cached rootfs tarball when there is one (seconds);
    else runs debootstrap first (about a minute; root and network needed) and caches the
    result. Concurrent calls wait for each other through a lock file in the cache."""
    say = progress or _quiet
    async with docker_client() as docker:
        if not force and (info := await _inspect(docker, reference)) is not None:
            return BuiltImage(reference, info["Id"], int(info.get("Size", 0)), built=False)
        root = cache or cache_dir()
        async with _locked(root / "base.lock"):
            if not force and (info := await _inspect(docker, reference)) is not None:
                return BuiltImage(reference, info["Id"], int(info.get("Size", 0)), built=False)
            layer, meta = await _base_layer(root / "base", suite, mirror, say)
            digest = await _load_base(docker, reference, layer, meta, say)
            info = await _inspect(docker, digest)
            if info is None:
                raise ImageError(f"{reference} vanished right after it was loaded")
            return BuiltImage(reference, digest, int(info.get("Size", 0)))


def base_layer_path(suite: str = DEBIAN_SUITE, cache: Path | None = None) -> Path:
    """Where the rootfs tarball of the base image is cached (it may not exist)."""
    arch = _DEBIAN_ARCH.get(os.uname().machine)
    if arch is None:
        raise ImageError(f"no Debian architecture known for machine {os.uname().machine}")
    return (cache or cache_dir()) / "base" / f"debian-{suite}-{arch}.tar"


async def _base_layer(
    where: Path, suite: str, mirror: str, say: Progress
) -> tuple[Path, dict[str, Any]]:
    """The cached rootfs tarball and its metadata, made by debootstrap when missing."""
    layer = base_layer_path(suite, where.parent)
    arch = _DEBIAN_ARCH[os.uname().machine]
    meta_path = layer.with_suffix(".json")
    if layer.is_file() and meta_path.is_file():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        if meta.get("size") == layer.stat().st_size:
            say(f"using the cached rootfs {layer}")
            return layer, meta
    if os.geteuid() != 0:
        raise ImageError(
            f"no cached rootfs at {layer}, and debootstrap needs root: run "
            "`flnet image build-base` as root once, or point FLNET_IMAGE_CACHE at a cache "
            "that holds it"
        )
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise ImageError("debootstrap is not installed (apt-get install debootstrap)")
    await asyncio.to_thread(where.mkdir, parents=True, exist_ok=True)
    epoch = _source_date_epoch(default=int(time.time()))
    work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="rootfs-", dir=where))
    command = [
        debootstrap,
        "--variant=minbase",
        f"--include={','.join(BASE_PACKAGES)}",
        f"--arch={arch}",
        suite,
        str(work),
        mirror,
    ]
    try:
        say(f"debootstrap {suite} ({arch}) from {mirror} - about a minute")
        await _run(command, log=where / "debootstrap.log")
        python = _python_version(work)
        await asyncio.to_thread(_unmount_all, work)
        await asyncio.to_thread(_prune_rootfs, work)
        say(f"packing the rootfs into {layer}")
        partial = layer.with_name(layer.name + ".partial")
        await _run(_tar_command(work, partial, epoch))
        diff_id = "sha256:" + await asyncio.to_thread(_sha256_file, partial)
        meta = {
            "diff_id": diff_id,
            "size": partial.stat().st_size,
            "created": epoch,
            "suite": suite,
            "arch": arch,
            "python": python,
            "mirror": mirror,
            "command": " ".join(
                ["debootstrap", *command[1:5], "<rootfs>", mirror],
            ),
        }
        partial.replace(layer)
        _write_atomic(meta_path, json.dumps(meta, indent=2, sort_keys=True).encode())
        return layer, meta
    finally:
        await asyncio.to_thread(_remove_tree, work)


def _python_version(rootfs: Path) -> str:
    """The "3.11" of the rootfs' /usr/bin/python3 -> python3.11 link."""
    target = os.readlink(rootfs / "usr/bin/python3")
    match = re.fullmatch(r"python(3\.\d+)", Path(target).name)
    if match is None:
        raise ImageError(f"cannot tell the Python version of the rootfs from {target!r}")
    return match.group(1)


def _prune_rootfs(rootfs: Path) -> None:
    """Drops what a container never needs and what differs from one debootstrap to the next:
    apt lists and .debs, logs, caches, host files, man pages, locales, docs (not copyright)."""

    def clear(relative: str, dirs: bool = True, keep: Callable[[Path], bool] = _never) -> None:
        top = rootfs / relative
        if not top.is_dir():
            return
        for path in sorted(top.rglob("*"), reverse=True):  # children before their parent
            if keep(path):
                continue
            if path.is_dir() and not path.is_symlink():
                if dirs and not any(path.iterdir()):
                    path.rmdir()
            else:
                path.unlink()

    for relative in ("dev", "proc", "sys", "tmp", "var/tmp", "usr/share/man", "usr/share/info"):
        clear(relative)
    clear("usr/share/locale", keep=lambda p: p.name == "locale.alias")
    for relative in ("run", "var/log", "var/lib/apt/lists", "var/cache/apt", "var/cache/ldconfig"):
        clear(relative, dirs=False)
    clear("usr/share/doc", keep=lambda p: p.name == "copyright")
    for old in (*rootfs.glob("var/cache/debconf/*-old"), *rootfs.glob("var/lib/dpkg/*-old")):
        old.unlink()
    # The host's files, which Docker bind-mounts over anyway.
    for name in ("etc/hostname", "etc/resolv.conf"):
        (rootfs / name).write_bytes(b"")
    with contextlib.suppress(FileNotFoundError):
        (rootfs / "etc/machine-id").unlink()


def _never(_: Path) -> bool:
    return False


def _tar_command(rootfs: Path, out: Path, epoch: int) -> list[str]:
    """GNU tar of the rootfs, reproducible: sorted, numeric owners, mtimes clamped to
    `epoch`, no atime/ctime. Members are named "etc/...", as in layers Docker writes."""
    return [
        "tar",
        "--create",
        f"--file={out}",
        f"--directory={rootfs}",
        "--format=posix",
        "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
        "--sort=name",
        "--numeric-owner",
        f"--mtime=@{epoch}",
        "--clamp-mtime",
        "--",
        *sorted(os.listdir(rootfs)),
    ]


def _base_config(meta: dict[str, Any]) -> bytes:
    """The image config of the base: a function of the cached tarball's metadata only (not
    of the tag), so that one tarball always gives one image id."""
    created = datetime.fromtimestamp(int(meta["created"]), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {
        f"{LABEL}.base.suite": str(meta["suite"]),
        f"{LABEL}.base.packages": ",".join(BASE_PACKAGES),
        f"{LABEL}.base.python": str(meta["python"]),
        f"{LABEL}.base.rootfs-sha256": str(meta["diff_id"]),
        "org.opencontainers.image.created": created,
    }
    config = {
        "architecture": meta["arch"],
        "os": "linux",
        "created": created,
        "config": {
            "Env": [f"PATH={_PATH}", "LANG=C.UTF-8"],
            "Cmd": ["bash"],
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [meta["diff_id"]]},
        "history": [{"created": created, "created_by": meta["command"]}],
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


async def _load_base(
    docker: aiodocker.Docker,
    reference: str,
    layer: Path,
    meta: dict[str, Any],
    say: Progress,
) -> str:
    """`docker load` of a one-layer archive written on the fly around the cached tarball.
    Returns the image id, which is the sha256 of the config we wrote."""
    config = _base_config(meta)
    config_hex = hashlib.sha256(config).hexdigest()
    layer_dir = str(meta["diff_id"]).removeprefix("sha256:")
    manifest = json.dumps(
        [
            {
                "Config": f"{config_hex}.json",
                "RepoTags": [reference],
                "Layers": [f"{layer_dir}/layer.tar"],
            }
        ]
    ).encode()
    say(f"loading {reference} into Docker")
    await docker.images.import_image(
        _archive(
            [
                ("manifest.json", manifest),
                (f"{config_hex}.json", config),
                (f"{layer_dir}/layer.tar", layer),
            ]
        ),
        timeout=_BUILD_TIMEOUT,
    )
    info = await _inspect(docker, reference)
    if info is None or info["Id"] != f"sha256:{config_hex}":
        got = None if info is None else info["Id"]
        raise ImageError(f"docker load gave {reference} the id {got}, not sha256:{config_hex}")
    return f"sha256:{config_hex}"


async def _archive(members: Sequence[tuple[str, bytes | Path]]) -> AsyncIterator[bytes]:
    """A tar stream of in-memory members and files, read in chunks (never whole)."""
    for name, content in members:
        info = tarfile.TarInfo(name)
        info.mode = 0o644
        info.mtime = CONTEXT_EPOCH
        info.size = len(content) if isinstance(content, bytes) else content.stat().st_size
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        if isinstance(content, bytes):
            yield content
        else:
            with content.open("rb") as f:
                while chunk := await asyncio.to_thread(f.read, 1 << 20):
                    yield chunk
        if info.size % tarfile.BLOCKSIZE:
            yield b"\0" * (tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


# ------------------------------------------------------------------------------ tool images


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
    say = progress or _quiet
    tool_dir = await asyncio.to_thread(_checked_tool, tool_dir, name, version, entrypoint)
    if not _REPOSITORY.match(repository):
        raise ImageError(f"repository {repository!r} is not a valid image repository")
    reference = image_tag(name, version, repository)
    root = cache or cache_dir()
    async with docker_client() as docker:
        base_info = await _inspect(docker, base)
        if base_info is None:
            raise ImageError(f"the base image {base} is missing: run `flnet image build-base`")
        base_labels = base_info.get("Config", {}).get("Labels") or {}
        python = str(base_labels.get(f"{LABEL}.base.python", "3.11"))
        machine = _MACHINE.get(str(base_info.get("Architecture", "")), os.uname().machine)
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
                f"{LABEL}.runtime.wheel-sha256": await asyncio.to_thread(_sha256_file, wheel),
                f"{LABEL}.base.id": str(base_info["Id"]),
                "org.opencontainers.image.title": name,
                "org.opencontainers.image.version": version,
            }
            dockerfile = tool_dockerfile(base, wheel.name, entrypoint, labels)
            context = Path(tmp) / "context.tar"
            await asyncio.to_thread(
                _write_context,
                context,
                [("Dockerfile", dockerfile.encode())]
                + [(f"wheels/{w.name}", w) for w in sorted(wheels.iterdir())]
                + [(f"tool/{f}", tool_dir / f) for f in files],
            )
            say(f"building {reference} (network off)")
            digest = await _build(docker, context, reference, nocache=nocache, say=say)
        info = await _inspect(docker, digest)
        if info is None:
            raise ImageError(f"{reference} vanished right after it was built")
        return BuiltImage(reference, digest, int(info.get("Size", 0)))


# --------------------------------------------------------------------------- gateway image

GATEWAY_REPOSITORY = "flnet/envoy"
GATEWAY_UID = 10101
GATEWAY_CONFIG = "/etc/flnet/envoy.yaml"


def gateway_dockerfile(base: str, labels: dict[str, str]) -> str:
    """The gateway image: the Envoy binary on the base image, run as a non-root user. Its
    configuration is the one `python -m flnet.gateway --render-only` renders, mounted at
    GATEWAY_CONFIG with the files it names (the built UI) at the same paths, on the host's
    network."""
    label_lines = " \\\n      ".join(f"{_q(k)}={_q(v)}" for k, v in sorted(labels.items()))
    argv = ["/usr/local/bin/envoy", "--disable-hot-restart", "--file-flush-interval-msec", "1000"]
    return f"""\
# Generated by flnet.images: the gateway (Envoy) of container deployments.
FROM {base}
RUN echo 'envoy:x:{GATEWAY_UID}:{GATEWAY_UID}:gateway:/tmp:/usr/sbin/nologin' >> /etc/passwd \\
 && echo 'envoy:x:{GATEWAY_UID}:' >> /etc/group
COPY envoy /usr/local/bin/envoy
LABEL {label_lines}
USER {GATEWAY_UID}:{GATEWAY_UID}
WORKDIR /tmp
ENTRYPOINT {json.dumps(argv)}
CMD ["-c", "{GATEWAY_CONFIG}"]
"""


async def build_gateway_image(
    envoy: Path,
    version: str,
    *,
    base: str = BASE_IMAGE,
    nocache: bool = False,
    progress: Progress | None = None,
) -> BuiltImage:
    """Builds flnet/envoy:<version> from the base image and the Envoy binary `envoy` (the
    one `flnet up` runs), with the network off."""
    reference = f"{GATEWAY_REPOSITORY}:{version}"
    async with docker_client() as docker:
        base_info = await _inspect(docker, base)
        if base_info is None:
            raise ImageError(f"the base image {base} is missing: run `flnet image build-base`")
        labels = {
            f"{LABEL}.gateway.envoy-version": version,
            f"{LABEL}.gateway.envoy-sha256": await asyncio.to_thread(_sha256_file, envoy),
            f"{LABEL}.base.id": str(base_info["Id"]),
            "org.opencontainers.image.title": "flnet-gateway",
            "org.opencontainers.image.version": version,
        }
        with tempfile.TemporaryDirectory(prefix="flnet-image-") as tmp:
            context = Path(tmp) / "context.tar"
            dockerfile = gateway_dockerfile(base, labels).encode()
            await asyncio.to_thread(
                _write_context, context, [("Dockerfile", dockerfile), ("envoy", envoy)]
            )
            (progress or _quiet)(f"building {reference} (network off)")
            digest = await _build(
                docker, context, reference, nocache=nocache, say=progress or _quiet
            )
        info = await _inspect(docker, digest)
    return BuiltImage(reference, digest, int((info or {}).get("Size", 0)))


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
    label_lines = " \\\n      ".join(f"{_q(k)}={_q(v)}" for k, v in sorted(labels.items()))
    return f"""\
# Generated by flnet.images: the image of one tool version.
FROM {base} AS venv
COPY wheels/ /tmp/wheels/
RUN python3 -m venv {VENV} \\
 && {py} -m pip install --no-index --no-cache-dir --no-compile --disable-pip-version-check \\
      --find-links /tmp/wheels /tmp/wheels/{wheel} \\
 && {py} -m pip uninstall --yes --quiet --disable-pip-version-check pip setuptools \\
 && {py} -m compileall -q -j 0 --invalidation-mode unchecked-hash {VENV}/lib
LABEL {_q(LABEL + ".build-stage")}="venv"

FROM {base}
RUN echo 'flnet:x:{TOOL_UID}:{TOOL_UID}:FLNet tool:/tmp:/usr/sbin/nologin' >> /etc/passwd \\
 && echo 'flnet:x:{TOOL_UID}:' >> /etc/group
COPY --from=venv {VENV} {VENV}
ENV PATH={VENV}/bin:{_PATH} VIRTUAL_ENV={VENV} LANG=C.UTF-8 HOME=/tmp \\
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY tool/ {TOOL_ROOT}/
ENV FLNET_TOOL_DIR={TOOL_ROOT} FLNET_ENTRYPOINT={_q(entrypoint)}
LABEL {label_lines}
USER {TOOL_UID}:{TOOL_UID}
WORKDIR /tmp
CMD {json.dumps(list(DEFAULT_CMD))}
"""


def _q(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _write_context(out: Path, members: Sequence[tuple[str, bytes | Path]]) -> None:
    """A build context with fixed metadata: root-owned, mtime CONTEXT_EPOCH (or
    SOURCE_DATE_EPOCH), directories 0755, files 0644 or 0755 when executable."""
    epoch = _source_date_epoch(default=CONTEXT_EPOCH)
    seen: set[str] = set()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, content: bytes | Path | None) -> None:
            info = tarfile.TarInfo(name)
            info.mtime = epoch
            info.uid = info.gid = 0
            if content is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            elif isinstance(content, bytes):
                info.mode = 0o644
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            else:
                info.mode = 0o755 if os.access(content, os.X_OK) else 0o644
                with content.open("rb") as f:
                    info.size = os.fstat(f.fileno()).st_size
                    tar.addfile(info, f)

        for name, content in members:
            parts = name.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent not in seen:
                    seen.add(parent)
                    add(parent, None)
            add(name, content)


async def build_context(
    context: Path, reference: str, *, nocache: bool = False, progress: Progress | None = None
) -> BuiltImage:
    """Builds the Dockerfile of a context directory (files as in `tool_files`) with the
    network off, and returns the image's tag and id."""
    with tempfile.TemporaryDirectory(prefix="flnet-image-") as tmp:
        tar = Path(tmp) / "context.tar"
        files = tool_files(context)
        await asyncio.to_thread(_write_context, tar, [(str(f), context / f) for f in files])
        async with docker_client() as docker:
            digest = await _build(docker, tar, reference, nocache=nocache, say=progress or _quiet)
            info = await _inspect(docker, digest)
    return BuiltImage(reference, digest, int((info or {}).get("Size", 0)))


async def _build(
    docker: aiodocker.Docker, context: Path, reference: str, *, nocache: bool, say: Progress
) -> str:
    """POST /build with the network off (legacy builder); returns the image id."""
    params = {
        "t": reference,
        "networkmode": "none",
        "version": "1",
        "rm": "1",
        "forcerm": "1",
        "pull": "0",
        "q": "0",
        "nocache": "1" if nocache else "0",
    }

    async def body() -> AsyncIterator[bytes]:
        with context.open("rb") as f:
            while chunk := await asyncio.to_thread(f.read, 1 << 20):
                yield chunk

    image_id = ""
    log: list[str] = []
    try:
        async with docker._query(
            "build",
            "POST",
            params=params,
            headers={"Content-Type": "application/x-tar"},
            data=body(),
            timeout=_BUILD_TIMEOUT,
        ) as response:
            async for message in _json_stream(response):
                if "error" in message:
                    detail = message.get("errorDetail", {}).get("message") or message["error"]
                    tail = "".join(log[-20:])
                    raise ImageError(f"building {reference} failed: {detail}\n{tail}".rstrip())
                if text := message.get("stream"):
                    log.append(text)
                    for line in text.splitlines():
                        if line.strip():
                            say(line)
                aux = message.get("aux")
                if isinstance(aux, dict) and "ID" in aux:
                    image_id = str(aux["ID"])
    except aiodocker.DockerError as e:
        raise ImageError(f"building {reference} failed: {e.message}") from e
    if not image_id.startswith("sha256:"):
        raise ImageError(f"building {reference} gave no image id:\n{''.join(log[-20:])}")
    return image_id


async def _json_stream(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The JSON messages of a Docker progress stream, however the chunks split them."""
    decoder = json.JSONDecoder()
    buffer = ""
    async for chunk in response.content.iter_any():
        buffer += chunk.decode("utf-8", errors="replace")
        while True:
            buffer = buffer.lstrip()
            if not buffer:
                break
            try:
                message, end = decoder.raw_decode(buffer)
            except ValueError:
                break
            buffer = buffer[end:]
            if isinstance(message, dict):
                yield message


# ---------------------------------------------------------------------------------- wheels


def source_root() -> Path | None:
    """The repository this flnet was imported from (an editable install), if any."""
    root = Path(__file__).resolve().parent.parent
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return root if project.get("project", {}).get("name") == "flnet" else None


def _wheel_sources(root: Path) -> list[Path]:
    """What `pip wheel` reads: pyproject.toml, the readme and license files, and the
    directories of every package (tool.setuptools.package-dir), relative to `root`."""
    project = tomllib.loads((root / "pyproject.toml").read_text())
    tops = {"pyproject.toml"}
    readme = project.get("project", {}).get("readme")
    if isinstance(readme, str):
        tops.add(readme)
    for pattern in ("LICEN[CS]E*", "COPYING*", "NOTICE*", "AUTHORS*", "setup.py", "setup.cfg"):
        tops.update(p.name for p in root.glob(pattern))
    package_dirs = project.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    tops.update(str(d).split("/")[0] for d in package_dirs.values())
    files: list[Path] = []
    for top in sorted(tops):
        path = root / top
        if path.is_dir():
            files += [Path(top) / f for f in tool_files(path)]
        elif path.is_file():
            files.append(Path(top))
    return files


async def flnet_wheel_path(cache: Path, source: Path | None = None) -> Path:
    """The flnet wheel of the sources at `source` (default `source_root()`), built with
    `pip wheel --no-deps` in a copy of them and cached by their digest."""
    root = source or source_root()
    if root is None:
        raise ImageError(
            "flnet is not installed from its repository: give the flnet wheel to use "
            "(flnet_wheel=..., `flnet image build --flnet-wheel`)"
        )
    files = await asyncio.to_thread(_wheel_sources, root)
    digest = (await asyncio.to_thread(source_sha256, root, files))[:16]
    where = cache / "wheels" / "flnet"
    target = where / digest
    if found := await asyncio.to_thread(_wheels_in, target):
        return found[0]
    async with _locked(cache / "wheels.lock"):
        if found := await asyncio.to_thread(_wheels_in, target):
            return found[0]
        work = Path(await asyncio.to_thread(_fresh_dir, where))
        try:
            copy = work / "src"
            await asyncio.to_thread(_copy_files, root, files, copy)
            out = work / "out"
            env = dict(os.environ, SOURCE_DATE_EPOCH=str(_source_date_epoch(CONTEXT_EPOCH)))
            pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
            wheel = [*pip, "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out)]
            try:
                await _run([*wheel, "--no-build-isolation", str(copy)], env=env)
            except ImageError:  # no setuptools here: let pip fetch the build backend
                await _run([*wheel, str(copy)], env=env)
            built = await asyncio.to_thread(_wheels_in, out)
            if len(built) != 1:
                raise ImageError(f"pip wheel made {[p.name for p in built]}, not one flnet wheel")
            await asyncio.to_thread(out.rename, target)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        await asyncio.to_thread(_keep_newest, where, 5)
        return target / built[0].name


def _wheels_in(directory: Path) -> list[Path]:
    return sorted(directory.glob("flnet-*.whl")) if directory.is_dir() else []


def _fresh_dir(parent: Path) -> str:
    parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix="build-", dir=parent)


def _copy_files(root: Path, files: Iterable[Path], to: Path) -> None:
    for f in files:
        (to / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f, to / f)


def _keep_newest(directory: Path, count: int) -> None:
    entries = sorted(directory.iterdir(), key=lambda p: p.stat().st_mtime)
    for old in entries[:-count]:
        shutil.rmtree(old, ignore_errors=True)


def runtime_requirements(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist without extras: what `pip install flnet` installs."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = z.read(name).decode()
    requirements = []
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist:"):
            requirement, _, marker = line.removeprefix("Requires-Dist:").partition(";")
            if "extra" not in marker:
                requirements.append(requirement.strip())
    return requirements


async def vendor_wheels(
    cache: Path, requirements: Sequence[str], python: str, machine: str, out: Path
) -> None:
    """Puts into `out` the wheels that install `requirements` on CPython `python` for
    `machine`: from the cache (wheels/cp<XY>-<machine>/) when it has them, else downloaded
    from the package index into the cache first."""
    tag = f"cp{python.replace('.', '')}"
    store = cache / "wheels" / f"{tag}-{machine}"
    for directory in (store, out):
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    target = [
        "--only-binary=:all:",
        *(f"--platform={p}_{machine}" for p in ("manylinux2014", "manylinux_2_17")),
        f"--python-version={python}",
        "--implementation=cp",
        *requirements,
    ]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "download", "--quiet"]
    offline = [*pip, "--isolated", "--no-index", f"--find-links={store}", f"--dest={out}"]
    if requirements:
        try:
            await _run([*offline, *target])
            return
        except ImageError:
            pass
        async with _locked(cache / "wheels.lock"):
            await _run([*pip, f"--dest={store}", *target])
        await _run([*offline, *target])


# --------------------------------------------------------------------------------- helpers


def _quiet(_: str) -> None:
    pass


def _source_date_epoch(default: int) -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    return int(value) if value.isdigit() else default


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def _run(
    argv: Sequence[str], *, log: Path | None = None, env: dict[str, str] | None = None
) -> str:
    """Runs a command to its end; ImageError with the end of its output when it fails. A
    cancelled wait kills the command."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode(errors="replace")
    if log is not None:
        await asyncio.to_thread(log.write_text, text)
    if process.returncode != 0:
        tail = "\n".join(text.splitlines()[-15:])
        name = Path(argv[0]).name
        raise ImageError(f"{name} failed with exit code {process.returncode}:\n{tail}")
    return text


@contextlib.asynccontextmanager
async def _locked(path: Path) -> AsyncIterator[None]:
    """An exclusive lock file between processes (flock), awaited without blocking."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                await asyncio.sleep(0.2)
        yield
    finally:
        os.close(fd)


def _mounts_under(path: Path) -> list[Path]:
    """Mount points at or below `path` (debootstrap mounts /proc and /sys in the target and
    leaves them when it is killed)."""
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            point = Path(line.split()[4].encode().decode("unicode_escape"))
            if point == path or path in point.parents:
                found.append(point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _unmount_all(path: Path) -> None:
    for point in _mounts_under(path):
        subprocess.run(["umount", "--lazy", str(point)], check=False, capture_output=True)
    if _mounts_under(path):
        raise ImageError(f"{path} still has mounts in it")


def _remove_tree(path: Path) -> None:
    """Removes a debootstrap tree, unmounting what is mounted in it first; never removes
    through a mount point."""
    if path.exists():
        _unmount_all(path)
        shutil.rmtree(path)
