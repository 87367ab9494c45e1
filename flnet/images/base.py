"""The base image, flnet/base:bookworm: debootstrapped once into a reproducible tarball in
the cache, loaded as a one-layer image whose config is written here (see flnet.images)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiodocker

from .engine import (
    BUILD_TIMEOUT,
    CONTEXT_EPOCH,
    DEBIAN_ARCH,
    IMAGE_PATH,
    LABEL,
    BuiltImage,
    ImageError,
    Progress,
    cache_dir,
    docker_client,
    inspect_image,
    locked,
    quiet,
    remove_tree,
    run_command,
    sha256_file,
    source_date_epoch,
    unmount_all,
    write_atomic,
)

BASE_IMAGE = "flnet/base:bookworm"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")


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
    say = progress or quiet
    async with docker_client() as docker:
        if not force and (info := await inspect_image(docker, reference)) is not None:
            return BuiltImage(reference, info["Id"], int(info.get("Size", 0)), built=False)
        root = cache or cache_dir()
        async with locked(root / "base.lock"):
            if not force and (info := await inspect_image(docker, reference)) is not None:
                return BuiltImage(reference, info["Id"], int(info.get("Size", 0)), built=False)
            layer, meta = await _base_layer(root / "base", suite, mirror, say)
            digest = await _load_base(docker, reference, layer, meta, say)
            info = await inspect_image(docker, digest)
            if info is None:
                raise ImageError(f"{reference} vanished right after it was loaded")
            return BuiltImage(reference, digest, int(info.get("Size", 0)))


def base_layer_path(suite: str = DEBIAN_SUITE, cache: Path | None = None) -> Path:
    """Where the rootfs tarball of the base image is cached (it may not exist)."""
    arch = DEBIAN_ARCH.get(os.uname().machine)
    if arch is None:
        raise ImageError(f"no Debian architecture known for machine {os.uname().machine}")
    return (cache or cache_dir()) / "base" / f"debian-{suite}-{arch}.tar"


async def _base_layer(
    where: Path, suite: str, mirror: str, say: Progress
) -> tuple[Path, dict[str, Any]]:
    """The cached rootfs tarball and its metadata, made by debootstrap when missing."""
    layer = base_layer_path(suite, where.parent)
    arch = DEBIAN_ARCH[os.uname().machine]
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
    epoch = source_date_epoch(default=int(time.time()))
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
        await run_command(command, log=where / "debootstrap.log")
        python = _python_version(work)
        await asyncio.to_thread(unmount_all, work)
        await asyncio.to_thread(_prune_rootfs, work)
        say(f"packing the rootfs into {layer}")
        partial = layer.with_name(layer.name + ".partial")
        await run_command(_tar_command(work, partial, epoch))
        diff_id = "sha256:" + await asyncio.to_thread(sha256_file, partial)
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
        write_atomic(meta_path, json.dumps(meta, indent=2, sort_keys=True).encode())
        return layer, meta
    finally:
        await asyncio.to_thread(remove_tree, work)


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
            "Env": [f"PATH={IMAGE_PATH}", "LANG=C.UTF-8"],
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
        timeout=BUILD_TIMEOUT,
    )
    info = await inspect_image(docker, reference)
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
