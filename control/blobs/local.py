"""Content-addressed blob store on the local filesystem (`file://<data-dir>/artifacts`).

Blobs are written to a temporary file while their sha256 is computed, fsynced, then renamed
into `blobs/<aa>/<bb>/<sha256>`: a blob is either complete and verified or absent, never
partial. Identical content is stored once, whichever artifacts record it. A blob is found
by its digest, so the URI recorded for it (its path when it was written) stays right when
the data directory moves. Bytes are streamed in chunks; no whole file is held in memory."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import BinaryIO

from flnet.channels import CHUNK_BYTES
from flnet.control.blobs.protocol import Blob, BlobMissing


class LocalBlobWriter:
    """Streams bytes into a temporary file and hashes them on the way."""

    def __init__(self, store: LocalBlobStore) -> None:
        self._store = store
        self._path = store.tmp_dir / uuid.uuid4().hex
        self._file: BinaryIO = open(self._path, "wb")  # noqa: SIM115 - closed in commit/abort
        self._hash = hashlib.sha256()
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def write(self, data: bytes) -> None:
        self._hash.update(data)
        self._size += len(data)
        await asyncio.to_thread(self._file.write, data)

    async def commit(self) -> Blob:
        """Makes the blob visible under its sha256."""
        digest = self.sha256

        def _finish() -> None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            target = self._store.path_of(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
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
            with open(self.partial_path(upload_id), "r+b" if offset else "wb") as f:
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
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            return Blob(self.uri_of(digest), digest, size)

        return await asyncio.to_thread(_commit)

    async def drop_partial(self, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.partial_path(upload_id).unlink)

    async def close(self) -> None:
        pass
