"""Which failed calls the engine repeats: only what the status and its RetryInfo say may
succeed later (runtime.backoff.retry_after)."""

from __future__ import annotations

import grpc
import pytest

from flnet.errors import FlnetError, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from flnet.runtime.backoff import retry_after
from flnet.server.interceptors import status_details


def failure(code: grpc.StatusCode, details: bytes | None = None) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata()
    if details is not None:
        trailing.add("grpc-status-details-bin", details)
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, "failed")


def answered(error: FlnetError) -> grpc.aio.AioRpcError:
    """The failure a client sees when the control plane answers with `error`."""
    return failure(error.code, status_details(error, "flnet.control"))


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    ],
)
def test_a_broken_transport_is_retried(code: grpc.StatusCode) -> None:
    assert retry_after(failure(code)) == 0.0


def test_an_output_over_its_limit_is_final() -> None:
    too_large = ResourceExhausted("output 'result' of 9 bytes exceeds its limit of 1")
    assert retry_after(answered(too_large)) is None


def test_a_resource_exhausted_without_an_answer_is_final() -> None:
    """gRPC's own message-size refusal carries no details: repeating it cannot help."""
    assert retry_after(failure(grpc.StatusCode.RESOURCE_EXHAUSTED)) is None


def test_answers_are_final_unless_they_ask_for_a_retry() -> None:
    assert retry_after(answered(InvalidArgument("bad"))) is None
    assert retry_after(answered(NotFound("gone"))) is None
    assert retry_after(answered(Unavailable("the artifact store is unavailable"))) == 1.0
    throttled = ResourceExhausted("tenant over its rate")
    throttled.retry_after = 2.5
    assert retry_after(answered(throttled)) == 2.5


def test_details_that_are_not_a_status_read_as_none() -> None:
    assert retry_after(failure(grpc.StatusCode.UNAVAILABLE, b"\xff\xff\xff")) == 0.0
    assert retry_after(failure(grpc.StatusCode.INVALID_ARGUMENT, b"\x1a\x05ab")) is None
