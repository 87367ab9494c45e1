"""Content-addressed blob store on the local filesystem (`file://<data-dir>/artifacts`).

Blobs are written to a temporary file while their sha256 is computed, fsynced, then renamed
into `blobs/<aa>/<bb>/<sha256>`: a blob is either complete and verified or absent, never
partial. Identical content is stored once, whichever artifacts record it. A blob is found
by its digest, so the URI recorded for it (its path when it was written) stays right when
the data directory moves. Bytes are streamed in chunks; no whole file is held in memory.
Everything here is its user's only: folders 0700, blobs and upload pieces 0600
(flnet.datadir)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import BinaryIO

from flnet.channels import CHUNK_BYTES
from flnet.control.blobs.protocol import Blob, BlobMissing, HashingWriter, Stored
from flnet.datadir import open_private, own_private_dir, private_dir


class LocalBlobWriter(HashingWriter):
    """Streams bytes into a temporary file and hashes them on the way."""

    def __init__(self, store: LocalBlobStore) -> None:
        super().__init__()
        self._store = store
        self._path = store.tmp_dir / uuid.uuid4().hex
        # Closed in commit/abort; 0600, and renamed into place with that mode.
        fd = open_private(self._path, os.O_WRONLY | os.O_EXCL)
        self._file: BinaryIO = os.fdopen(fd, "wb")

    async def write(self, data: bytes) -> None:
        self._count(data)
        await asyncio.to_thread(self._file.write, data)

    async def commit(self) -> Blob:
        """Makes the blob visible under its sha256."""
        digest = self.sha256

        def _finish() -> None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            target = self._store.path_of(digest)
            private_dir(target.parent)
            os.replace(self._path, target)

        await asyncio.to_thread(_finish)
        return Blob(self._store.uri_of(digest), digest, self._size)

    async def abort(self) -> None:
        def _drop() -> None:
            self._file.close()
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()

        await asyncio.to_thread(_drop)


class LocalBlobStore:
    shares_content = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"
        self.upload_dir = root / "uploads"
        own_private_dir(root)
        for d in (self.root / "blobs", self.tmp_dir, self.upload_dir):
            private_dir(d)

    def path_of(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256[2:4] / sha256

    def uri_of(self, sha256: str) -> str:
        return self.path_of(sha256).as_uri()

    def writer(self) -> LocalBlobWriter:
        return LocalBlobWriter(self)

    def _located(self, blob: Blob) -> Path:
        if not blob.uri.startswith("file:"):
            raise BlobMissing(f"{blob.uri} is not in this file store")
        return self.path_of(blob.sha256)

    async def exists(self, blob: Blob) -> bool:
        return blob.uri.startswith("file:") and await asyncio.to_thread(
            self.path_of(blob.sha256).is_file
        )

    async def read(
        self, blob: Blob, offset: int = 0, chunk_size: int = CHUNK_BYTES
    ) -> AsyncGenerator[bytes, None]:
        try:
            f = await asyncio.to_thread(open, self._located(blob), "rb")
        except FileNotFoundError:
            raise BlobMissing(f"{blob.uri} is missing") from None
        try:
            await asyncio.to_thread(f.seek, offset)
            while True:
                data = await asyncio.to_thread(f.read, chunk_size)
                if not data:
                    return
                yield data
        finally:
            f.close()

    async def discard(self, blob: Blob) -> None:
        """Keeps the blob: identical content is one file, possibly recorded elsewhere."""

    # Resumable uploads: a partial file per upload id, appended chunk by chunk.
    def partial_path(self, upload_id: str) -> Path:
        return self.upload_dir / upload_id

    async def start_partial(self, upload_id: str) -> None:
        await self.append_partial(upload_id, 0, b"")

    async def append_partial(self, upload_id: str, offset: int, data: bytes) -> None:
        def _append() -> None:
            path = self.partial_path(upload_id)
            # The first piece creates the file (0600); a later one finds it there.
            if offset:
                fd = os.open(path, os.O_RDWR)
            else:
                fd = open_private(path, os.O_WRONLY | os.O_TRUNC)
            with os.fdopen(fd, "r+b" if offset else "wb") as f:
                f.truncate(offset)
                f.seek(offset)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())

        await asyncio.to_thread(_append)

    async def commit_partial(self, upload_id: str, size: int) -> Blob:
        """Hashes the first `size` bytes of a partial upload and moves them under their
        digest."""
        path = self.partial_path(upload_id)

        def _commit() -> Blob:
            h = hashlib.sha256()
            if not path.is_file():
                raise BlobMissing(f"upload {upload_id} has no bytes here")
            with open(path, "r+b") as f:
                if os.fstat(f.fileno()).st_size < size:
                    raise BlobMissing(f"upload {upload_id} holds fewer than {size} bytes")
                f.truncate(size)
                while data := f.read(CHUNK_BYTES):
                    h.update(data)
            digest = h.hexdigest()
            target = self.path_of(digest)
            private_dir(target.parent)
            os.utime(path)  # written now, as gc judges blobs (remove_blob)
            os.replace(path, target)
            return Blob(self.uri_of(digest), digest, size)

        return await asyncio.to_thread(_commit)

    async def drop_partial(self, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.partial_path(upload_id).unlink)

    # What gc needs. A file's mtime is when it was last written.
    async def list_blobs(self) -> AsyncIterator[Stored]:
        blobs = self.root / "blobs"
        for first in await asyncio.to_thread(_subdirectories, blobs):
            for second in await asyncio.to_thread(_subdirectories, first):
                for path, stored in await asyncio.to_thread(_files, second):
                    yield Stored(path.as_uri(), stored.size, stored.modified_us, path.name)

    async def list_partials(self) -> AsyncIterator[Stored]:
        for _, stored in await asyncio.to_thread(_files, self.upload_dir):
            yield stored

    async def list_unfinished(self) -> AsyncIterator[Stored]:
        for _, stored in await asyncio.to_thread(_files, self.tmp_dir):
            yield stored

    async def remove_blob(self, blob: Blob, *, written_before_us: int) -> bool:
        """Moves the file aside first, then looks at what it moved: a file an upload of the
        same content put there after gc decided (a fresh mtime) is put back; one it puts
        there after the move stays. Either way identical content: nothing is lost."""
        try:
            path = self._located(blob)
        except BlobMissing:
            return False
        aside = self.tmp_dir / f"gc-{uuid.uuid4().hex}"

        def _remove() -> bool:
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                return False
            if aside.stat().st_mtime_ns // 1000 >= written_before_us:
                os.replace(aside, path)
                return False
            aside.unlink()
            return True

        return await asyncio.to_thread(_remove)

    async def drop_unfinished(self, key: str) -> None:
        if "/" in key or key in ("", ".", ".."):
            raise ValueError(f"not an unfinished write of this store: {key!r}")
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread((self.tmp_dir / key).unlink)

    async def close(self) -> None:
        pass


def _subdirectories(directory: Path) -> list[Path]:
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        return sorted(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
    return []


def _files(directory: Path) -> list[tuple[Path, Stored]]:
    """The regular files in `directory`, each with its size and mtime (key: its name). A
    file that goes while it is listed is left out."""
    found: list[tuple[Path, Stored]] = []
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for e in entries:
            try:
                if not e.is_file(follow_symlinks=False):
                    continue
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            found.append((Path(e.path), Stored(e.name, st.st_size, st.st_mtime_ns // 1000)))
    return found
