"""What every artifact store offers the services: streamed writes that become visible only
when committed, streamed (ranged) reads, and resumable partial uploads that every
control-plane replica sees. Implementations: LocalBlobStore (`file://`), S3BlobStore
(`s3://`)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from flnet.channels import CHUNK_BYTES


@dataclass(frozen=True)
class Blob:
    """Stored bytes: where they are (`uri`, as recorded in the artifact's storage_uri) and
    what they are (`sha256`, `size`)."""

    uri: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Stored:
    """Something the store holds, as its listings show it (for `flnet gc`): `key` names it
    (a blob's URI, an upload id, or an unfinished write's key, which only the store that
    listed it understands), `size` in bytes, `modified_us` when it was last written. `sha256`
    is set where one copy of the content serves every artifact with that digest."""

    key: str
    size: int
    modified_us: int
    sha256: str = ""


class BlobMissing(Exception):
    """The bytes a recorded blob points to are gone from the store."""


class HashingWriter:
    """What every writer keeps of the bytes written so far: their size and sha256."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def _count(self, data: bytes) -> None:
        self._hash.update(data)
        self._size += len(data)


class BlobWriter(Protocol):
    """Streams bytes into the store, hashing them on the way. Nothing is visible before
    `commit`; `abort` (or a failed commit) leaves nothing behind."""

    @property
    def size(self) -> int:
        """Bytes written so far."""
        ...

    @property
    def sha256(self) -> str:
        """The digest of the bytes written so far."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def commit(self) -> Blob:
        """Makes the bytes visible at the returned blob's URI."""
        ...

    async def abort(self) -> None: ...


class BlobStore(Protocol):
    """An artifact store. Every method streams: no whole blob is ever held in memory."""

    def writer(self) -> BlobWriter: ...

    async def exists(self, blob: Blob) -> bool: ...

    def read(
        self, blob: Blob, offset: int = 0, chunk_size: int = CHUNK_BYTES
    ) -> AsyncGenerator[bytes, None]:
        """The blob's bytes from `offset`, in chunks of `chunk_size` (the last may be
        shorter). BlobMissing when the bytes are gone."""
        ...

    async def discard(self, blob: Blob) -> None:
        """Forgets a committed blob that no artifact records (a duplicate of a recorded
        one, or one whose record was refused). Stores that share one copy of identical
        content between artifacts keep it."""
        ...

    # Resumable uploads, in pieces that arrive in separate calls, possibly at different
    # replicas: `append_partial` always writes at the upload's committed size (truncating
    # whatever a failed earlier attempt left past it); `commit_partial` makes the first
    # `size` bytes a blob and forgets the pieces.
    async def start_partial(self, upload_id: str) -> None: ...

    async def append_partial(self, upload_id: str, offset: int, data: bytes) -> None: ...

    async def commit_partial(self, upload_id: str, size: int) -> Blob: ...

    async def drop_partial(self, upload_id: str) -> None: ...

    # What `flnet gc` needs: listings of everything the store holds, and removal of what no
    # record points to any more.
    @property
    def shares_content(self) -> bool:
        """True when identical content is one copy, whichever artifacts record it (the file
        store): its bytes may only go once no artifact has that sha256."""
        ...

    def list_blobs(self) -> AsyncIterator[Stored]:
        """Every committed blob (key: its URI)."""
        ...

    def list_partials(self) -> AsyncIterator[Stored]:
        """The bytes of every resumable upload (key: the upload id; modified: its latest
        piece)."""
        ...

    def list_unfinished(self) -> AsyncIterator[Stored]:
        """Writes that were neither committed nor aborted: a crashed writer's temporary
        file, a multipart upload never completed."""
        ...

    async def remove_blob(self, blob: Blob, *, written_before_us: int) -> bool:
        """Deletes a committed blob that no artifact records, unless its bytes were written
        at or after `written_before_us` (an upload of identical content may have just stored
        them anew, in a store that shares content). True when removed."""
        ...

    async def drop_unfinished(self, key: str) -> None:
        """Discards an unfinished write, by the key `list_unfinished` gave."""
        ...

    async def close(self) -> None: ...


async def verify(store: BlobStore, blob: Blob) -> bool:
    """Re-hashes a stored blob; False means its bytes no longer match its sha256."""
    h = hashlib.sha256()
    async for data in store.read(blob):
        h.update(data)
    return h.hexdigest() == blob.sha256
