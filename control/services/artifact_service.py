"""ArtifactService: uploads (streamed and resumable chunked) and streamed downloads."""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing

import grpc

from flnet.api.control.v1 import artifact_pb2 as ap
from flnet.api.control.v1 import artifact_service_pb2 as asv
from flnet.api.control.v1 import artifact_service_pb2_grpc as asg
from flnet.control import names, pagination
from flnet.control.blobs import Blob, BlobMissing, BlobStore, BlobWriter
from flnet.control.clock import now_us, timestamp
from flnet.control.media_types import media_type_problem
from flnet.control.reasons import Reason
from flnet.control.settings import ControlSettings
from flnet.control.store import Store, Upload
from flnet.errors import (
    DataLoss,
    FailedPrecondition,
    FlnetError,
    InvalidArgument,
    OutOfRange,
    ResourceExhausted,
)
from flnet.server.auth.audit import note_resource

log = logging.getLogger(__name__)
SHA256 = re.compile(r"[0-9a-f]{64}\Z")  # \Z: "$" would accept a trailing newline
MAX_CHUNK = 4 * 1024 * 1024


def check_sha256(value: str, field: str) -> None:
    if value and not SHA256.match(value):
        raise InvalidArgument(
            f"{field} must be 64 lower-case hex digits",
            violations=[(field, "not a sha256 hex digest")],
        )


def check_filename(value: str, field: str) -> None:
    """A file's name, as shown and as downloads name it: no path, no control characters (a
    CR/LF would split a header that carries it)."""
    if any(c < " " or c == "\x7f" for c in value) or "/" in value or "\\" in value:
        problem = "a file name: no '/', '\\' or control characters"
        raise InvalidArgument(f"{field}: {problem}", violations=[(field, problem)])


def check_media_type(value: str, field: str) -> None:
    if problem := media_type_problem(value):
        raise InvalidArgument(f"{field}: {problem}", violations=[(field, problem)])


async def receive_blob(
    writer: BlobWriter,
    chunks: AsyncIterator[bytes],
    limit: int,
    expected_sha256: str,
    expected_size: int = -1,
) -> Blob:
    """Streams chunks into `writer`, enforcing `limit` and the expected digest and size;
    the blob becomes visible only when everything matched."""
    committed = False
    try:
        async for data in chunks:
            if writer.size + len(data) > limit:
                raise ResourceExhausted(
                    f"larger than the limit of {limit} bytes", reason=Reason.TOO_LARGE
                )
            await writer.write(data)
        if expected_size >= 0 and writer.size != expected_size:
            raise InvalidArgument(
                f"received {writer.size} bytes, announced {expected_size}",
                violations=[("metadata.size_bytes", "does not match the bytes")],
            )
        if expected_sha256 and writer.sha256 != expected_sha256:
            raise InvalidArgument(
                f"sha256 mismatch: received {writer.sha256}, expected {expected_sha256}",
                reason=Reason.CHECKSUM_MISMATCH,
                violations=[("metadata.sha256", "does not match")],
            )
        blob = await writer.commit()
        committed = True
        return blob
    finally:
        if not committed:
            await writer.abort()


async def record_blob(blobs: BlobStore, blob: Blob, record: Awaitable[ap.Artifact]) -> ap.Artifact:
    """The artifact `record` stores for `blob`. A blob that no artifact points to in the
    end (its content was recorded before, or the record was refused) is discarded; after
    an unexpected failure it is kept, since the record may have been stored after all."""
    try:
        artifact = await record
    except FlnetError:
        await blobs.discard(blob)
        raise
    if artifact.storage_uri != blob.uri:
        await blobs.discard(blob)
    return artifact


