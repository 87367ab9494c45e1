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
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from flnet.channels import CHUNK_BYTES
from flnet.control.blobs.protocol import Blob, BlobMissing
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

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()


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
