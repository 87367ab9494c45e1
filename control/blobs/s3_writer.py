"""Streaming writes to S3: a multipart upload to a fresh key, hashed on the way.

Bytes are gathered into parts of at least `part_bytes` (S3 wants 5 MiB or more for every
part but the last); at most `parts_in_flight` parts are being sent while the next one fills,
so memory stays near (parts_in_flight + 1) * part_bytes whatever the blob's size. A blob
smaller than one part is a single PutObject. Nothing is visible before
CompleteMultipartUpload; abort (or any failure) ends in AbortMultipartUpload, so no partial
object and no pending upload is left behind."""

from __future__ import annotations

import asyncio
import bisect
import io
from collections.abc import AsyncIterator
from typing import IO, TYPE_CHECKING, cast

from flnet.control.blobs.protocol import Blob, HashingWriter
from flnet.control.blobs.s3_errors import unavailable_on_failure

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef


class PartBody:
    """One part's bytes as the chunks they arrived in, sent without ever being joined (a
    joined copy, and the copy aiohttp makes of an in-memory file, would triple the memory
    of every part in flight). To botocore it is a file (len, read, seek, tell: what
    payload signing, the length header and retries use); aiohttp, handed an async
    iterable, streams its chunks as they are."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._starts: list[int] = []  # offset of each chunk
        self._size = 0
        self._position = 0

    def append(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
            self._starts.append(self._size)
            self._size += len(data)

    def __len__(self) -> int:
        return self._size

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = min(max(base + offset, 0), self._size)
        return self._position

    def _piece(self, limit: int) -> bytes:
        """At most `limit` bytes from the position on, within one chunk (the chunk itself
        when it fits: no copy), advancing the position."""
        i = bisect.bisect_right(self._starts, self._position) - 1
        chunk, skip = self._chunks[i], self._position - self._starts[i]
        piece = chunk if skip == 0 and len(chunk) <= limit else chunk[skip : skip + limit]
        self._position += len(piece)
        return piece

    def read(self, size: int = -1) -> bytes:
        left = self._size - self._position if size < 0 else size
        pieces = []
        while left > 0 and self._position < self._size:
            pieces.append(self._piece(left))
            left -= len(pieces[-1])
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[bytes]:
        while self._position < self._size:
            yield self._piece(self._size)


class S3BlobWriter(HashingWriter):
    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        *,
        part_bytes: int,
        parts_in_flight: int,
    ) -> None:
        super().__init__()
        self._client = client
        self._bucket = bucket
        self._key = key
        self._part_bytes = part_bytes
        self._slots = asyncio.Semaphore(parts_in_flight)
        self._part = PartBody()  # the part being gathered
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._sending: list[asyncio.Task[None]] = []
        self._closed = False

    @property
    def uri(self) -> str:
        return f"s3://{self._bucket}/{self._key}"

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise RuntimeError("the writer is closed")
        self._count(data)
        self._part.append(data)
        if len(self._part) >= self._part_bytes:
            await self._send(self._take_part())

    def _take_part(self) -> PartBody:
        part, self._part = self._part, PartBody()
        return part

    async def _send(self, part: PartBody) -> None:
        """Starts sending `part` once fewer than `parts_in_flight` parts are on their way;
        raises the failure of any part sent before."""
        await self._slots.acquire()
        try:
            self._raise_failures()
            if self._upload_id is None:
                with unavailable_on_failure():
                    created = await self._client.create_multipart_upload(
                        Bucket=self._bucket, Key=self._key
                    )
                self._upload_id = created["UploadId"]
        except BaseException:
            self._slots.release()
            raise
        number = len(self._sending) + 1
        self._sending.append(asyncio.create_task(self._upload_part(number, part)))

    async def _upload_part(self, number: int, part: PartBody) -> None:
        assert self._upload_id is not None
        try:
            with unavailable_on_failure():
                sent = await self._client.upload_part(
                    Bucket=self._bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    PartNumber=number,
                    Body=cast("IO[bytes]", part),  # a file to botocore: see PartBody
                )
            self._parts.append({"ETag": sent["ETag"], "PartNumber": number})
        finally:
            self._slots.release()

    def _raise_failures(self) -> None:
        for task in self._sending:
            if task.done() and not task.cancelled() and task.exception() is not None:
                task.result()

    async def commit(self) -> Blob:
        """Completes the upload; on any failure nothing is left behind."""
        if self._closed:
            raise RuntimeError("the writer is closed")
        try:
            if self._upload_id is None:
                with unavailable_on_failure():
                    await self._client.put_object(
                        Bucket=self._bucket,
                        Key=self._key,
                        Body=cast("IO[bytes]", self._take_part()),
                    )
            else:
                if len(self._part):
                    await self._send(self._take_part())
                await asyncio.gather(*self._sending)
                self._parts.sort(key=lambda p: p["PartNumber"])
                with unavailable_on_failure():
                    await self._client.complete_multipart_upload(
                        Bucket=self._bucket,
                        Key=self._key,
                        UploadId=self._upload_id,
                        MultipartUpload={"Parts": self._parts},
                    )
        except BaseException:
            await self.abort()
            raise
        self._closed = True
        return Blob(self.uri, self.sha256, self._size)

    async def abort(self) -> None:
        """Drops everything sent so far (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._part = PartBody()
        for task in self._sending:
            task.cancel()
        if self._sending:
            await asyncio.wait(self._sending)  # never raises: their failures are moot now
        if self._upload_id is not None:
            with unavailable_on_failure():
                await self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
                )