class ArtifactService(asg.ArtifactServiceServicer):
    def __init__(self, store: Store, blobs: BlobStore, settings: ControlSettings) -> None:
        self.store = store
        self.blobs = blobs
        self.settings = settings

    async def _record_input(
        self, tenant: str, blob: Blob, media_type: str, filename: str
    ) -> ap.Artifact:
        """Records an uploaded input (or the one with the same content already there)."""
        return await record_blob(
            self.blobs,
            blob,
            self.store.artifacts.add_input_artifact(
                artifact_id=uuid.uuid4().hex[:20],
                tenant=tenant,
                sha256=blob.sha256,
                size=blob.size,
                media_type=media_type or "application/octet-stream",
                filename=filename or blob.sha256[:12],
                uri=blob.uri,
            ),
        )

    async def UploadInput(
        self,
        request_iterator: AsyncIterator[asv.UploadInputRequest],
        context: grpc.aio.ServicerContext[asv.UploadInputRequest, asv.UploadInputResponse],
    ) -> asv.UploadInputResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("metadata"):
            raise InvalidArgument(
                "the first message must carry metadata",
                violations=[("metadata", "required in the first message")],
            )
        meta = first.metadata
        note_resource(meta.parent)
        tenant = names.parse_tenant(meta.parent, "metadata.parent")
        check_sha256(meta.sha256, "metadata.sha256")
        check_media_type(meta.media_type, "metadata.media_type")
        check_filename(meta.filename, "metadata.filename")

        async def chunks() -> AsyncIterator[bytes]:
            async for msg in request_iterator:
                if msg.HasField("metadata"):
                    raise InvalidArgument(
                        "metadata may only come first", violations=[("metadata", "sent twice")]
                    )
                yield msg.chunk

        blob = await receive_blob(
            self.blobs.writer(), chunks(), self.settings.max_upload_bytes, meta.sha256
        )
        artifact = await self._record_input(tenant, blob, meta.media_type, meta.filename)
        return asv.UploadInputResponse(artifact=artifact)

    async def StartUpload(
        self,
        request: asv.StartUploadRequest,
        context: grpc.aio.ServicerContext[asv.StartUploadRequest, asv.StartUploadResponse],
    ) -> asv.StartUploadResponse:
        tenant = names.parse_tenant(request.parent)
        check_sha256(request.sha256, "sha256")
        check_media_type(request.media_type, "media_type")
        check_filename(request.filename, "filename")
        if request.total_size < 0:
            raise InvalidArgument(
                "total_size must not be negative",
                violations=[("total_size", "must not be negative")],
            )
        if request.total_size > self.settings.max_upload_bytes:
            raise ResourceExhausted(
                f"total_size exceeds the upload limit of {self.settings.max_upload_bytes} bytes",
                reason=Reason.TOO_LARGE,
            )
        upload = Upload(
            id=uuid.uuid4().hex[:20],
            tenant=tenant,
            filename=request.filename,
            media_type=request.media_type,
            total_size=request.total_size,
            committed_size=0,
            sha256=request.sha256,
            finished=False,
            expire_us=now_us() + int(self.settings.upload_ttl * 1e6),
        )
        await self.blobs.start_partial(upload.id)
        await self.store.artifacts.create_upload(upload)
        return asv.StartUploadResponse(upload=_upload_proto(upload))

    async def UploadChunk(
        self,
        request: asv.UploadChunkRequest,
        context: grpc.aio.ServicerContext[asv.UploadChunkRequest, asv.UploadChunkResponse],
    ) -> asv.UploadChunkResponse:
        upload = await self.store.artifacts.get_upload(*names.parse_upload(request.name))
        if upload.finished:
            raise FailedPrecondition("the upload is already finished")
        if len(request.data) > MAX_CHUNK:
            raise InvalidArgument(
                f"a chunk holds at most {MAX_CHUNK} bytes", violations=[("data", "too large")]
            )
        end = request.offset + len(request.data)
        if request.offset < 0 or request.offset > upload.committed_size:
            raise FailedPrecondition(
                f"offset {request.offset} is not the committed size {upload.committed_size}; "
                "resume from there",
                metadata={"committed_size": str(upload.committed_size)},
            )
        if end > upload.total_size:
            raise ResourceExhausted(
                f"chunk ends at {end}, past the announced total size {upload.total_size}",
                reason=Reason.TOO_LARGE,
            )
        if end > upload.committed_size:  # a chunk fully committed already is a harmless retry
            tail = request.data[upload.committed_size - request.offset :]
            await self.blobs.append_partial(upload.id, upload.committed_size, tail)
            upload.committed_size = end
            await self.store.artifacts.set_upload_progress(upload.id, end)
        return asv.UploadChunkResponse(upload=_upload_proto(upload))

    async def GetUpload(
        self,
        request: asv.GetUploadRequest,
        context: grpc.aio.ServicerContext[asv.GetUploadRequest, asv.GetUploadResponse],
    ) -> asv.GetUploadResponse:
        upload = await self.store.artifacts.get_upload(*names.parse_upload(request.name))
        return asv.GetUploadResponse(upload=_upload_proto(upload))

    async def FinishUpload(
        self,
        request: asv.FinishUploadRequest,
        context: grpc.aio.ServicerContext[asv.FinishUploadRequest, asv.FinishUploadResponse],
    ) -> asv.FinishUploadResponse:
        tenant, upload_id = names.parse_upload(request.name)
        upload = await self.store.artifacts.get_upload(tenant, upload_id)
        if upload.finished:
            raise FailedPrecondition("the upload is already finished")
        if upload.committed_size != upload.total_size:
            raise FailedPrecondition(
                f"only {upload.committed_size} of {upload.total_size} bytes were received",
                metadata={"committed_size": str(upload.committed_size)},
            )
        try:
            blob = await self.blobs.commit_partial(upload.id, upload.committed_size)
        except BlobMissing as e:
            raise DataLoss(f"the received bytes of {request.name} are missing: {e}") from None
        await self.store.artifacts.set_upload_progress(upload.id, blob.size, finished=True)
        try:
            await self.blobs.drop_partial(upload.id)
        except Exception:  # leftovers only cost space
            log.warning("could not drop the pieces of upload %s", upload.id, exc_info=True)
        if upload.sha256 and blob.sha256 != upload.sha256:
            await self.blobs.discard(blob)
            raise InvalidArgument(
                f"sha256 mismatch: received {blob.sha256}, expected {upload.sha256}",
                reason=Reason.CHECKSUM_MISMATCH,
                violations=[("sha256", "does not match the bytes")],
            )
        artifact = await self._record_input(tenant, blob, upload.media_type, upload.filename)
        return asv.FinishUploadResponse(artifact=artifact)

    async def ListArtifacts(
        self,
        request: asv.ListArtifactsRequest,
        context: grpc.aio.ServicerContext[asv.ListArtifactsRequest, asv.ListArtifactsResponse],
    ) -> asv.ListArtifactsResponse:
        run_id: str | None = None
        if names.RUN_RE.match(request.parent):
            tenant, run_id = names.parse_run(request.parent, "parent")
            await self.store.runs.get_run(tenant, run_id)
        else:
            tenant = names.parse_tenant(request.parent)
        size = pagination.page_size(request.page_size)
        query = {"parent": request.parent}
        after = pagination.decode(request.page_token, query)
        items = await self.store.artifacts.list_artifacts(
            tenant,
            run_id=run_id,
            after=(int(after[0]), str(after[1])) if after else None,
            limit=size + 1,
        )
        token = ""
        if len(items) > size:
            items = items[:size]
            last = items[-1]
            token = pagination.encode(
                [last.create_time.ToMicroseconds(), last.name.rsplit("/", 1)[1]], query
            )
        return asv.ListArtifactsResponse(artifacts=items, next_page_token=token)

    async def DownloadArtifact(
        self,
        request: asv.DownloadArtifactRequest,
        context: grpc.aio.ServicerContext[
            asv.DownloadArtifactRequest, asv.DownloadArtifactResponse
        ],
    ) -> AsyncIterator[asv.DownloadArtifactResponse]:
        artifact = await self.store.artifacts.get_artifact(*names.parse_artifact(request.name))
        async for message in stream_blob(self.blobs, artifact, request.offset):
            yield message


