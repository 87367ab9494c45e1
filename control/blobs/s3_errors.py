"""How S3 failures surface: an unreachable or overloaded S3 is UNAVAILABLE (worth a retry);
anything else (access denied, a missing bucket) is a fault of the deployment and stays an
internal error, logged with its traceback by the error-mapping interceptor."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from flnet.errors import Unavailable

log = logging.getLogger(__name__)

_TRANSIENT = (
    ConnectionError,
    ConnectionClosedError,
    ReadTimeoutError,
    ResponseStreamingError,
    IncompleteReadError,
)


def error_code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def is_transient(e: BaseException) -> bool:
    if isinstance(e, _TRANSIENT):
        return True
    if isinstance(e, ClientError):
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        return status >= 500 or error_code(e) in ("SlowDown", "RequestTimeout")
    return False


@contextlib.contextmanager
def unavailable_on_failure() -> Iterator[None]:
    try:
        yield
    except (*_TRANSIENT, ClientError) as e:
        if not is_transient(e):
            raise
        log.warning("artifact store: %s", e)
        raise Unavailable("the artifact store is unavailable; retry later") from e
