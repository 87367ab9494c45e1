"""Tool sources as uploaded archives. A source version names an input artifact holding a
gzip-compressed tar of the tool's files (`flnet tool register DIR` packs one); the control
plane never reads a path a client names. Registration admits the archive: it must belong to
the version's tenant, unpack safely (regular files and directories only, relative paths
without "..", bounded), and hold the entrypoint's file. Its sha256 becomes the version's
source digest.

Each archive a run needs is unpacked once per control plane into
`<data dir>/sources/<sha256>`, the snapshot the process backend copies into each run's work
directory: a run executes exactly the registered bytes, whatever the author's folder holds
now. Fetching, hashing and unpacking run in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path, PurePosixPath
from typing import IO, Any

from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import tool_pb2 as tp
from flnet.control import names
from flnet.control.blobs import Blob, BlobMissing, BlobStore
from flnet.control.store import Store
from flnet.control.tools import contract_sha256
from flnet.errors import DataLoss, InvalidArgument, NotFound
from flnet.sources import MAX_SOURCE_BYTES, MAX_SOURCE_ENTRIES

ARCHIVE_FIELD = "tool_version.source.archive"
SCRATCH_PREFIX = ".unpack-"
# Where tarfile has extraction filters (3.11.4), the "data" filter refuses anything `checked`
# let through by mistake; `checked` alone holds the line before that.
DATA_FILTER: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


class ArchiveError(Exception):
    """The archive cannot be a tool's source; the message says why."""


#: What the decompressed stream may hold beyond the files' bytes: tar headers (a pax or GNU
#: long-name header is read whole into memory, so this bounds memory as well).
HEADER_BYTES = 8 * 1024 * 1024


class CappedReader(io.RawIOBase):
    """A file's reads, refused once more than `cap` bytes were asked for in all."""

    def __init__(self, inner: gzip.GzipFile, cap: int) -> None:
        self.inner = inner
        self.left = cap

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        if len(view) > self.left:
            raise ArchiveError(f"more than {MAX_SOURCE_BYTES} bytes unpacked")
        data = self.inner.read(len(view))
        view[: len(data)] = data
        self.left -= len(data)
        return len(data)