async def stream_blob(
    blobs: BlobStore, artifact: ap.Artifact, offset: int
) -> AsyncIterator[asv.DownloadArtifactResponse]:
    """An artifact's bytes from `offset`, metadata first; a whole-file read is re-verified
    against the recorded sha256 on the way, so corruption ends in DATA_LOSS."""
    if offset < 0 or offset > artifact.size_bytes:
        raise OutOfRange(f"offset {offset} is outside 0..{artifact.size_bytes}")
    blob = Blob(artifact.storage_uri, artifact.sha256, artifact.size_bytes)
    h = hashlib.sha256() if offset == 0 else None
    position = offset
    first = True
    async with aclosing(blobs.read(blob, offset)) as chunks:
        try:
            async for data in chunks:
                if h is not None:
                    h.update(data)
                msg = asv.DownloadArtifactResponse(offset=position, data=data)
                if first:
                    msg.artifact.CopyFrom(artifact)
                    first = False
                position += len(data)
                yield msg
        except BlobMissing:
            raise DataLoss(
                f"the bytes of {artifact.name} are missing from the artifact store"
            ) from None
    if first:
        yield asv.DownloadArtifactResponse(artifact=artifact, offset=position)
    if h is not None and h.hexdigest() != artifact.sha256:
        raise DataLoss(f"the stored bytes of {artifact.name} no longer match their sha256")


def _upload_proto(u: Upload) -> ap.Upload:
    return ap.Upload(
        name=names.upload_name(u.tenant, u.id),
        committed_size=u.committed_size,
        total_size=u.total_size,
        filename=u.filename,
        media_type=u.media_type,
        expire_time=timestamp(u.expire_us),
    )
