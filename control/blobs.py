"""Content-addressed blob store on the local filesystem (`file://<data-dir>/artifacts`).

Blobs are written to a temporary file while their sha256 is computed, fsynced, then renamed
into `blobs/<aa>/<bb>/<sha256>`: a blob is either complete and verified or absent, never
partial. Bytes are streamed in chunks; no whole file is held in memory."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from flnet.channels import CHUNK_BYTES


class BlobWriter:
    """Streams bytes into a temporary file and hashes them on the way."""

    def __init__(self, store: LocalBlobStore) -> None:
        self._store = store
        self._path = store.tmp_dir / uuid.uuid4().hex
        self._file: BinaryIO = open(self._path, "wb")  # noqa: SIM115 - closed in commit/abort
        self._hash = hashlib.sha256()
        self.size = 0

    async def write(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)
        await asyncio.to_thread(self._file.write, data)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def commit(self) -> str:
        """Makes the blob visible under its sha256 and returns that digest."""
        digest = self.sha256

        def _finish() -> None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            target = self._store.path_of(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._path, target)

        await asyncio.to_thread(_finish)
        return digest

    async def abort(self) -> None:
        def _drop() -> None:
            self._file.close()
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()

        await asyncio.to_thread(_drop)


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"
        self.upload_dir = root / "uploads"
        for d in (self.root / "blobs", self.tmp_dir, self.upload_dir):
            d.mkdir(parents=True, exist_ok=True)

    def path_of(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256[2:4] / sha256

    def uri_of(self, sha256: str) -> str:
        return self.path_of(sha256).as_uri()

    def writer(self) -> BlobWriter:
        return BlobWriter(self)

    def exists(self, sha256: str) -> bool:
        return self.path_of(sha256).is_file()

    async def read(
        self, sha256: str, offset: int = 0, chunk_size: int = CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        """Yields the blob's bytes from `offset` in chunks."""
        f = await asyncio.to_thread(open, self.path_of(sha256), "rb")
        try:
            await asyncio.to_thread(f.seek, offset)
            while True:
                data = await asyncio.to_thread(f.read, chunk_size)
                if not data:
                    return
                yield data
        finally:
            f.close()

    async def verify(self, sha256: str) -> bool:
        """Re-hashes a stored blob; False means its bytes were corrupted."""
        h = hashlib.sha256()
        async for data in self.read(sha256):
            h.update(data)
        return h.hexdigest() == sha256

    # Resumable uploads: a partial file per upload id, appended chunk by chunk.
    def partial_path(self, upload_id: str) -> Path:
        return self.upload_dir / upload_id

    async def append_partial(self, upload_id: str, offset: int, data: bytes) -> None:
        def _append() -> None:
            with open(self.partial_path(upload_id), "r+b" if offset else "wb") as f:
                f.truncate(offset)
                f.seek(offset)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())

        await asyncio.to_thread(_append)

    async def commit_partial(self, upload_id: str) -> tuple[str, int]:
        """Hashes a finished partial upload and moves it under its digest."""
        path = self.partial_path(upload_id)

        def _commit() -> tuple[str, int]:
            h = hashlib.sha256()
            size = 0
            with open(path, "rb") as f:
                while data := f.read(CHUNK_BYTES):
                    h.update(data)
                    size += len(data)
            digest = h.hexdigest()
            target = self.path_of(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            return digest, size

        return await asyncio.to_thread(_commit)

    def drop_partial(self, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.partial_path(upload_id).unlink()