def checked(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The archive's members, each refused when a tool's source may not hold it: links,
    devices, absolute paths or "..", more than MAX_SOURCE_ENTRIES entries or MAX_SOURCE_BYTES
    unpacked."""
    total = 0
    for count, member in enumerate(tar, start=1):
        total += member.size
        if count > MAX_SOURCE_ENTRIES:
            raise ArchiveError(f"more than {MAX_SOURCE_ENTRIES} entries")
        if total > MAX_SOURCE_BYTES:
            raise ArchiveError(f"more than {MAX_SOURCE_BYTES} bytes unpacked")
        if not (member.isfile() or member.isdir()):
            raise ArchiveError(f"{member.name!r} is not a regular file or directory")
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts or "\x00" in member.name:
            raise ArchiveError(f"{member.name!r} is not a relative path inside the archive")
        # Owned by the control plane, without special bits, whatever the archive says.
        member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
        member.mode &= 0o755
        yield member


def unpack(archive: Path, target: Path) -> None:
    """Unpacks an archive into `target` (which must not exist) in one pass over its
    decompressed stream, each member checked before it is written: files 0600 or 0700,
    directories 0700. ArchiveError when it is no tool source (`target` may then hold part of
    it)."""
    target.mkdir(mode=0o700)
    try:
        with (
            archive.open("rb") as raw,
            gzip.GzipFile(fileobj=raw, mode="rb") as unzipped,
            io.BufferedReader(CappedReader(unzipped, MAX_SOURCE_BYTES + HEADER_BYTES)) as capped,
            tarfile.open(fileobj=capped, mode="r|") as tar,
        ):
            tar.extractall(target, members=checked(tar), **DATA_FILTER)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ArchiveError(f"not a gzip-compressed tar ({exc})") from None
    except (FileExistsError, IsADirectoryError, NotADirectoryError) as exc:  # a name twice
        raise ArchiveError(f"entries collide ({exc})") from None
    for root, dirs, files in os.walk(target):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o700)
        for name in files:
            path = os.path.join(root, name)
            os.chmod(path, 0o700 if os.stat(path).st_mode & 0o100 else 0o600)


class SourceSnapshots:
    """Unpacked archives by sha256 under `root`, one per version that ran here; each is
    unpacked once, atomically (in a scratch directory renamed into place), and concurrent
    unpackers agree. Admission unpacks into scratch only: what is refused, or registered
    under a version that already exists, leaves nothing behind."""

    def __init__(self, root: Path, blobs: BlobStore) -> None:
        self.root = root
        self.blobs = blobs

    async def sweep(self) -> None:
        """Removes the scratch directories a crashed control plane left."""

        def sweep() -> None:
            for scratch in self.root.glob(f"{SCRATCH_PREFIX}*"):
                shutil.rmtree(scratch, ignore_errors=True)

        await asyncio.to_thread(sweep)

    @contextlib.asynccontextmanager
    async def unpacked(self, blob: Blob) -> AsyncIterator[Path]:
        """The archive's files in a scratch directory, removed on leaving. ArchiveError when
        it is no tool source; BlobMissing when its bytes are gone; DataLoss when they
        changed."""
        if blob.size > MAX_SOURCE_BYTES:
            raise ArchiveError(f"larger than {MAX_SOURCE_BYTES} bytes")
        await asyncio.to_thread(self.root.mkdir, mode=0o700, parents=True, exist_ok=True)
        scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, SCRATCH_PREFIX, "", self.root))
        try:
            archive = scratch / "archive.tar.gz"
            await self._fetch(blob, archive)
            await asyncio.to_thread(unpack, archive, scratch / "files")
            yield scratch / "files"
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    async def snapshot(self, blob: Blob) -> Path:
        """The directory holding the archive's files, unpacked if it is not yet."""
        target = self.root / blob.sha256
        if await asyncio.to_thread(target.is_dir):
            return target
        async with self.unpacked(blob) as files:
            try:
                await asyncio.to_thread(files.rename, target)
            except OSError:
                if not await asyncio.to_thread(target.is_dir):
                    raise
                # Another caller put the same bytes in place first.
        return target

    async def _fetch(self, blob: Blob, archive: Path) -> None:
        digest = hashlib.sha256()
        f: IO[bytes] = await asyncio.to_thread(archive.open, "wb")
        try:
            async with aclosing(self.blobs.read(blob)) as chunks:
                async for data in chunks:
                    await asyncio.to_thread(_write, f, digest, data)
        finally:
            await asyncio.to_thread(f.close)
        if digest.hexdigest() != blob.sha256:
            raise DataLoss(f"the stored bytes of {blob.uri} no longer match their sha256")


def _write(f: IO[bytes], digest: hashlib._Hash, data: bytes) -> None:
    f.write(data)
    digest.update(data)


class ToolSources:
    """What the services do with source archives: admit one at registration, and find the
    snapshot a run of the version executes."""

    def __init__(self, store: Store, snapshots: SourceSnapshots) -> None:
        self.store = store
        self.snapshots = snapshots

    async def admit(self, tenant: str, version: tp.ToolVersion) -> str:
        """Checks `version.source` (already well-formed), records the archive's sha256 in
        it, re-seals its contract, and returns the archive's artifact id."""
        archive = version.source.archive
        try:
            artifact = await self.store.artifacts.get_artifact(tenant, _artifact_id(archive))
        except NotFound:
            raise InvalidArgument.field(ARCHIVE_FIELD, f"{archive} does not exist") from None
        if artifact.direction != ap.ARTIFACT_DIRECTION_INPUT:
            raise InvalidArgument.field(ARCHIVE_FIELD, "must be an uploaded input artifact")
        file = version.source.entrypoint.rpartition(":")[0]
        try:
            async with self.snapshots.unpacked(_blob(artifact)) as files:
                found = await asyncio.to_thread((files / file).is_file)
        except ArchiveError as exc:
            raise InvalidArgument.field(ARCHIVE_FIELD, f"not a tool source: {exc}") from None
        except BlobMissing:
            raise DataLoss(f"the bytes of {artifact.name} are missing from the store") from None
        if not found:
            raise InvalidArgument.field(
                "tool_version.source.entrypoint", f"{file} is not a file in the archive"
            )
        version.source.sha256 = artifact.sha256
        version.contract_sha256 = contract_sha256(version)
        return _artifact_id(artifact.name)

    async def snapshot(self, version: tp.ToolVersion) -> Path:
        """The unpacked source a run of `version` executes (unpacked again from the artifact
        store when this control plane has not yet, e.g. another replica admitted it)."""
        tenant = names.parse_tool_version(version.name).tenant
        artifact = await self.store.artifacts.get_artifact(
            tenant, _artifact_id(version.source.archive)
        )
        try:
            return await self.snapshots.snapshot(_blob(artifact))
        except (ArchiveError, BlobMissing) as exc:
            raise DataLoss(f"the source archive of {version.name} is unusable: {exc}") from None


def _artifact_id(name: str) -> str:
    return names.parse_artifact(name)[1]


def _blob(artifact: ap.Artifact) -> Blob:
    return Blob(artifact.storage_uri, artifact.sha256, artifact.size_bytes)
