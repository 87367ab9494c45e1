"""RuntimeService: the engines' side of the control plane (Connect, UploadOutput,
FetchInput). Every call carries a run credential (validated by the authorization
interceptor), which speaks for one run only, and only until that run has ended: after the
end, Connect still answers with the outcome for `ENDED_GRACE_SECONDS` (an engine that lost
its stream must learn how its run ended), and nothing else is accepted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc

from flnet import lifecycle
from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.api.runtime.v1 import runtime_service_pb2_grpc as rtg
from flnet.control.blobs import BlobStore
from flnet.control.clock import now_us
from flnet.control.engine_batches import EngineBatch, checked
from flnet.control.runs import EngineSessions
from flnet.control.runs.engine_sessions import closing
from flnet.control.services.artifact_service import (
    check_sha256,
    receive_blob,
    record_blob,
    stream_blob,
)
from flnet.control.sessions import Session
from flnet.control.store import RunRow
from flnet.errors import (
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from flnet.server.auth import Reason, require_principal
from flnet.server.auth.audit import note_resource
from flnet.server.decoding import MalformedRequest
from flnet.server.streams import opening

log = logging.getLogger(__name__)
HELLO_TIMEOUT = 30.0
# Most batches stored in one transaction.
MAX_GROUP_COMMIT = 16
# How long after its run ended a credential may still Connect (to learn the outcome).
ENDED_GRACE_SECONDS = 300.0


class RuntimeService(rtg.RuntimeServiceServicer):
    def __init__(self, engines: EngineSessions, blobs: BlobStore) -> None:
        self.engines = engines
        self.blobs = blobs

    async def _authorize(self, run_name: str, *, ended_grace: float = 0.0) -> RunRow:
        """The run the caller's credential speaks for, which must be `run_name` and must
        not have ended more than `ended_grace` seconds ago."""
        note_resource(run_name)
        if require_principal().claim("run_id") != run_name:
            raise PermissionDenied("the run credential does not belong to this run")
        row = await self.engines.run_of(run_name)
        if row.end_us is not None and now_us() - row.end_us > ended_grace * 1e6:
            raise Unauthenticated(
                "the run credential expired: its run has ended", Reason.TOKEN_EXPIRED
            )
        return row

    async def Connect(
        self,
        request_iterator: AsyncIterator[rt.ConnectRequest],
        context: grpc.aio.ServicerContext[rt.ConnectRequest, rt.ConnectResponse],
    ) -> AsyncIterator[rt.ConnectResponse]:
        requests = aiter(request_iterator)
        first = await opening(requests, "hello", "Hello", HELLO_TIMEOUT)
        row = await self._authorize(first.hello.run, ended_grace=ENDED_GRACE_SECONDS)
        session = await self.engines.connect(row)
        log.info("the engine of %s connected (batches stored: %d)", row.name, row.last_batch)
        reader = asyncio.create_task(self._read(requests, row, session))
        try:
            while (message := await session.outbox.get()) is not None:
                yield message
            # A malformed or invalid message ended the session: the engine learns why.
            if reader.done() and not reader.cancelled() and (error := reader.result()):
                raise error
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self.engines.disconnect(session)

    async def _read(
        self, requests: AsyncIterator[rt.ConnectRequest], row: RunRow, session: Session
    ) -> InvalidArgument | None:
        """Reads the engine's messages. Batches go to an ingester that stores whatever has
        queued up in one transaction (group commit), so a busy run costs few commits.
        Returns the error of a message that could not be decoded or used."""
        # Bounded: a fast engine is pushed back by HTTP/2 flow control, not buffered here.
        batches: asyncio.Queue[EngineBatch | None] = asyncio.Queue(maxsize=2 * MAX_GROUP_COMMIT)
        ingester = asyncio.create_task(self._ingest(batches, row, session))
        try:
            async for msg in requests:
                which = msg.WhichOneof("message")
                if which == "batch":
                    if not await _offer(batches, checked(msg.batch), ingester):
                        break
                elif which == "heartbeat":
                    self.engines.heard(row.id)
                elif which == "command_result":
                    session.resolve(msg.command_result)
            await _offer(batches, None, ingester)
            await ingester
        except asyncio.CancelledError:
            raise
        except InvalidArgument as e:
            if not isinstance(e, MalformedRequest):  # (that one is logged where decoded)
                log.warning("the engine of %s sent an invalid batch: %s", row.name, e.message)
            return e
        except Exception:
            log.exception("engine session of %s failed; the engine will reconnect", row.name)
        finally:
            ingester.cancel()
            session.close()
        return None

    async def _ingest(
        self, batches: asyncio.Queue[EngineBatch | None], row: RunRow, session: Session
    ) -> None:
        while (first := await batches.get()) is not None:
            group = [first]
            while len(group) < MAX_GROUP_COMMIT and not batches.empty():
                nxt = batches.get_nowait()
                if nxt is None:
                    batches.put_nowait(None)  # seen again by the outer loop
                    break
                group.append(nxt)
            ack = await self.engines.ingest(row, session, group)
            session.send(rt.ConnectResponse(ack=ack))
            if lifecycle.is_terminal(ack.state):
                session.close(closing(ack.state, "the run has ended"))
                return

    async def UploadOutput(
        self,
        request_iterator: AsyncIterator[rt.UploadOutputRequest],
        context: grpc.aio.ServicerContext[rt.UploadOutputRequest, rt.UploadOutputResponse],
    ) -> rt.UploadOutputResponse:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or not first.HasField("metadata"):
            raise InvalidArgument(
                "the first message must carry metadata",
                violations=[("metadata", "required in the first message")],
            )
        meta = first.metadata
        if meta.size_bytes < 0:
            raise InvalidArgument.field("metadata.size_bytes", "must not be negative")
        row = await self._authorize(meta.run)
        media_type, limit = await self.engines.output_accepted(row, meta)
        check_sha256(meta.sha256, "metadata.sha256")

        async def chunks() -> AsyncIterator[bytes]:
            async for msg in requests:
                yield msg.chunk

        blob = await receive_blob(
            self.blobs.writer(),
            chunks(),
            limit,
            meta.sha256,
            meta.size_bytes if meta.sha256 else -1,
        )
        artifact = await record_blob(
            self.blobs,
            blob,
            self.engines.record_output(
                row, meta.name, media_type, blob.sha256, blob.size, blob.uri
            ),
        )
        return rt.UploadOutputResponse(
            artifact=artifact.name, sha256=blob.sha256, size_bytes=blob.size
        )

    async def FetchInput(
        self,
        request: rt.FetchInputRequest,
        context: grpc.aio.ServicerContext[rt.FetchInputRequest, rt.FetchInputResponse],
    ) -> AsyncIterator[rt.FetchInputResponse]:
        row = await self._authorize(request.run)
        artifact = await self.engines.input_of(row, request.name)
        async for msg in stream_blob(self.blobs, artifact, request.offset):
            yield rt.FetchInputResponse(offset=msg.offset, data=msg.data)


async def _offer(
    queue: asyncio.Queue[EngineBatch | None], item: EngineBatch | None, consumer: asyncio.Task[None]
) -> bool:
    """Queues `item`, waiting for room; False when the consumer ended instead."""
    if consumer.done():
        return False
    if not queue.full():
        queue.put_nowait(item)
        return True
    put = asyncio.ensure_future(queue.put(item))
    done, _ = await asyncio.wait({put, consumer}, return_when=asyncio.FIRST_COMPLETED)
    if put in done:
        return True
    put.cancel()
    return False
