"""What a failed call's status details say (`grpc-status-details-bin`: a google.rpc.Status),
read without googleapis-common-protos, which tool images do not carry: whether the server
answered with a considered error (an ErrorInfo) and whether it asked to be called again
later (a RetryInfo, and its delay)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
from google.protobuf import duration_pb2

DETAILS_KEY = "grpc-status-details-bin"
_ERROR_INFO = "google.rpc.ErrorInfo"
_RETRY_INFO = "google.rpc.RetryInfo"


@dataclass(frozen=True)
class StatusDetails:
    error_info: bool = False  # the server's own answer, not the transport's
    retry_delay: float | None = None  # RetryInfo: the server says a later call may succeed


def status_details(exc: grpc.aio.AioRpcError) -> StatusDetails:
    raw = next((v for k, v in exc.trailing_metadata() or () if k == DETAILS_KEY), None)
    if not isinstance(raw, bytes):
        return StatusDetails()
    error_info, delay = False, None
    try:
        for number, value in _fields(raw):
            if number != 3 or not isinstance(value, bytes):  # Status.details: repeated Any
                continue
            fields = dict(_fields(value))
            type_url, packed = fields.get(1, b""), fields.get(2, b"")
            if not isinstance(type_url, bytes) or not isinstance(packed, bytes):
                continue
            kind = type_url.decode(errors="replace").rsplit("/", 1)[-1]
            if kind == _ERROR_INFO:
                error_info = True
            elif kind == _RETRY_INFO:
                retry = dict(_fields(packed)).get(1, b"")  # RetryInfo.retry_delay
                if isinstance(retry, bytes):
                    delay = duration_pb2.Duration.FromString(retry).ToNanoseconds() / 1e9
    except (ValueError, IndexError):
        return StatusDetails()  # not a Status: read as no details
    return StatusDetails(error_info, delay)


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message's wire format: varints as int,
    length-delimited fields as bytes (fixed-width ones are skipped)."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
            yield number, value
        elif wire == 2:
            size, i = _varint(data, i)
            if i + size > len(data):
                raise ValueError("truncated field")
            yield number, data[i : i + size]
            i += size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire}")


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
