"""The Docker engine as image builds use it: where things are (the cache, the socket),
starting dockerd, inspecting images, and one network-off build of a context; the errors and
the result every build shares."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp

from flnet.sources import tool_files

DEFAULT_SOCKET = "/var/run/docker.sock"
LABEL = "org.flnet"
#: mtime of every file put into a build context (1980-01-01, the zip epoch), unless
#: SOURCE_DATE_EPOCH says otherwise.
CONTEXT_EPOCH = 315532800
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
MACHINE = {v: k for k, v in DEBIAN_ARCH.items()}
BUILD_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30)

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
        return await inspect_image(docker, reference)


async def inspect_image(docker: aiodocker.Docker, reference: str) -> dict[str, Any] | None:
    try:
        return await docker.images.inspect(reference)
    except aiodocker.DockerError as e:
        if e.status == 404:
            return None
        raise


# --------------------------------------------------------------------------------- builds


def dockerfile_quote(value: str) -> str:
    """A Dockerfile string (JSON: what LABEL, ENV and exec forms read)."""
    return json.dumps(value, ensure_ascii=False)


def write_context(out: Path, members: Sequence[tuple[str, bytes | Path]]) -> None:
    """A build context with fixed metadata: root-owned, mtime CONTEXT_EPOCH (or
    SOURCE_DATE_EPOCH), directories 0755, files 0644 or 0755 when executable."""
    epoch = source_date_epoch(default=CONTEXT_EPOCH)
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
        await asyncio.to_thread(write_context, tar, [(str(f), context / f) for f in files])
        async with docker_client() as docker:
            digest = await build_image(
                docker, tar, reference, nocache=nocache, say=progress or quiet
            )
            info = await inspect_image(docker, digest)
    return BuiltImage(reference, digest, int((info or {}).get("Size", 0)))


async def build_image(
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
            timeout=BUILD_TIMEOUT,
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


# --------------------------------------------------------------------------------- helpers


def quiet(_: str) -> None:
    pass


def source_date_epoch(default: int) -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    return int(value) if value.isdigit() else default


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def run_command(
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
async def locked(path: Path) -> AsyncIterator[None]:
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


def unmount_all(path: Path) -> None:
    for point in _mounts_under(path):
        subprocess.run(["umount", "--lazy", str(point)], check=False, capture_output=True)
    if _mounts_under(path):
        raise ImageError(f"{path} still has mounts in it")


def remove_tree(path: Path) -> None:
    """Removes a debootstrap tree, unmounting what is mounted in it first; never removes
    through a mount point."""
    if path.exists():
        unmount_all(path)
        shutil.rmtree(path)
