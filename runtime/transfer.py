"""Inputs in, outputs out, in CHUNK_BYTES pieces and never whole in memory.

`stage_input` fetches one input with FetchInput into `<input dir>/<name>` (resuming at the byte
offset after a broken stream) and checks its size and sha256 against the RunSpec. An input that
is already there with the right digest (e.g. mounted read-only by the orchestrator) is used as
it is. `upload_output` announces an output's sha256 and size, then streams it from disk with
UploadOutput; the control plane verifies both.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import typing
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import grpc

from flnet.api.runtime.v1 import runtime_service_pb2 as rt
from flnet.channels import CHUNK_BYTES

from .backoff import Backoff, retry_after
from .context import check_io_name

log = logging.getLogger(__name__)

Metadata = Sequence[tuple[str, str]]
T = TypeVar("T")


class TransferError(Exception):
    """A transfer failed for good. `retryable` is True when the control plane stayed
    unreachable (the platform's fault), False when it refused the data (the data's fault)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def file_digest_sync(path: Path) -> tuple[str, int]:
    """(sha256 hex, size) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


async def blocking(executor: Executor | None, function: Callable[..., T], *args: Any) -> T:
    """Runs a blocking file operation on `executor` (the engine's single I/O thread)."""
    return await asyncio.get_running_loop().run_in_executor(
        executor, functools.partial(function, *args)
    )


async def file_digest(path: Path, executor: Executor | None = None) -> tuple[str, int]:
    return await blocking(executor, file_digest_sync, path)


async def stage_input(
    stub: Any,
    *,
    run: str,
    ref: rt.InputRef,
    directory: Path,
    metadata: Callable[[], Metadata],
    backoff: Backoff,
    executor: Executor | None = None,
) -> Path:
    """Fetches `ref` into `directory/<name>` and verifies it; returns the path."""
    name = check_io_name(ref.name)
    dest = Path(directory) / name
    expected_sha = ref.sha256.lower()
    if dest.is_file():
        sha, size = await file_digest(dest, executor)
        if sha == expected_sha and size == ref.size_bytes:
            return dest
        log.info("input %s exists but differs from the run's; fetching it again", name)
    await blocking(executor, functools.partial(Path(directory).mkdir, parents=True, exist_ok=True))
    part = Path(directory) / f".{name}.part"
    digest = hashlib.sha256()
    offset = 0
    backoff.reset()
    out = await blocking(executor, _open_binary, part, "wb")
    with out:
        while True:
            try:
                call = stub.FetchInput(
                    rt.FetchInputRequest(run=run, name=name, offset=offset), metadata=metadata()
                )
                async for chunk in call:
                    if chunk.offset != offset:
                        raise TransferError(
                            f"input {name}: chunk at offset {chunk.offset}, expected {offset}"
                        )
                    data = chunk.data
                    offset += len(data)
                    if offset > ref.size_bytes:
                        raise TransferError(
                            f"input {name} is larger than its declared {ref.size_bytes} bytes"
                        )
                    digest.update(data)
                    await blocking(executor, out.write, data)
                break
            except grpc.aio.AioRpcError as exc:
                wait = retry_after(exc)
                if wait is None:
                    _unlink(part)
                    raise TransferError(f"input {name}: {_describe(exc)}") from exc
                delay = backoff.next_delay()
                if delay is None:
                    _unlink(part)
                    raise TransferError(
                        f"input {name}: control plane unreachable ({_describe(exc)})",
                        retryable=True,
                    ) from exc
                log.warning(
                    "fetching input %s broke at byte %d (%s); resuming",
                    name,
                    offset,
                    _describe(exc),
                )
                await asyncio.sleep(max(delay, wait))
            except BaseException:
                _unlink(part)
                raise
    sha = digest.hexdigest()
    if offset != ref.size_bytes or sha != expected_sha:
        _unlink(part)
        raise TransferError(
            f"input {name} failed verification: got {offset} bytes sha256 {sha}, "
            f"expected {ref.size_bytes} bytes sha256 {expected_sha}"
        )
    with contextlib.suppress(OSError):
        os.chmod(part, 0o444)
    os.replace(part, dest)
    return dest


async def upload_output(
    stub: Any,
    *,
    run: str,
    name: str,
    path: Path,
    metadata: Callable[[], Metadata],
    backoff: Backoff,
    executor: Executor | None = None,
) -> rt.UploadOutputResponse:
    """Uploads `path` as output `name`; retries from the start while the control plane is
    unreachable. Raises TransferError when it refuses the output."""
    check_io_name(name)
    sha, size = await file_digest(path, executor)
    backoff.reset()
    while True:
        try:
            response: rt.UploadOutputResponse = await stub.UploadOutput(
                _upload_requests(run, name, sha, size, path, executor), metadata=metadata()
            )
            return response
        except grpc.aio.AioRpcError as exc:
            wait = retry_after(exc)
            if wait is None:
                raise TransferError(f"output {name} refused: {_describe(exc)}") from exc
            delay = backoff.next_delay()
            if delay is None:
                raise TransferError(
                    f"output {name}: control plane unreachable ({_describe(exc)})",
                    retryable=True,
                ) from exc
            log.warning("uploading output %s failed (%s); retrying", name, _describe(exc))
            await asyncio.sleep(max(delay, wait))


async def _upload_requests(
    run: str, name: str, sha: str, size: int, path: Path, executor: Executor | None
) -> AsyncIterator[rt.UploadOutputRequest]:
    yield rt.UploadOutputRequest(
        metadata=rt.OutputMetadata(run=run, name=name, sha256=sha, size_bytes=size)
    )
    f = await blocking(executor, _open_binary, path, "rb")
    with f:
        while chunk := await blocking(executor, f.read, CHUNK_BYTES):
            yield rt.UploadOutputRequest(chunk=chunk)


def _open_binary(path: Path, mode: str) -> BinaryIO:
    return typing.cast(BinaryIO, open(path, mode))


def _describe(exc: grpc.aio.AioRpcError) -> str:
    code = exc.code()
    return f"{getattr(code, 'name', code)}: {exc.details() or ''}".rstrip(": ")


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
