"""The artifact store on S3 (`s3://bucket/prefix`, any S3-compatible endpoint).

Every blob is its own object, `<prefix>/objects/<uuid>`, written by a multipart upload
(S3BlobWriter) that completes only when every byte arrived: the sha256 is known only at
the end, and a server-side copy under it would cost as much as the upload. The artifact
records the object's URI; reads go by it, streamed (ranged GetObject from an offset).

Resumable uploads keep each piece as an object of its own,
`<prefix>/uploads/<upload_id>/<start>-<end>`, so that every control-plane replica sees
them; finishing streams the pieces, in order, into a new blob (the pieces are deleted once
the upload is recorded as finished). Pieces past the committed size (left by an attempt
that failed before it was recorded) are ignored."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from flnet.channels import CHUNK_BYTES
from flnet.control.blobs.protocol import Blob, BlobMissing, Stored
from flnet.control.blobs.read_ahead import read_ahead
from flnet.control.blobs.s3_errors import error_code, unavailable_on_failure
from flnet.control.blobs.s3_writer import S3BlobWriter

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

# S3's smallest part is 5 MiB; larger parts mean fewer requests.
PART_BYTES = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 2
# Chunks fetched from S3 while the caller is busy with the ones before.
READ_AHEAD_CHUNKS = 4
_MISSING = ("NoSuchKey", "404", "NotFound")
# An unfinished write's key as list_unfinished gives it: "<object key>?uploadId=<id>".
_UPLOAD_ID = "?uploadId="


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        if not uri.startswith("s3://"):
            raise BlobMissing(f"{uri} is not in an S3 store")
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return cls(bucket, key)


class S3BlobStore:
    shares_content = False  # every blob is an object of its own

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str = "",
        *,
        part_bytes: int = PART_BYTES,
        parts_in_flight: int = PARTS_IN_FLIGHT,
        stack: contextlib.AsyncExitStack | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_bytes = part_bytes
        self.parts_in_flight = parts_in_flight
        self._stack = stack

    def key(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts] if self.prefix else parts)

    def writer(self) -> S3BlobWriter:
        return S3BlobWriter(
            self.client,
            self.bucket,
            self.key("objects", uuid.uuid4().hex),
            part_bytes=self.part_bytes,
            parts_in_flight=self.parts_in_flight,
        )

    async def exists(self, blob: Blob) -> bool:
        try:
            where = S3Location.parse(blob.uri)
        except BlobMissing:
            return False
        try:
            with unavailable_on_failure():
                await self.client.head_object(Bucket=where.bucket, Key=where.key)
        except ClientError as e:
            if error_code(e) in _MISSING:
                return False
            raise
        return True

    async def read(
        self, blob: Blob, offset: int = 0, chunk_size: int = CHUNK_BYTES
    ) -> AsyncGenerator[bytes, None]:
        where = S3Location.parse(blob.uri)
        if 0 < blob.size <= offset:
            return  # a range starting at the end is "not satisfiable" to S3
        chunks = read_ahead(self._read_object(where, offset, chunk_size), READ_AHEAD_CHUNKS)
        async with aclosing(chunks):
            async for data in chunks:
                yield data

    async def _read_object(
        self, where: S3Location, offset: int = 0, chunk_size: int = CHUNK_BYTES
    ) -> AsyncGenerator[bytes, None]:
        try:
            with unavailable_on_failure():
                if offset:
                    got = await self.client.get_object(
                        Bucket=where.bucket, Key=where.key, Range=f"bytes={offset}-"
                    )
                else:
                    got = await self.client.get_object(Bucket=where.bucket, Key=where.key)
        except ClientError as e:
            if error_code(e) in _MISSING:
                raise BlobMissing(f"s3://{where.bucket}/{where.key} is missing") from None
            if error_code(e) == "InvalidRange":
                return
            raise
        body = got["Body"]
        try:
            pieces: list[bytes] = []
            held = 0
            while True:
                with unavailable_on_failure():
                    data = await body.read(chunk_size - held)
                if not data:
                    break
                pieces.append(data)
                held += len(data)
                if held >= chunk_size:
                    yield b"".join(pieces)
                    pieces, held = [], 0
            if pieces:
                yield b"".join(pieces)
        finally:
            body.close()

    async def discard(self, blob: Blob) -> None:
        """Deletes the blob's object: each object belongs to one blob only."""
        where = S3Location.parse(blob.uri)
        with unavailable_on_failure():
            await self.client.delete_object(Bucket=where.bucket, Key=where.key)

    # Resumable uploads: one object per piece.
    async def start_partial(self, upload_id: str) -> None:
        """Nothing to prepare: pieces are objects of their own."""

    async def append_partial(self, upload_id: str, offset: int, data: bytes) -> None:
        if not data:
            return
        key = self.key("uploads", upload_id, f"{offset:016d}-{offset + len(data):016d}")
        with unavailable_on_failure():
            await self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    async def _pieces(self, upload_id: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        with unavailable_on_failure():
            async for page in paginator.paginate(
                Bucket=self.bucket, Prefix=self.key("uploads", upload_id) + "/"
            ):
                keys.extend(o["Key"] for o in page.get("Contents", []))
        return keys

    async def commit_partial(self, upload_id: str, size: int) -> Blob:
        """Streams the pieces that make up bytes 0..size into a new blob. The pieces stay
        until drop_partial (a retried finish can still find them)."""
        pieces = await self._pieces(upload_id)
        chain = piece_chain(pieces, size)
        if chain is None:
            raise BlobMissing(f"the pieces of upload {upload_id} do not add up to {size} bytes")
        writer = self.writer()
        try:
            for key in chain:
                async with aclosing(self._read_object(S3Location(self.bucket, key))) as piece:
                    async for data in piece:
                        await writer.write(data)
            blob = await writer.commit()
        finally:
            await writer.abort()  # a no-op once committed
        return blob

    async def drop_partial(self, upload_id: str) -> None:
        await self._delete(await self._pieces(upload_id))

    async def _delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = keys[i : i + 1000]
            with unavailable_on_failure():
                await self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )

    # What gc needs: listings under the store's own prefixes only (others may share the
    # bucket), with LastModified as when an object was written.
    async def _objects(self, prefix: str) -> AsyncIterator[tuple[str, int, int]]:
        """(key, size, modified_us) of every object under `prefix`, in key order."""
        paginator = self.client.get_paginator("list_objects_v2")
        with unavailable_on_failure():
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for o in page.get("Contents", []):
                    yield o["Key"], o["Size"], _us(o["LastModified"])

    async def list_blobs(self) -> AsyncIterator[Stored]:
        async for key, size, modified in self._objects(self.key("objects") + "/"):
            yield Stored(f"s3://{self.bucket}/{key}", size, modified)

    async def list_partials(self) -> AsyncIterator[Stored]:
        """One entry per upload: its pieces (consecutive keys) summed up."""
        prefix = self.key("uploads") + "/"
        current: Stored | None = None
        async for key, size, modified in self._objects(prefix):
            upload_id = key.removeprefix(prefix).split("/", 1)[0]
            if current is None or current.key != upload_id:
                if current is not None:
                    yield current
                current = Stored(upload_id, 0, 0)
            current = Stored(upload_id, current.size + size, max(current.modified_us, modified))
        if current is not None:
            yield current

    async def list_unfinished(self) -> AsyncIterator[Stored]:
        """Multipart uploads of blobs that were neither completed nor aborted (a control
        plane stopped in the middle); their size is that of the parts they hold."""
        paginator = self.client.get_paginator("list_multipart_uploads")
        with unavailable_on_failure():
            async for page in paginator.paginate(
                Bucket=self.bucket, Prefix=self.key("objects") + "/"
            ):
                for u in page.get("Uploads", []):
                    size = await self._parts_size(u["Key"], u["UploadId"])
                    key = f"{u['Key']}{_UPLOAD_ID}{u['UploadId']}"
                    yield Stored(key, size, _us(u["Initiated"]))

    async def _parts_size(self, key: str, upload_id: str) -> int:
        paginator = self.client.get_paginator("list_parts")
        size = 0
        async for page in paginator.paginate(Bucket=self.bucket, Key=key, UploadId=upload_id):
            size += sum(p["Size"] for p in page.get("Parts", []))
        return size

    async def remove_blob(self, blob: Blob, *, written_before_us: int) -> bool:
        """Deletes the blob's object: no other blob ever shares it, and none is ever written
        to it again (every write goes to a fresh key)."""
        try:
            await self.discard(blob)
        except BlobMissing:  # not in this store
            return False
        return True

    async def drop_unfinished(self, key: str) -> None:
        object_key, sep, upload_id = key.rpartition(_UPLOAD_ID)
        if not sep or not object_key.startswith(self.key("objects") + "/"):
            raise ValueError(f"not an unfinished write of this store: {key!r}")
        try:
            with unavailable_on_failure():
                await self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=object_key, UploadId=upload_id
                )
        except ClientError as e:
            if error_code(e) != "NoSuchUpload":  # aborted or completed meanwhile
                raise

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()


def _us(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000)


def piece_chain(keys: list[str], size: int) -> list[str] | None:
    """Keys of pieces (`.../<start>-<end>`) that cover 0..size end to end, in order; None
    when there are none. Retries may have left overlapping pieces: any chain of them holds
    the same bytes. A depth-first search, longest pieces first."""
    starting: dict[int, list[tuple[int, str]]] = {}
    for key in keys:
        first, _, last = key.rsplit("/", 1)[1].partition("-")
        if int(last) <= size:
            starting.setdefault(int(first), []).append((int(last), key))
    for pieces in starting.values():
        pieces.sort(reverse=True)
    chain: list[str] = []
    stack = [(0, iter(starting.get(0, [])))]
    dead: set[int] = set()  # offsets from which no chain reaches `size`
    while stack:
        position, options = stack[-1]
        if position == size:
            return chain
        for end, key in options:
            if end > position and end not in dead:
                chain.append(key)
                stack.append((end, iter(starting.get(end, []))))
                break
        else:
            dead.add(position)
            stack.pop()
            if chain:
                chain.pop()
    return None
