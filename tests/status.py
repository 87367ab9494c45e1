"""Reading how calls ended: google.rpc error details off a failed call, status codes."""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2


def _status(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    raise AssertionError(f"no status details on {err.code()}: {err.details()}")


def reason(err: grpc.aio.AioRpcError) -> str:
    for detail in _status(err).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    raise AssertionError("no ErrorInfo")


def retry_delay(err: grpc.aio.AioRpcError) -> float:
    """The RetryInfo delay, in seconds."""
    for detail in _status(err).details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.ToNanoseconds() / 1e9)
    raise AssertionError("no RetryInfo")


def violations(err: grpc.aio.AioRpcError) -> list[str]:
    """Field paths of the BadRequest field violations."""
    for detail in _status(err).details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            return [v.field for v in bad.field_violations]
    return []


async def drain(stream: AsyncIterable[Any]) -> None:
    """Reads a response stream to its end (raising its error, if any)."""
    async for _ in stream:
        pass


async def code_of(call: Awaitable[Any]) -> grpc.StatusCode:
    """The status a call ends with."""
    try:
        await call
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK
